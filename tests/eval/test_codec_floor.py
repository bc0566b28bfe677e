"""benchmarks/codec_floor.py without Inception: the round trip, its PSNR, the samples file."""

import math

import numpy as np

from benchmarks.codec_floor import psnr_summary, reconstruct, save_samples
from tests.conftest import smooth_image
from wavar.codec import WaveletCodec


def test_lossy_round_trip(rng):
    x = np.stack([smooth_image(rng, 16, 16) for _ in range(4)])
    codec = WaveletCodec("bior4.4", final_threshold=2**-4)
    r = reconstruct(codec, x, batch=3)  # two batches
    assert r.shape == x.shape and r.dtype == np.uint8
    # the same as one image at a time
    assert all(np.array_equal(codec.decode(codec.encode(a)), b) for a, b in zip(x, r, strict=True))
    q = psnr_summary(x, r)
    assert q["n_exact"] == 0 and 20 < q["psnr_min"] <= q["psnr_mean"] < 60
    assert q["psnr_of_mean_mse"] <= q["psnr_mean"] + 1e-9  # Jensen: log of a mean MSE


def test_lossless_round_trip_and_samples_file(rng, tmp_path):
    x = np.stack([smooth_image(rng, 8, 8, 3) for _ in range(4)])
    r = reconstruct(WaveletCodec("cdf53", final_threshold=1), x)
    assert np.array_equal(r, x)
    q = psnr_summary(x, r)
    assert q["n_exact"] == 4 and q["psnr_mean"] == q["psnr_cap"] and math.isinf(q["psnr_min"])
    y = np.array([0, 1, 2, 1])
    rx, ry = save_samples(tmp_path / "s.npz", r, y)  # read back by `wavar eval`'s reader
    assert np.array_equal(rx, x) and np.array_equal(ry, y) and ry.dtype == np.int64
