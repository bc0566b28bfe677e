"""Drawing the tokens of a step: grammar mask, guidance and filters (:mod:`wavar.sample.filters`),
one token per row from the softmax, and a forced prefix.

:func:`draw` is the draw in PyTorch (both loops). The Triton draw (:func:`draw_tokens`, and
the fused step's last kernel given a :class:`Draw`) is its compiled twin for plain sampling:
the same noise, the same argmax, the same forcing (``_draw_rows`` in
:mod:`wavar.sample.triton_kernels` mirrors :func:`draw` and :meth:`ForcedPrefix.apply`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from wavar.sample import filters
from wavar.sample.options import SamplingOptions


@dataclass
class ForcedPrefix:
    """Tokens to force at the start of each row: ``tokens`` (B, width) int64, of which the
    first ``lengths[r]`` (B,) are row r's."""

    tokens: Tensor
    lengths: Tensor

    @classmethod
    def of(cls, prefix: Sequence[np.ndarray], limit: int, device: torch.device) -> ForcedPrefix:
        """From one token array per row (each cut to ``limit`` tokens)."""
        rows = [np.asarray(p, np.int64)[:limit] for p in prefix]
        tokens = np.zeros((len(rows), max([1, *map(len, rows)])), np.int64)
        for i, f in enumerate(rows):
            tokens[i, : len(f)] = f
        return cls(torch.as_tensor(tokens, device=device),
                   torch.as_tensor([len(f) for f in rows], device=device))

    def rows(self, index: Tensor) -> ForcedPrefix:
        return ForcedPrefix(self.tokens[index], self.lengths[index])

    def apply(self, drawn: Tensor, t: Tensor) -> Tensor:
        """``drawn`` (B,), with row r's forced token wherever its step ``t[r]`` (B,) lies within
        its prefix. (The one forcing rule; ``_draw_rows`` is its compiled twin.)"""
        col = self.tokens.gather(1, t.clamp(max=self.tokens.size(1) - 1)[:, None])[:, 0]
        return torch.where(t < self.lengths, col, drawn)


@dataclass
class PlaneSchedule:
    """Guidance, temperature and nucleus per bit-plane (:class:`SamplingOptions` sequences), as
    tables on the sampling device: made once before a loop (a CUDA graph may not copy them in)."""

    cfg: Tensor | None  # (P,), None without guidance
    temperature: Tensor  # (P,)
    top_p: Tensor | None  # (P,), None where no plane filters

    @classmethod
    def of(cls, options: SamplingOptions, device: torch.device) -> PlaneSchedule | None:
        """The tables of ``options``, or None where nothing changes with the plane."""
        if not options.scheduled:
            return None
        def table(name: str) -> Tensor:
            return torch.tensor(options.per_plane(name), device=device)

        return cls(table("cfg") if options.guided else None, table("temperature"),
                   table("top_p") if min(options.per_plane("top_p")) < 1 else None)

    def at(self, planes: Tensor) -> tuple[float | Tensor, Tensor, Tensor | None]:
        """(cfg, temperature, top_p) for rows whose slots lie on ``planes`` (B,): (B, 1) each
        (cfg 1.0 without guidance, top_p None without a filter)."""
        def pick(table: Tensor) -> Tensor:
            return table[planes.long().clamp(0, len(table) - 1)][:, None]

        return ((1.0 if self.cfg is None else pick(self.cfg)), pick(self.temperature),
                (None if self.top_p is None else pick(self.top_p)))


def draw(logits: Tensor, legal: Tensor, options: SamplingOptions, gen: torch.Generator,
         t: Tensor | None = None, forced: ForcedPrefix | None = None,
         schedule: PlaneSchedule | None = None, planes: Tensor | None = None) -> Tensor:
    """One token per row (B,) from raw ``logits`` (B, V), or (2B, V) under guidance (each
    row's unconditional twin B rows below it): the grammar's bitmask ``legal`` (B,), guidance,
    temperature, top-k, top-p, a draw from the softmax; then ``forced`` at the rows' steps
    ``t`` (B,). With a per-plane ``schedule``, ``planes`` (B,) are the bit-planes of the rows'
    slots."""
    cfg, temperature, top_p = options.cfg, options.temperature, options.top_p
    if schedule is not None:
        cfg, temperature, top_p = schedule.at(planes)
    logits = filters.filtered(logits, legal, cfg, temperature, options.top_k, top_p)
    tok = filters.sample(logits, gen)
    return tok if forced is None else forced.apply(tok, t)


@dataclass
class Draw:
    """The buffers of a plain draw in Triton (:func:`draw_tokens`, or the fused step's last
    kernel): grammar bitmasks ``legal`` (B,), ``noise`` (B, V) ~ Exp(1), ``live`` (B,) bool,
    the drawn tokens ``tok`` (B,), the record ``out`` (B, max_len) int8, and the forced
    prefix."""

    legal: Tensor
    noise: Tensor
    live: Tensor
    tok: Tensor
    out: Tensor
    temperature: float = 1.0
    forced: ForcedPrefix | None = None

    @classmethod
    def plain(cls, legal: Tensor, live: Tensor, tok: Tensor, out: Tensor, vocab_size: int,
              temperature: float, forced: ForcedPrefix | None,
              gen: torch.Generator) -> Draw:
        """A draw with fresh noise: the very draws ``filters.sample`` takes from ``gen``."""
        noise = torch.empty(len(tok), vocab_size, device=tok.device)
        return cls(legal, noise.exponential_(generator=gen), live, tok, out, temperature, forced)

    def kernel_args(self, t: Tensor) -> tuple[list, bool]:
        """The draw kernels' arguments LEGAL .. s_out (T: each row's step t (B,)), and
        FORCE."""
        force = self.forced is not None
        forced, forced_len = ((self.forced.tokens, self.forced.lengths) if force
                              else (self.tok, self.tok))
        return [self.legal, self.noise, self.live, forced, forced_len, t, self.tok,
                self.out, 1.0 / self.temperature, forced.stride(0) if force else 1,
                self.out.stride(0)], force


def draw_tokens(logits: Tensor, t: Tensor, draw: Draw) -> None:
    """Plain sampling in one Triton kernel: ``draw.tok`` (B,) and ``draw.out[row, t[row]]``
    get, per row, what :func:`draw` draws from ``logits`` (B, V) with the noise ``draw.noise``
    (forced tokens included); -1 where ``live`` is False; then each row's step ``t`` (B,)
    advances by one."""
    from wavar.sample import triton_kernels as tk

    B, V = logits.shape
    args, force = draw.kernel_args(t)
    block = 128
    tk.draw[(-(-B // block),)](logits, *args, B, V=V,
                               VP=max(16, 1 << math.ceil(math.log2(V))), FORCE=force,
                               BLOCK=block, num_warps=4)
