"""Batched generation with a KV cache, stepping the grammar of every sequence together.

One step: the grammar states give each row's legal mask and slot (numba, on the CPU), the
model turns the previous token + slot into logits (one cached decode step), the logits are
masked, guided and filtered, a token is drawn (or forced), and all states consume their tokens.
Rows that finish (end of sequence, token budget or bit-plane) stop costing compute: on the CPU
the KV cache and states are compacted when half the rows are done; on a GPU the whole step
(grammar kernel included) stays on the device, and with per-row attention a finished row reads
no cache at all while the batch keeps its shape (one CUDA graph for the whole generation).

Conditioning on the generation process:

* ``prefix``: per row, tokens to force first (e.g. the coarse bit-planes of a real image);
* ``region``: a real image and a kept-pixels mask; wherever the scan reaches a node whose
  coefficients all have their support inside the kept region, the real image's symbol is
  forced (if the grammar allows it there), elsewhere the model samples.

The model's config records the codec (``config.codec``): parameters, image shape, class names
and the per-class distribution of m~ seen in training (the sampler's "robust initialisation").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wavar.codec import BatchScanState, Codec, CodedImage, WaveletCodec, codec_from_params, coder
from wavar.sample import filters
from wavar.sample import gpu_grammar as _gpu_grammar


def codec_of(model) -> Codec:
    """The codec a model was trained on (recorded in its config): wavelet or raster."""
    return codec_from_params(model.config.codec)


def image_shape_of(model) -> tuple[int, int, int]:
    shape = list(model.config.codec["image_shape"])
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def class_names(model) -> list[str]:
    """The model's class names (its config's, else "0", "1", ...)."""
    return list(model.config.codec.get("classes") or map(str, range(model.config.num_classes)))


def class_indices(names: Sequence[str], spec: int | str | Sequence[int | str] | None) -> list[int]:
    """Class indices from a class name or index, a list of them, or ``"all"`` / ``None`` (every
    class). Names match case-insensitively; an unknown one raises ``ValueError`` naming the
    classes the model knows."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(len(names)))
    items = [spec] if isinstance(spec, int | str | np.integer) else list(spec)
    lower = [n.lower() for n in names]
    out = []
    for item in items:
        s = str(item).strip()
        if s.isdigit() and int(s) < len(names):
            out.append(int(s))
        elif s.lower() in lower:
            out.append(lower.index(s.lower()))
        else:
            raise ValueError(f"unknown class {item!r}; this model knows "
                             f"{', '.join(f'{i}={n}' for i, n in enumerate(names))}")
    return out


def sample_m_tilde(model, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw m~ for each label from that class's training distribution."""
    info = model.config.codec
    hist = np.asarray(info["m_tilde_hist"], np.float64)
    lo = int(info["m_tilde_min"])
    out = np.empty(len(labels), np.int64)
    for i, y in enumerate(labels):
        row = hist[y] if y < len(hist) else hist.sum(0)  # the null class: all classes
        out[i] = lo + rng.choice(len(row), p=row / row.sum())
    return out


@dataclass
class Region:
    """Region completion: keep the real image where ``keep`` (H, W) is True."""

    image: np.ndarray
    keep: np.ndarray


def kept_coefficients(codec: WaveletCodec, keep: np.ndarray, channels: int) -> np.ndarray:
    """bool (C * M * M,): coefficients whose dyadic support cell lies inside the kept pixels.

    The support of a coefficient at (row, col) of a subband of side s is the M/s x M/s pixel
    cell it sits over in the padded image (exact for Haar; longer filters leak a little past
    it). Padding counts as kept: its content, zero, is known.
    """
    h, w = keep.shape
    geo = codec.geometry(h, w)
    m = geo.side
    padded = np.ones((m, m), bool)
    top, left = (m - h) // 2, (m - w) // 2
    padded[top : top + h, left : left + w] = keep
    out = np.zeros(m * m, bool)
    for p in range(geo.n_coef):
        idx = geo.scan_index[p]
        r, c = divmod(int(idx), m)
        # subband side and position, from the coefficient table
        level, _, y, x = geo.coef_slot[p]
        side = geo.ll_side << max(int(level) - 1, 0)
        cell = m // side
        row, col = int(y * side), int(x * side)
        out[idx] = padded[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell].all()
    return np.tile(out, channels)


def ll_indices(geo, channels: int) -> np.ndarray:
    """Flat indices (channel * M * M + i) of the LL-band coefficients."""
    side, ll = geo.side, geo.ll_side
    one = (np.arange(ll)[:, None] * side + np.arange(ll)[None, :]).reshape(-1)
    return np.concatenate([ch * geo.n_coef + one for ch in range(channels)])


def ll_bank(codec: WaveletCodec, images: np.ndarray, labels: np.ndarray, per_class: int = 64,
            seed: int = 0) -> list[dict]:
    """Per class, the m~ and LL-band coefficients of up to ``per_class`` training images."""
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:3]
    channels = images.shape[3] if images.ndim == 4 else 1
    idx = ll_indices(codec.geometry(h, w), channels)
    bank = []
    for y in range(int(labels.max()) + 1):
        pick = rng.permutation(np.flatnonzero(labels == y))[:per_class]
        coefs = codec.coefficients(images[pick]).reshape(len(pick), -1)
        bank.append({"m_tilde": codec.m_tilde(coefs).tolist(),
                     "ll": coefs[:, idx].round(6).tolist()})
    return bank


def _forcing(geo, coefs: np.ndarray, kept: np.ndarray, channels: int):
    """Arrays the compiled forcing step needs: per-row magnitudes, signs, descendant maxima."""
    mags, negs = np.abs(coefs), coefs < 0
    desc = np.stack([coder._descendant_max(m, channels, geo.n_coef, geo.parent, geo.bottom_up)
                     for m in mags])
    kept_tree = coder.kept_subtrees(kept, channels, geo.n_coef, geo.parent, geo.bottom_up)
    return mags, negs, desc, kept, kept_tree


def _cache_view(cache, length: int):
    from wavar.model.transformer import KVCache

    return KVCache(cache.k[:, :, :, :length], cache.v[:, :, :, :length])


def _attended_span(cache, t: int, block: int) -> int:
    """Cache positions step t attends over: the filled part (prefix + t + 1) rounded up to
    ``block``, so early steps cost less and few distinct spans (CUDA graphs) arise."""
    return min(cache.k.size(3), -(-(t + 2) // block) * block)


@torch.no_grad()
def generate(
    model,
    labels: Sequence[int] | np.ndarray,
    *,
    cfg: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    m_tilde: Sequence[int] | np.ndarray | None = None,
    max_tokens: int | None = None,
    max_plane: int | None = None,
    prefix: Sequence[np.ndarray] | None = None,
    region: Region | None = None,
    ll_init: bool = False,
    cache_block: int = 256,
    gpu_grammar: bool | None = None,
    cuda_graphs: str = "step",
    attention: str = "auto",
    compile_step: bool = False,
) -> list[CodedImage]:
    """Sample one token sequence per label.

    Parameters
    ----------
    model : WaveletGPT
    labels : (B,) class indices (``num_classes`` = unconditional).
    cfg : classifier-free guidance scale (1 = plain conditional, 0 = unconditional).
    temperature, top_k, top_p : logit filters (defaults: plain sampling).
    seed : same seed, same device -> same sequences.
    m_tilde : per-row initial-threshold exponents; default drawn per class from training
        statistics (or taken from ``prefix``/``region`` images).
    max_tokens, max_plane : stop after this many tokens / before this bit-plane (progressive).
    prefix : per row, token ids to force at the start (a real image's coarse planes).
    region : keep part of a real image (see :class:`Region`).
    ll_init : start each row from the LL band and m~ of a training image of its class (the
        paper's "robust initialisation"; the bank is recorded in the model config).
    cache_block : attention reads the filled part of the KV cache rounded up to this many.
    gpu_grammar : step the grammar on the GPU (numba-cuda; the model's step replayed as CUDA
        graphs; no host round trip per token). Default: on a CUDA model, without ``region``
        or ``ll_init`` (those narrow each choice with CPU-side forcing tables).
    cuda_graphs : with the GPU grammar: ``"step"`` replays each whole step (model, filters,
        draw, grammar kernel) as one CUDA graph; ``"model"`` only the model step; ``"off"``
        launches everything eagerly (for comparison and debugging).
    attention : with the GPU grammar: ``"rows"`` gives every row its own cache position, so
        each reads exactly its own prefix and finished rows read nothing (one Triton kernel
        per layer on a GPU; one CUDA graph for the whole generation); ``"fused"`` is the same
        with the rest of the model step and the plain draw in Triton kernels too
        (:class:`wavar.model.kernels.FusedDecodeStep`; models up to 128 wide); ``"span"``
        attends all rows over the shared filled span (PyTorch matmuls; a graph per
        ``cache_block``). ``"auto"``: fused where Triton is available and the model's shapes
        suit it, else rows, else span.
    compile_step : with the GPU grammar: run the model step through ``torch.compile``, which
        fuses its small element-wise kernels (compiles once per batch size: tens of seconds;
        with ``attention="fused"`` there is nothing left to compile).

    Returns
    -------
    list of CodedImage (complete, or prefixes when a budget stopped them).
    """
    device = next(model.parameters()).device
    codec = codec_of(model)
    h, w, c = image_shape_of(model)
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if n == 0:
        return []
    if labels.min() < 0 or labels.max() > model.config.num_classes:
        raise ValueError(f"labels must lie in 0..{model.config.num_classes - 1} "
                         f"({model.config.num_classes} = unconditional)")
    if temperature <= 0:  # before any work (every draw path divides by it)
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(2**62)))

    region_arrays = None
    geo = codec.geometry(h, w) if region is not None or ll_init else None  # (none for raster)
    if region is not None and ll_init:
        raise ValueError("region completion and LL initialisation exclude each other")
    if region is not None:
        coefs = codec.coefficients(region.image[None])
        kept = kept_coefficients(codec, np.asarray(region.keep, bool), c)
        region_arrays = _forcing(geo, np.repeat(coefs.reshape(1, -1), n, 0), kept, c)
        if m_tilde is None:
            m_tilde = np.full(n, codec.m_tilde(coefs)[0])
    elif ll_init:
        # the paper's robust initialisation: each row starts from the LL band (and m~) of a
        # training image of its class, forced where the grammar reaches it; the rest is sampled
        bank = model.config.codec.get("ll_bank")
        if not bank:
            raise ValueError("this model's config has no LL bank (ll_bank): it was trained "
                             "before LL initialisation existed")
        coefs = np.zeros((n, c * geo.n_coef))
        ll_idx = ll_indices(geo, c)
        m_tilde = np.empty(n, np.int64)
        for i, y in enumerate(labels):
            # the null label (unconditional) draws from a random class's bank
            entries = bank[int(y) if y < len(bank) else int(rng.integers(len(bank)))]
            j = rng.integers(len(entries["m_tilde"]))
            m_tilde[i] = entries["m_tilde"][j]
            coefs[i, ll_idx] = entries["ll"][j]
        kept = np.zeros(c * geo.n_coef, bool)
        kept[ll_idx] = True
        region_arrays = _forcing(geo, coefs, kept, c)
    if m_tilde is None:
        m_tilde = sample_m_tilde(model, labels, rng)
    m_tilde = np.asarray(m_tilde, np.int64)
    states = codec.batch_state(h, w, c, m_tilde)
    limit = model.config.max_seq_len if max_tokens is None else min(max_tokens,
                                                                    model.config.max_seq_len)
    forced = None
    if prefix is not None:
        forced = [np.asarray(p, np.int64)[:limit] for p in prefix]
    if gpu_grammar is None:
        gpu_grammar = (device.type == "cuda" and region_arrays is None
                       and isinstance(codec, WaveletCodec) and _gpu_grammar.available())
    if gpu_grammar:
        if attention == "auto":
            from wavar.model.kernels import fused_step_supported, triton_available

            triton = triton_available() and device.type == "cuda"
            attention = ("fused" if triton and fused_step_supported(model) else
                         "rows" if triton else "span")
        out, length = _generate_on_gpu(model, states, labels, m_tilde, limit, max_plane, forced,
                                       cfg, temperature, top_k, top_p, gen, cache_block,
                                       cuda_graphs, attention, compile_step)
        return [CodedImage(out[i, : length[i]].astype(np.uint8),
                           codec.header(h, w, c, int(m_tilde[i]))) for i in range(n)]

    guided = cfg != 1.0
    rows = np.arange(n)  # original index of each live row
    out = np.zeros((n, limit), np.uint8)
    length = np.zeros(n, np.int64)
    lab_t = torch.as_tensor(labels, device=device)
    mt_t = torch.as_tensor(m_tilde, device=device)
    if guided:
        lab_t = torch.cat([lab_t, torch.full_like(lab_t, model.config.num_classes)])
        mt_t = torch.cat([mt_t, mt_t])
    cache = model.new_cache(len(lab_t), limit, device=device)
    prev = None
    t = 0
    live = np.ones(n, bool)
    while t < limit:
        # who is still generating
        si, sp = states.slots()
        stop = states.done.copy()
        if max_plane is not None:
            stop |= si[:, 0] >= max_plane
        live_idx = np.flatnonzero(~stop)
        if live_idx.size == 0:
            break
        if live_idx.size <= len(stop) // 2 and t > 0:  # compact: finished rows stop costing
            keep = torch.as_tensor(live_idx, device=device)
            if guided:
                keep = torch.cat([keep, keep + len(stop)])
            cache.k, cache.v = cache.k[:, keep], cache.v[:, keep]
            lab_t, mt_t, prev = lab_t[keep], mt_t[keep], prev[keep]
            states.mems = states.mems[live_idx]
            rows = rows[live_idx]
            if region_arrays is not None:
                region_arrays = tuple(a[live_idx] if a.ndim == 2 else a for a in region_arrays)
            si, sp, stop = si[live_idx], sp[live_idx], stop[live_idx]
            live_idx = np.arange(len(live_idx))
        live = ~stop
        si[stop] = 0  # finished rows still ride along until compaction: give them a valid slot
        legal = states.legal()
        legal[stop] = 1
        if region_arrays is not None:
            # kept coefficients narrow the choice to the tokens consistent with them (unless
            # the grammar, after the model's earlier choices, leaves none of those)
            mags, negs, desc, kept, kept_tree = region_arrays
            allowed = np.empty(len(legal), np.int64)
            geo = states.geo
            coder.allowed_symbols(states.mems, mags, negs, desc, kept, kept_tree, m_tilde[rows],
                                  geo.scan_index, geo.n_desc, geo.is_ll, allowed)
            narrowed = legal & codec.lang.mask_from_symbols(allowed)
            legal = np.where(narrowed != 0, narrowed, legal)
        slots_t = torch.as_tensor(si, device=device)
        pos_t = torch.as_tensor(sp, dtype=torch.float32, device=device)
        if guided:
            slots_t, pos_t = torch.cat([slots_t, slots_t]), torch.cat([pos_t, pos_t])
        if t == 0:
            logits = model.prefill(cache, lab_t, mt_t, slots_t, pos_t)
        else:
            view = _cache_view(cache, _attended_span(cache, t, cache_block))
            logits = model.decode_step(view, prev, slots_t, pos_t, mt_t, t)
        legal_t = torch.as_tensor(legal, device=device)
        b = len(legal)
        logits = _filtered(logits, legal_t, cfg, temperature, top_k, top_p)
        tok = filters.sample(logits, gen).cpu().numpy().astype(np.int64)
        # forced prefix tokens
        if forced is not None:
            for r in range(b):
                f = forced[rows[r]]
                if t < len(f):
                    tok[r] = f[t]
        tok[~live] = -1
        states.push(tok)
        out[rows[live], t] = tok[live]
        length[rows[live]] = t + 1
        prev_np = np.where(live, tok, 0)
        prev = torch.as_tensor(prev_np, device=device)
        if guided:
            prev = torch.cat([prev, prev])
        t += 1
    return [CodedImage(out[i, : length[i]].copy(), codec.header(h, w, c, int(m_tilde[i])))
            for i in range(n)]


def _filtered(logits: torch.Tensor, legal: torch.Tensor, cfg: float, temperature: float,
              top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Grammar mask, guidance (rows b: are the unconditional twins when cfg != 1), filters."""
    if cfg != 1.0:
        b = len(legal)
        logits = filters.guidance(filters.apply_legal_mask(logits[:b], legal),
                                  filters.apply_legal_mask(logits[b:], legal), cfg)
    else:
        logits = filters.apply_legal_mask(logits, legal)
    return filters.top_p(filters.top_k(filters.temperature(logits, temperature), top_k), top_p)


def prefix_tokens(codec: WaveletCodec, image: np.ndarray, planes: int | None = None,
                  tokens: int | None = None) -> CodedImage:
    """The first ``planes`` bit-planes (or ``tokens`` tokens) of a real image's sequence."""
    seq = codec.encode(image)
    if planes is not None:
        plane = codec.slots(seq).plane[:-1]
        return seq[: int(np.searchsorted(plane, planes))]
    return seq[:tokens]


def decode(model, seqs: Sequence[CodedImage], n_tokens: int | None = None) -> list[np.ndarray]:
    """uint8 images of sampled sequences."""
    return codec_of(model).decode_batch(list(seqs), n_tokens)


def decode_prefixes(model, seqs: Sequence[CodedImage], steps: int) -> list[list[np.ndarray]]:
    """The sequences decoded from at most ``steps`` log-spaced token prefixes, coarse to fine,
    the last complete: one list of images per prefix length (a progressive display's frames)."""
    from wavar.viz import prefix_lengths

    ks = prefix_lengths(max(len(s) for s in seqs), steps)
    return [decode(model, seqs, k) for k in ks]


def _compiled_decode_step(model):
    """``model.decode_step`` under ``torch.compile`` (kept on the model: compiled once)."""
    if getattr(model, "_compiled_decode_step", None) is None:
        model._compiled_decode_step = torch.compile(model.decode_step, fullgraph=True,
                                                    dynamic=False)
    return model._compiled_decode_step


class _StepGraphs:
    """Steps of the sampling loop captured as CUDA graphs, one per attended span.

    ``run(span)`` works in place on the loop's buffers (and may return a tensor, e.g. logits,
    which a replay rewrites); after a warm-up of the model step (the library initialisation
    a capture must not see) it is captured once per span and replayed, so a step costs the
    host one launch. Graphs share one memory pool, and the registered generator advances at
    each replay as it would eagerly. A new batch (compaction) needs new graphs.
    """

    def __init__(self, run, warm_up, gen: torch.Generator, enabled: bool) -> None:
        self.run, self.warm_up, self.gen, self.enabled = run, warm_up, gen, enabled
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor | None]] = {}
        self.pool = torch.cuda.graph_pool_handle() if enabled else None

    def __call__(self, span: int) -> torch.Tensor | None:
        if not self.enabled:
            return self.run(span)
        if span not in self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # rewrites the cache entries the replay will write
                self.warm_up(span)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.gen)
            with torch.cuda.graph(graph, pool=self.pool):
                result = self.run(span)
            self.graphs[span] = (graph, result)
        graph, result = self.graphs[span]
        graph.replay()
        return result


def _generate_on_gpu(model, states: BatchScanState, labels: np.ndarray, m_tilde: np.ndarray,
                     limit: int, max_plane: int | None, forced, cfg: float, temperature: float,
                     top_k: int | None, top_p: float | None, gen: torch.Generator,
                     cache_block: int, cuda_graphs: str = "step", attention: str = "rows",
                     compile_step: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The sampling loop with the grammar on the GPU: (tokens (n, limit) int8, lengths (n,)).

    Every step stays on the device: the model step, masking/guidance/filters and the draw
    (PyTorch), the grammar step of all rows (one numba-cuda kernel, same stream). With
    ``cuda_graphs="step"`` all of it is one CUDA graph replay per step; ``"model"`` replays
    only the model step (the rest launched eagerly), ``"off"`` captures nothing. The host only
    looks every ``check`` steps to see whether rows finished. With ``attention="rows"`` or
    ``"fused"`` a finished row costs no attention (its position is -1) and the batch keeps its
    shape; with ``"span"`` the batch is compacted when half of the rows have finished.
    """
    from numba import cuda

    if cuda_graphs not in ("step", "model", "off"):
        raise ValueError(f"cuda_graphs must be 'step', 'model' or 'off', got {cuda_graphs!r}")
    if attention not in ("rows", "fused", "span"):
        raise ValueError(f"attention must be 'rows', 'fused' or 'span', got {attention!r}")
    rowwise = attention != "span"
    decode = model.decode_step
    if attention == "fused":  # nothing left for torch.compile to fuse
        from wavar.model.kernels import FusedDecodeStep

        decode = FusedDecodeStep(model)
    elif compile_step:
        decode = _compiled_decode_step(model)
    device = next(model.parameters()).device
    on_cuda = device.type == "cuda"
    kernel = _gpu_grammar.step_kernel()
    n = len(labels)
    geo, lang = states.geo, states.codec.lang
    tables = [torch.as_tensor(np.ascontiguousarray(a), device=device)
              for a in (lang.to_symbols().astype(np.int64), geo.scan_index, geo.parent,
                        geo.children, geo.n_desc, geo.is_ll, geo.block_slot, geo.quad_slot,
                        geo.coef_slot)]
    mems = torch.as_tensor(states.mems, device=device)
    legal = torch.zeros(n, dtype=torch.long, device=device)
    slots = torch.zeros(n, 5, dtype=torch.long, device=device)
    pos = torch.zeros(n, 2, dtype=torch.float32, device=device)
    live = torch.ones(n, dtype=torch.bool, device=device)
    status = torch.zeros(1, dtype=torch.int32, device=device)
    tok = torch.full((n,), -1, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)
    out = torch.full((n, limit), -1, dtype=torch.int8, device=device)
    t_dev = torch.zeros((), dtype=torch.long, device=device)  # the step, for captured graphs
    plane_cap = np.iinfo(np.int32).max if max_plane is None else int(max_plane)
    forced_t = forced_len = None
    if forced is not None:
        width = max(1, max(len(f) for f in forced))
        forced_np = np.zeros((n, width), np.int64)
        for i, f in enumerate(forced):
            forced_np[i, : len(f)] = f
        forced_t = torch.as_tensor(forced_np, device=device)
        forced_len = torch.as_tensor([len(f) for f in forced], device=device)

    views: list = []  # the kernel's numba views of the current buffers (rebuilt on compaction)

    def grammar_step() -> None:
        if not views:
            bufs = (mems, tok, *tables, plane_cap, limit, legal, slots, pos, live, status)
            views[:] = [cuda.as_cuda_array(x, sync=False) if on_cuda and torch.is_tensor(x)
                        else x.numpy() if torch.is_tensor(x) else x for x in bufs]
        threads = min(128, len(mems))
        # PyTorch's current stream: the sampling stream, or a graph's capture stream
        stream = cuda.external_stream(torch.cuda.current_stream().cuda_stream) if on_cuda else 0
        kernel[-(-len(mems) // threads), threads, stream](*views)

    guided = cfg != 1.0
    lab_t = torch.as_tensor(labels, device=device)
    mt_t = torch.as_tensor(m_tilde, device=device)
    if guided:
        lab_t, mt_t = torch.cat([lab_t, torch.full_like(lab_t, model.config.num_classes)]), \
            torch.cat([mt_t, mt_t])
    cache = model.new_cache(len(lab_t), limit, device=device)

    def both(x: torch.Tensor) -> torch.Tensor:  # the conditional rows and their null twins
        return torch.cat([x, x]) if guided else x

    # plain sampling (the filters' defaults) with the fused step: Triton kernels draw, force
    # and record the tokens, each row counting its own steps (t_row); the model step's last
    # kernel draws them where the vocabulary allows (decode.can_draw)
    fused_draw = attention == "fused" and not guided and not top_k and (top_p or 1.0) >= 1.0
    t_row = torch.zeros(n, dtype=torch.long, device=device)

    def plain_draw():
        from wavar.model.kernels import Draw

        noise = torch.empty(len(tok), model.config.vocab_size, device=device)
        return Draw(legal, noise.exponential_(generator=gen), live, tok, out, temperature,
                    forced_t, forced_len)  # (the noise of filters.sample)

    def model_step(span: int, draw=None) -> torch.Tensor | None:
        if fused_draw:  # finished rows skipped (live); with draw, the step draws too
            return decode(cache, tok, slots, pos, mt_t, t_row, live=live, draw=draw)
        if rowwise:  # every live row at step t, finished ones skipped: the whole cache, always
            prev = tok if attention == "fused" else tok.clamp(min=0)  # (fused: reads -1 as 0)
            return decode(cache, both(prev), both(slots), both(pos), mt_t,
                          both(torch.where(live, t_dev, -1)))
        return decode(_cache_view(cache, span), both(tok.clamp(min=0)), both(slots), both(pos),
                      mt_t, t_dev)

    def finish_step(logits: torch.Tensor | None) -> None:
        # draw (or force) every row's token, record it (None: the model step did), step the
        # grammar: all in place
        if fused_draw:
            if logits is not None:
                from wavar.model.kernels import draw_tokens

                draw_tokens(logits, t_row, plain_draw())
        else:
            drawn = filters.sample(_filtered(logits, legal, cfg, temperature, top_k, top_p), gen)
            if forced_t is not None:
                col = forced_t.gather(1, t_dev.clamp(max=forced_t.size(1) - 1)
                                      .expand(len(tok), 1))
                drawn = torch.where(t_dev < forced_len, col[:, 0], drawn)
            tok.copy_(drawn.masked_fill(~live, -1))
            out.index_put_((rows, t_dev.expand(len(tok))), tok.to(torch.int8))
            t_dev.add_(1)
        grammar_step()

    def whole_step(span: int) -> None:
        drawing = fused_draw and decode.can_draw
        finish_step(model_step(span, plain_draw() if drawing else None))

    grammar_step()  # masks and slots of the fresh states
    finish_step(model.prefill(cache, lab_t, mt_t, both(slots), both(pos)))
    graphs = None
    check = 16
    for t in range(1, limit):
        if t % check == 0:
            n_live = int(live.sum())
            if n_live == 0:
                break
            if n_live <= len(live) // 2 and not rowwise:  # compact: finished rows stop costing
                keep = torch.nonzero(live)[:, 0]
                pair = torch.cat([keep, keep + len(live)]) if guided else keep
                cache.k, cache.v = cache.k[:, pair], cache.v[:, pair]
                mt_t = mt_t[pair]
                mems, legal, slots, pos = mems[keep], legal[keep], slots[keep], pos[keep]
                live, tok, rows = live[keep], tok[keep], rows[keep]
                if forced_t is not None:
                    forced_t, forced_len = forced_t[keep], forced_len[keep]
                graphs = None
                views.clear()
        span = cache.k.size(3) if rowwise else _attended_span(cache, t, cache_block)
        if graphs is None:
            graphs = _StepGraphs(whole_step if cuda_graphs == "step" else model_step, model_step,
                                 gen, enabled=on_cuda and cuda_graphs != "off")
        logits = graphs(span)
        if cuda_graphs != "step":  # the graph (or eager call) was the model step alone
            finish_step(logits)
    if int(status.item()):
        raise RuntimeError(f"GPU grammar: row {int(status.item()) - 1} got an illegal token")
    out_np = out.cpu().numpy()
    return out_np, (out_np >= 0).sum(1)
