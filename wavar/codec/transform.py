"""Wavelet and colour transforms: images <-> coefficient arrays in Mallat layout.

All functions are batched over leading axes and work on numpy arrays. The 2-D DWT uses periodic
extension so that an M x M image gives exactly M x M coefficients (docs/design.md §1): LL top-left,
then for each level, coarse to fine, the three detail subbands top-right (HL), bottom-left (LH)
and bottom-right (HH).

Wavelets
--------
``haar`` and ``bior4.4`` (CDF 9/7, the JPEG 2000 lossy wavelet) come from PyWavelets in
``periodization`` mode. ``cdf53`` is the reversible integer LeGall 5/3 lifting transform of
lossless JPEG 2000 (ITU-T T.800 Annex F), written here because PyWavelets has none; it maps
integers to integers and inverts exactly.
"""

from __future__ import annotations

import numpy as np
import pywt

WAVELETS = ("bior4.4", "haar", "cdf53")
INTEGER_WAVELETS = ("cdf53",)


def _check_wavelet(wavelet: str) -> None:
    if wavelet not in WAVELETS:
        raise ValueError(f"unknown wavelet {wavelet!r}; choose one of {', '.join(WAVELETS)}")


# ---------------------------------------------------------------------------------------------
# 1-D building blocks along one axis (the signal length along `axis` is even)


def _lift53_forward(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer 5/3 analysis with periodic extension: (low, high) halves along ``axis``."""
    x = np.moveaxis(x, axis, -1)
    even, odd = x[..., 0::2], x[..., 1::2]
    # predict: d[i] = x[2i+1] - floor((x[2i] + x[2i+2]) / 2), x[n] wrapping to x[0]
    high = odd - ((even + np.roll(even, -1, axis=-1)) >> 1)
    # update: s[i] = x[2i] + floor((d[i-1] + d[i] + 2) / 4), d[-1] wrapping to d[n/2-1]
    low = even + ((np.roll(high, 1, axis=-1) + high + 2) >> 2)
    return np.moveaxis(low, -1, axis), np.moveaxis(high, -1, axis)


def _lift53_inverse(low: np.ndarray, high: np.ndarray, axis: int) -> np.ndarray:
    low, high = np.moveaxis(low, axis, -1), np.moveaxis(high, axis, -1)
    even = low - ((np.roll(high, 1, axis=-1) + high + 2) >> 2)
    odd = high + ((even + np.roll(even, -1, axis=-1)) >> 1)
    out = np.empty(low.shape[:-1] + (2 * low.shape[-1],), dtype=low.dtype)
    out[..., 0::2], out[..., 1::2] = even, odd
    return np.moveaxis(out, -1, axis)


def _analysis(x: np.ndarray, wavelet: str, axis: int) -> tuple[np.ndarray, np.ndarray]:
    if wavelet == "cdf53":
        return _lift53_forward(x, axis)
    lo, hi = pywt.dwt(x, wavelet, mode="periodization", axis=axis)
    return lo, hi


def _synthesis(lo: np.ndarray, hi: np.ndarray, wavelet: str, axis: int) -> np.ndarray:
    if wavelet == "cdf53":
        return _lift53_inverse(lo, hi, axis)
    return pywt.idwt(lo, hi, wavelet, mode="periodization", axis=axis)


# ---------------------------------------------------------------------------------------------
# 2-D transforms in Mallat layout


def dwt2(x: np.ndarray, wavelet: str = "bior4.4", levels: int | None = None) -> np.ndarray:
    """Forward 2-D DWT of square images, coefficients in Mallat layout.

    Parameters
    ----------
    x : ndarray, shape (..., M, M)
        Float images (or int64 for ``cdf53``); M a power of two.
    wavelet : {'bior4.4', 'haar', 'cdf53'}
    levels : int, optional
        Decomposition levels; default ``log2(M) - 1`` (down to a 2 x 2 LL band).

    Returns
    -------
    ndarray, shape (..., M, M)
        int64 for ``cdf53``, float64 otherwise.

    Examples
    --------
    >>> c = dwt2(np.ones((4, 4)), "haar")
    >>> round(float(c[0, 0]), 12)  # the orthonormal Haar LL of a constant image: 2 * mean
    2.0
    """
    _check_wavelet(wavelet)
    side = x.shape[-1]
    levels = default_levels(side) if levels is None else levels
    out = x.astype(np.int64 if wavelet == "cdf53" else np.float64, copy=True)
    n = side
    for _ in range(levels):
        block = out[..., :n, :n]
        lo, hi = _analysis(block, wavelet, axis=-1)
        rows = np.concatenate([lo, hi], axis=-1)
        lo, hi = _analysis(rows, wavelet, axis=-2)
        out[..., :n, :n] = np.concatenate([lo, hi], axis=-2)
        n //= 2
    return out


def idwt2(c: np.ndarray, wavelet: str = "bior4.4", levels: int | None = None) -> np.ndarray:
    """Inverse of :func:`dwt2` (exact for ``cdf53`` on integer input)."""
    _check_wavelet(wavelet)
    side = c.shape[-1]
    levels = default_levels(side) if levels is None else levels
    out = c.astype(np.int64 if wavelet == "cdf53" else np.float64, copy=True)
    n = side >> (levels - 1)
    for _ in range(levels):
        block = out[..., :n, :n]
        h = n // 2
        rows = _synthesis(block[..., :h, :], block[..., h:, :], wavelet, axis=-2)
        out[..., :n, :n] = _synthesis(rows[..., :, :h], rows[..., :, h:], wavelet, axis=-1)
        n *= 2
    return out


def default_levels(side: int) -> int:
    """Levels that take an M x M image down to a 2 x 2 LL band."""
    return int(np.log2(side)) - 1


# ---------------------------------------------------------------------------------------------
# Colour transforms (JPEG 2000 Annex G): ICT for lossy, RCT for lossless

_ICT = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_ICT_INV = np.linalg.inv(_ICT)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Irreversible colour transform of float RGB (..., 3) to YCbCr (..., 3)."""
    return rgb @ _ICT.T


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`."""
    return ycc @ _ICT_INV.T


def rgb_to_rct(rgb: np.ndarray) -> np.ndarray:
    """Reversible colour transform of integer RGB (..., 3) to integer (Y, Cb, Cr)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return np.stack([(r + 2 * g + b) >> 2, b - g, r - g], axis=-1)


def rct_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`rgb_to_rct`."""
    y, cb, cr = (ycc[..., i].astype(np.int64) for i in range(3))
    g = y - ((cb + cr) >> 2)
    return np.stack([cr + g, g, cb + g], axis=-1)
