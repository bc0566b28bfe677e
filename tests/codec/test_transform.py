import numpy as np
import pytest

from wavar.codec.transform import (
    dwt2,
    idwt2,
    rct_to_rgb,
    rgb_to_rct,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


@pytest.mark.parametrize("wavelet", ["haar", "bior4.4"])
@pytest.mark.parametrize("side", [4, 8, 32, 64])
def test_float_wavelets_reconstruct(wavelet, side, rng):
    x = rng.random((3, side, side))
    np.testing.assert_allclose(idwt2(dwt2(x, wavelet), wavelet), x, atol=1e-9)


def test_haar_is_orthonormal(rng):
    x = rng.random((2, 32, 32))
    c = dwt2(x, "haar")
    np.testing.assert_allclose((c**2).sum(), (x**2).sum())


@pytest.mark.parametrize("side", [4, 8, 16, 32, 128])
def test_cdf53_is_exactly_reversible_on_integers(side, rng):
    x = rng.integers(-300, 300, size=(4, side, side))
    c = dwt2(x, "cdf53")
    assert c.dtype == np.int64
    assert np.array_equal(idwt2(c, "cdf53"), x)


def test_cdf53_lowpass_is_the_mean_for_constant_images():
    # LeGall 5/3 has unit DC gain: a constant image puts the constant in the LL band
    c = dwt2(np.full((1, 16, 16), 100), "cdf53")
    assert np.all(c[0, :2, :2] == 100)
    assert np.all(c[0][2:, :] == 0) and np.all(c[0][:, 2:] == 0)


def test_fewer_levels_leave_a_larger_ll_band(rng):
    x = rng.random((1, 32, 32))
    c = dwt2(x, "haar", levels=2)
    np.testing.assert_allclose(idwt2(c, "haar", levels=2), x, atol=1e-12)
    # LL after two Haar levels = 4 x the 4x4 block means
    np.testing.assert_allclose(c[0, :8, :8], 4 * x[0].reshape(8, 4, 8, 4).mean(axis=(1, 3)))


def test_colour_transforms_invert(rng):
    rgb = rng.integers(0, 256, size=(50, 3))
    assert np.array_equal(rct_to_rgb(rgb_to_rct(rgb)), rgb)
    f = rng.random((50, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(f)), f, atol=1e-12)
    # grey stays grey: no chroma
    grey = np.full((1, 3), 0.4)
    np.testing.assert_allclose(rgb_to_ycbcr(grey)[0, 1:], 0, atol=1e-6)
