"""The sampling loop with the grammar on the host: any model, any device, every option.

Per step the grammar states (numba, on the CPU) give each row's legal tokens and
:class:`~wavar.sample.steps.StepInputs`, region completion and LL initialisation narrow the
legal tokens, the model's step gives logits (over the span of the cache the rows have filled,
rounded up to a block), :func:`~wavar.sample.draw.draw` picks the tokens and the states
consume them. Rows that finish (end of sequence, token budget or bit-plane) ride along until
half of the batch has finished; then the cache, the states and everything per row are
compacted to the live rows.

A forced prefix costs no steps where the rows share it: the grammar takes the first
``min(prefix lengths)`` forced tokens of every row at once, and one prefill runs the model over
them and gives the logits of the first free token; the rest of longer prefixes is forced step
by step. (Staged generations, one plane per call, force everything before the plane.)
"""

from __future__ import annotations

import numpy as np
import torch

from wavar.codec import BatchScanState
from wavar.model.transformer import KVCache
from wavar.sample.draw import ForcedPrefix, PlaneSchedule, draw
from wavar.sample.forcing import Forcing
from wavar.sample.options import SamplingOptions
from wavar.sample.steps import StepInputs, TorchStep, conditions, prefill

# attention reads the filled part of the cache rounded up to this many positions: early
# steps cost less than a whole cache, and few distinct shapes arise
SPAN_BLOCK = 256


def host_logits(model, step: TorchStep, cache, labels: torch.Tensor, m_tilde: torch.Tensor,
                prev: torch.Tensor | None, inputs: StepInputs, t: int) -> torch.Tensor:
    """Raw logits of step ``t`` of a host-stepped loop: the prefill at t = 0, else the model's
    step over the span of the cache the rows have filled (rounded up to ``SPAN_BLOCK``)."""
    if t == 0:
        return prefill(model, cache, labels, m_tilde, inputs)
    span = min(cache.k.size(3), -(-(t + 2) // SPAN_BLOCK) * SPAN_BLOCK)
    return step(KVCache(cache.k[:, :, :, :span], cache.v[:, :, :, :span]), prev, inputs,
                m_tilde, t)


def cpu_loop(model, options: SamplingOptions, states: BatchScanState, labels: np.ndarray,
             m_tilde: np.ndarray, limit: int, gen: torch.Generator,
             forced: ForcedPrefix | None = None,
             forcing: Forcing | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample up to ``limit`` tokens per row: (tokens (n, limit) uint8, lengths (n,))."""
    device = next(model.parameters()).device
    n = len(labels)
    rows = np.arange(n)  # original index of each batch row
    out = np.zeros((n, limit), np.uint8)
    length = np.zeros(n, np.int64)
    guided = options.guided
    lab, mt = conditions(model, labels, m_tilde, guided, device)
    cache = model.new_cache(len(lab), limit, device=device)
    step = TorchStep(model)
    context = bool(model.config.decoder_state)
    schedule = PlaneSchedule.of(options, device)
    prev = None
    t0, known = 0, None
    if forced is not None:
        t0, known = _take_common_prefix(states, forced, options, context)
        out[:, :t0] = forced.tokens[:, :t0].cpu().numpy()
        length[:] = t0
    for t in range(t0, limit):
        # the grammar: who is still generating, and what each row's next slot is
        inputs = StepInputs(*states.slots(), states.context() if context else None)
        stop = states.done.copy()
        if options.max_plane is not None:
            stop |= inputs.slots[:, 0] >= options.max_plane
        live_idx = np.flatnonzero(~stop)
        if live_idx.size == 0:
            break
        if live_idx.size <= len(stop) // 2 and t > t0:  # compact: finished rows stop costing
            keep = torch.as_tensor(live_idx, device=device)
            if forced is not None:
                forced = forced.rows(keep)
            if guided:
                keep = torch.cat([keep, keep + len(stop)])
            cache.k, cache.v = cache.k[:, keep], cache.v[:, keep]
            lab, mt, prev = lab[keep], mt[keep], prev[keep]
            states.mems = states.mems[live_idx]
            rows = rows[live_idx]
            if forcing is not None:
                forcing = forcing.rows(live_idx)
            inputs = inputs.map(lambda a, i=live_idx: a[i])
            stop = stop[live_idx]
        live = ~stop
        for a in inputs:  # finished rows ride along until compaction: give them valid inputs
            a[stop] = 0
        legal = states.legal()
        legal[stop] = 1
        if forcing is not None:
            legal = forcing.narrow(legal, states, m_tilde[rows])
        inputs = inputs.to(device)
        if guided:
            inputs = inputs.twins()
        if t == t0 and t0 > 0:  # the shared forced prefix, in one pass
            seen = StepInputs(*(np.stack(a, 1) for a in zip(*known, strict=True))).to(device)
            if guided:
                seen = seen.twins()
            prior = forced.tokens[:, :t0]
            logits = prefill(model, cache, lab, mt, StepInputs(*(
                torch.cat([a, b[:, None]], 1) for a, b in zip(seen, inputs, strict=True))),
                torch.cat([prior, prior]) if guided else prior)
        else:
            logits = host_logits(model, step, cache, lab, mt, prev, inputs, t)
        b = len(legal)
        steps = torch.full((b,), t, device=device) if forced is not None else None
        tok = draw(logits, torch.as_tensor(legal, device=device), options, gen, steps, forced,
                   schedule, inputs.slots[:b, 0])
        tok = tok.cpu().numpy().astype(np.int64)
        tok[~live] = -1
        states.push(tok)
        out[rows[live], t] = tok[live]
        length[rows[live]] = t + 1
        prev = torch.as_tensor(np.where(live, tok, 0), device=device)
        if guided:
            prev = torch.cat([prev, prev])
    return out, length


def _take_common_prefix(states: BatchScanState, forced: ForcedPrefix, options: SamplingOptions,
                        context: bool) -> tuple[int, list[StepInputs]]:
    """Push the forced tokens all rows share into the grammar states, up to where a row
    would stop (end of sequence, ``max_plane``); return how many, and each step's inputs."""
    shared = int(forced.lengths.min())
    tokens = forced.tokens[:, :shared].cpu().numpy()
    seen: list[StepInputs] = []
    for t in range(shared):
        inputs = StepInputs(*states.slots(), states.context() if context else None)
        if states.done.any() or (options.max_plane is not None
                                 and (inputs.slots[:, 0] >= options.max_plane).any()):
            break
        seen.append(inputs)
        states.push(tokens[:, t])
    return len(seen), seen

