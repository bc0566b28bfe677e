"""The lossless yardstick (benchmarks/lossless_codecs.py) counts only exact codecs: a file that
does not give the pixels back, or a codec whose package is missing, is reported as such."""

import numpy as np
import pytest

from benchmarks import lossless_codecs as lc


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    grey = (rng.random((3, 28, 28)) * 60).astype(np.uint8)
    return grey


def test_every_available_codec_is_exact_on_grey_and_colour(images):
    colour = np.stack([images] * 3, axis=-1)
    for x in (images, colour):
        res = lc.lossless_bits(x)
        for name, r in res.items():
            if "missing" in r:  # imagecodecs is the bench extra's: say so, count nothing
                assert r["library"].startswith("imagecodecs"), (name, r)
                continue
            assert r["exact"] == r["n"] == len(x), name
            assert r["bpd"] == pytest.approx(8 * r["mean_bytes"] / x[0].size)


def test_a_lossy_codec_and_a_missing_one_are_not_counted(images, monkeypatch):
    def missing():
        raise ImportError("no module named 'nothing'")

    monkeypatch.setattr(lc, "CODECS", {
        "png": lc.CODECS["png"],
        "jpeg_q50": ("Pillow/libjpeg", lambda: lc._pil("JPEG", quality=50)),
        "nothing": ("nowhere", missing),
    })
    res = lc.lossless_bits(images)
    assert res["png"]["exact"] == 3
    assert res["jpeg_q50"]["exact"] < 3
    assert "ImportError" in res["nothing"]["missing"]
    bpd = lc.lossless_bpd(images)
    assert bpd["png"] > 0 and bpd["jpeg_q50"] is None and bpd["nothing"] is None
