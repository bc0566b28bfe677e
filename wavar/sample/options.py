"""What to sample: the user's settings of a generation, validated here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Region:
    """Region completion: keep the real image where ``keep`` (H, W) is True."""

    image: np.ndarray
    keep: np.ndarray


@dataclass(frozen=True)
class SamplingOptions:
    """The settings of :func:`wavar.sample.generate` (the defaults: plain sampling).

    Parameters
    ----------
    cfg : classifier-free guidance scale (1 = plain conditional, 0 = unconditional).
    temperature, top_k, top_p : logit filters (defaults: none; on a 7-token vocabulary plain
        sampling is the honest default).
        ``cfg``, ``temperature`` and ``top_p`` also take one value per bit-plane (a sequence:
        entry p for the slots of plane p, the last entry for every later plane), e.g. cooler
        or more guided on the finer planes, as VAR ramps its guidance with scale, or a
        nucleus only on the coarse planes (1 = no filter on a plane).
    seed : same seed, same device -> same sequences.
    m_tilde : per-row initial-threshold exponents; default drawn per class from training
        statistics (or taken from ``region``/``ll_init`` images).
    max_tokens, max_plane : stop after this many tokens / before this bit-plane (progressive).
    prefix : per row, token ids to force at the start (a real image's coarse planes).
    region : keep part of a real image (see :class:`Region`).
    ll_init : start each row from the LL band and m~ of a training image of its class (the
        paper's "robust initialisation"; the bank is recorded in the model config).
    """

    cfg: float | Sequence[float] = 1.0
    temperature: float | Sequence[float] = 1.0
    top_k: int | None = None
    top_p: float | Sequence[float] | None = None
    seed: int | None = None
    m_tilde: Sequence[int] | np.ndarray | None = None
    max_tokens: int | None = None
    max_plane: int | None = None
    prefix: Sequence[np.ndarray] | None = None
    region: Region | None = None
    ll_init: bool = False

    def __post_init__(self) -> None:
        for name in ("cfg", "temperature", "top_p"):
            value = getattr(self, name)
            if value is not None and not np.isscalar(value):
                value = tuple(float(v) for v in value)
                if not value:
                    raise ValueError(f"a per-plane {name} needs at least one value")
                # frozen: normalised once, here (one value throughout is a plain value)
                object.__setattr__(self, name, value[0] if len(set(value)) == 1 else value)
        if not all(t > 0 for t in self.per_plane("temperature")):  # every draw divides by it
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not all(p > 0 for p in self.per_plane("top_p")):  # 0 would keep no token at all
            raise ValueError(f"top_p must be > 0, got {self.top_p}")
        if self.region is not None and self.ll_init:
            raise ValueError("region completion and LL initialisation exclude each other")

    def per_plane(self, name: str) -> tuple[float, ...]:
        """``cfg``, ``temperature`` or ``top_p`` as a per-plane tuple (one entry for a single
        value; no ``top_p`` is 1: no filter)."""
        value = getattr(self, name)
        if value is None:  # top_p only
            return (1.0,)
        return (float(value),) if np.isscalar(value) else value

    @property
    def scheduled(self) -> bool:
        """``cfg``, ``temperature`` or ``top_p`` changes with the bit-plane."""
        return any(len(set(self.per_plane(n))) > 1 for n in ("cfg", "temperature", "top_p"))

    @property
    def guided(self) -> bool:
        """Classifier-free guidance: every row has an unconditional twin."""
        return any(c != 1.0 for c in self.per_plane("cfg"))

    @property
    def filtered(self) -> bool:
        """A top-k or top-p filter narrows the draw."""
        return bool(self.top_k) or min(self.per_plane("top_p")) < 1.0
