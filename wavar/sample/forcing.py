"""Conditioning on a partly known image: region completion and LL initialisation.

Both force the known image's symbols wherever the scan reaches a node whose coefficients are
all known (if the grammar, after the model's earlier choices, allows them there); elsewhere
the model samples. The narrowing runs on the host, so these generations take the CPU loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from wavar.codec import BatchScanState, WaveletCodec, coder
from wavar.sample.options import SamplingOptions


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


@dataclass
class Forcing:
    """What the compiled forcing step needs: per row the known image's coefficient magnitudes
    ``mags``, signs ``negs`` and descendant maxima ``desc`` (n, C * M * M); for all rows the
    ``kept`` coefficients and the subtrees ``kept_tree`` wholly kept."""

    mags: np.ndarray
    negs: np.ndarray
    desc: np.ndarray
    kept: np.ndarray
    kept_tree: np.ndarray

    @classmethod
    def of(cls, geo, coefs: np.ndarray, kept: np.ndarray, channels: int) -> Forcing:
        mags = np.abs(coefs)
        desc = np.stack([coder._descendant_max(m, channels, geo.n_coef, geo.parent,
                                               geo.bottom_up) for m in mags])
        kept_tree = coder.kept_subtrees(kept, channels, geo.n_coef, geo.parent, geo.bottom_up)
        return cls(mags, coefs < 0, desc, kept, kept_tree)

    def rows(self, index: np.ndarray) -> Forcing:
        return replace(self, mags=self.mags[index], negs=self.negs[index], desc=self.desc[index])

    def narrow(self, legal: np.ndarray, states: BatchScanState,
               m_tilde: np.ndarray) -> np.ndarray:
        """The legal bitmasks (B,) narrowed to the tokens consistent with the kept
        coefficients (unless the grammar, after the model's earlier choices, leaves none of
        those)."""
        allowed = np.empty(len(legal), np.int64)
        geo = states.geo
        coder.allowed_symbols(states.mems, self.mags, self.negs, self.desc, self.kept,
                              self.kept_tree, m_tilde, geo.scan_index, geo.n_desc, geo.is_ll,
                              allowed)
        narrowed = legal & states.codec.lang.mask_from_symbols(allowed)
        return np.where(narrowed != 0, narrowed, legal)


def forcing_of(model, codec: WaveletCodec, options: SamplingOptions, labels: np.ndarray,
               shape: tuple[int, int, int], rng: np.random.Generator
               ) -> tuple[Forcing | None, np.ndarray | None]:
    """The forcing tables of ``options.region`` or ``options.ll_init`` (None without either)
    for images of ``shape`` (H, W, C), and the rows' m~ they imply (None: not implied)."""
    n = len(labels)
    h, w, channels = shape
    if options.region is not None:
        region = options.region
        coefs = codec.coefficients(region.image[None])
        kept = kept_coefficients(codec, np.asarray(region.keep, bool), channels)
        forcing = Forcing.of(codec.geometry(h, w), np.repeat(coefs.reshape(1, -1), n, 0), kept,
                             channels)
        m_tilde = options.m_tilde
        return forcing, np.full(n, codec.m_tilde(coefs)[0]) if m_tilde is None else m_tilde
    if not options.ll_init:
        return None, None
    # the paper's robust initialisation: each row starts from the LL band (and m~) of a
    # training image of its class, forced where the grammar reaches it; the rest is sampled
    bank = model.config.codec.get("ll_bank")
    if not bank:
        raise ValueError("this model's config has no LL bank (ll_bank): it was trained "
                         "before LL initialisation existed")
    geo = codec.geometry(h, w)
    coefs = np.zeros((n, channels * geo.n_coef))
    ll_idx = ll_indices(geo, channels)
    m_tilde = np.empty(n, np.int64)
    for i, y in enumerate(labels):
        # the null label (unconditional) draws from a random class's bank
        entries = bank[int(y) if y < len(bank) else int(rng.integers(len(bank)))]
        j = rng.integers(len(entries["m_tilde"]))
        m_tilde[i] = entries["m_tilde"][j]
        coefs[i, ll_idx] = entries["ll"][j]
    kept = np.zeros(channels * geo.n_coef, bool)
    kept[ll_idx] = True
    return Forcing.of(geo, coefs, kept, channels), m_tilde
