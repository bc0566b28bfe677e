"""Logit filters for sampling: small pure functions on (B, V) float logits.

Illegal tokens already carry -inf (the grammar mask); every filter keeps at least one legal
token, so a row never ends up with nothing to sample. On a 7-token vocabulary, plain sampling
(temperature 1, no top-k/top-p) is the default and the honest one: it draws from the model.
"""

from __future__ import annotations

import torch
from torch import Tensor


def apply_legal_mask(logits: Tensor, legal: Tensor) -> Tensor:
    """-inf where bit v of the int64 bitmask ``legal`` (B,) is clear.

    Bits past 63 read as the sign bit, so -1 keeps every token of any vocabulary (raster: 256).
    """
    v = torch.arange(logits.size(-1), device=logits.device).clamp(max=63)
    ok = (legal[:, None] >> v) & 1
    return logits.masked_fill(ok == 0, float("-inf"))


def guidance(cond: Tensor, uncond: Tensor, scale: float | Tensor) -> Tensor:
    """Classifier-free guidance on log-probabilities: uncond + scale * (cond - uncond).

    Scale 0 is the unconditional model, 1 the conditional one; a (B, 1) tensor gives each row
    its own. Computed on log-softmaxed
    logits so both terms share a normalisation; -inf (illegal) stays -inf.
    """
    lc, lu = torch.log_softmax(cond, -1), torch.log_softmax(uncond, -1)
    out = lu + scale * (lc - lu)
    return out.masked_fill(torch.isinf(lc), float("-inf"))


def temperature(logits: Tensor, t: float | Tensor) -> Tensor:
    """logits / t (t > 0: :class:`~wavar.sample.options.SamplingOptions` checks it; a (B, 1)
    tensor gives each row its own)."""
    return logits / t


def top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k most likely tokens of each row."""
    if not k or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: Tensor, p: float | Tensor | None) -> Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p (a
    (B, 1) tensor gives each row its own; 1 keeps every token)."""
    if p is None or (not isinstance(p, Tensor) and p >= 1):
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, -1)
    before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = (before >= p) & (p < 1)  # the top token has before = 0: always kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row from softmax(logits).

    argmax(p / q) with q ~ Exp(1) draws from p: the very draws ``torch.multinomial(p, 1)``
    makes from the same generator (its one-sample path), without the validity check that
    reads the GPU back, so a CUDA graph can capture it.
    """
    probs = torch.softmax(logits.float(), -1)
    q = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / q).argmax(-1)


def filtered(logits: Tensor, legal: Tensor, cfg: float | Tensor, t: float | Tensor,
             k: int | None, p: float | Tensor | None) -> Tensor:
    """The grammar mask, guidance and filters in order, on raw logits (B, V), or (2B, V) under
    guidance (each row's unconditional twin B rows below it)  ->  (B, V). ``cfg``, ``t`` and
    ``p``: one value, or (B, 1) per row (a per-plane schedule; rows come in twins then)."""
    if isinstance(cfg, Tensor) or cfg != 1.0:
        b = len(legal)
        logits = guidance(apply_legal_mask(logits[:b], legal),
                          apply_legal_mask(logits[b:], legal), cfg)
    else:
        logits = apply_legal_mask(logits, legal)
    return top_p(top_k(temperature(logits, t), k), p)
