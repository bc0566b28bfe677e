"""Image quality metrics shared by the evaluation code."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psnr"]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio between two images, in dB.

    Parameters
    ----------
    a, b : np.ndarray
        Images of identical shape (any dtype; compared as float64, so uint8 inputs
        do not wrap around when subtracted).
    peak : float, optional
        Maximum possible pixel value, 255 for 8-bit images.

    Returns
    -------
    float
        ``10 * log10(peak**2 / MSE)``; ``inf`` when the images are identical.

    Raises
    ------
    ValueError
        If the shapes differ, the images are empty or ``peak`` is not positive.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shape mismatch {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("psnr: empty images")
    if not peak > 0:
        raise ValueError(f"psnr: peak must be positive, got {peak}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)
