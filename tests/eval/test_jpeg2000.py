"""Tests for the JPEG 2000 baseline and the PSNR metric."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
from PIL import Image

from wavar.eval import jpeg2000 as j2k
from wavar.eval.metrics import psnr


def _smooth_image(h: int, w: int, c: int | None, seed: int = 0) -> np.ndarray:
    """Gradient + noise with correlated channels: compressible but not trivial."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    g = 255.0 * (x + y) / max(h + w - 2, 1) + rng.normal(0, 8, (h, w))
    if c is None:
        out = g
    else:
        out = np.stack([g, 0.9 * g + 10, 0.8 * g + rng.normal(0, 4, (h, w))], axis=-1)
    return np.clip(out, 0, 255).astype(np.uint8)


def _walk_markers(data: bytes) -> tuple[int, int]:
    """Independent header count for a Pillow stream: (payload bytes, header bytes).

    Finds every SOT by its Psot chain and, inside each tile-part, the first SOD by a byte
    search (J2K packet data never contains 0xFF followed by a byte > 0x8F, so the first
    0xFF93 after SOT is the SOD marker).
    """
    pos = data.index(b"\xff\x90")  # first SOT; Pillow's main header has no 0xFF90 inside
    payload = 0
    while data[pos : pos + 2] == b"\xff\x90":
        (psot,) = struct.unpack_from(">I", data, pos + 6)
        end = pos + psot if psot else len(data) - 2
        sod = data.index(b"\xff\x93", pos, end)
        payload += end - (sod + 2)
        pos = end
    assert data[pos:] == b"\xff\xd9"
    return payload, len(data) - payload


# --------------------------------------------------------------------------------------
# psnr
# --------------------------------------------------------------------------------------


def test_psnr_identical_is_inf() -> None:
    a = _smooth_image(8, 8, 3)
    assert psnr(a, a.copy()) == math.inf


def test_psnr_known_value_and_no_uint8_wraparound() -> None:
    a = np.zeros((4, 4), np.uint8)
    b = np.full((4, 4), 255, np.uint8)  # MSE = 255**2 -> 0 dB (would wrap if uint8 math)
    assert psnr(a, b) == pytest.approx(0.0)
    c = a.copy()
    c[0, 0] = 16  # MSE = 256 / 16 = 16
    assert psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 16))
    assert psnr(a, c, peak=1.0) == pytest.approx(10 * math.log10(1 / 16))


def test_psnr_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        psnr(np.zeros((0,)), np.zeros((0,)))
    with pytest.raises(ValueError, match="peak"):
        psnr(np.zeros(2), np.ones(2), peak=0)


# --------------------------------------------------------------------------------------
# encode / decode
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "c"),
    [(32, 32, 3), (32, 32, None), (28, 28, None), (28, 28, 3), (17, 40, 3), (1, 5, None)],
)
def test_lossless_roundtrip_exact(h: int, w: int, c: int | None) -> None:
    img = _smooth_image(h, w, c)
    data = j2k.encode_lossless(img)
    assert data[:2] == b"\xff\x4f" and data[-2:] == b"\xff\xd9"  # raw J2K, no JP2 boxes
    out = j2k.decode(data)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


def test_num_resolutions_for() -> None:
    assert j2k.num_resolutions_for(32, 32) == 6
    assert j2k.num_resolutions_for(28, 28) == 5  # 6 would make OpenJPEG fail
    assert j2k.num_resolutions_for(512, 512) == 6
    assert j2k.num_resolutions_for(1, 100) == 1
    assert j2k.num_resolutions_for(16, 64) == 5
    with pytest.raises(ValueError):
        j2k.num_resolutions_for(0, 4)


def test_rgb_uses_colour_transform() -> None:
    # Correlated channels: with mct=1 the stream is clearly smaller than 3x grey.
    img = _smooth_image(32, 32, 3)
    rgb = len(j2k.encode_lossless(img))
    grey = len(j2k.encode_lossless(img[..., 0]))
    assert rgb < 2.5 * grey


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8)]
)
def test_encode_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        j2k.encode_lossless(bad)


def test_encode_at_rate_hits_target_from_below() -> None:
    img = _smooth_image(32, 32, 3)
    lossless_bits = j2k.payload_bits(j2k.encode_lossless(img))
    prev_bits, prev_psnr = 0, 0.0
    for target in (800, 2000, 4000):
        data = j2k.encode_at_rate(img, target)
        bits = j2k.payload_bits(data)
        assert bits <= target
        assert bits >= 0.8 * target  # bisection gets close
        assert bits < lossless_bits
        q = psnr(img, j2k.decode(data))
        assert bits > prev_bits and q > prev_psnr  # more bits, better quality
        prev_bits, prev_psnr = bits, q


def test_encode_at_rate_extremes() -> None:
    img = _smooth_image(32, 32, None)
    tiny = j2k.encode_at_rate(img, 1)  # below OpenJPEG's floor: smallest stream returned
    assert j2k.decode(tiny).shape == img.shape
    huge = j2k.encode_at_rate(img, 1e9)  # above the ratio-1 stream: that stream, lossy
    assert j2k.payload_bits(tiny) < j2k.payload_bits(huge) < 1e9
    assert 30 < psnr(img, j2k.decode(huge)) < math.inf
    with pytest.raises(ValueError):
        j2k.encode_at_rate(img, 0)


# --------------------------------------------------------------------------------------
# payload_bits / parse_codestream
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lossy", [False, True])
def test_payload_bits_on_pillow_output(lossy: bool) -> None:
    img = _smooth_image(32, 32, 3)
    data = j2k.encode_at_rate(img, 3000) if lossy else j2k.encode_lossless(img)
    layout = j2k.parse_codestream(data)
    bits = j2k.payload_bits(data)
    assert bits == 8 * layout.payload_bytes
    assert 0 < bits < 8 * len(data)
    # Every byte is accounted for once.
    assert layout.header_bytes == len(data) - layout.payload_bytes
    assert layout.main_header_bytes + sum(
        tp.header_bytes + tp.payload_bytes for tp in layout.tile_parts
    ) + layout.eoc_bytes == len(data)
    # Main header is at least SOC + SIZ + COD + QCD; a tile-part header at least SOT + SOD.
    assert layout.main_header_bytes >= 2 + 2 + 38 + 2 + 12 + 2 + 4
    assert all(tp.header_bytes >= 14 for tp in layout.tile_parts)
    # Agrees with an independent marker walk.
    payload, header = _walk_markers(data)
    assert 8 * payload == bits and header == layout.header_bytes


def _tiled_stream(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(
        buf, format="JPEG2000", no_jp2=True, tile_size=(16, 16), num_resolutions=5
    )
    return buf.getvalue()


def test_payload_bits_multiple_tiles() -> None:
    img = _smooth_image(32, 32, 3)
    data = _tiled_stream(img)
    layout = j2k.parse_codestream(data)
    assert [tp.tile_index for tp in layout.tile_parts] == [0, 1, 2, 3]
    assert j2k.payload_bits(data) == 8 * _walk_markers(data)[0]
    np.testing.assert_array_equal(j2k.decode(data), img)


@pytest.mark.parametrize("tiled", [False, True])
def test_payload_bits_psot_zero(tiled: bool) -> None:
    # Psot = 0 means "the last tile-part runs to EOC"; the accounting must not change.
    img = _smooth_image(32, 32, None)
    data = bytearray(_tiled_stream(img) if tiled else j2k.encode_lossless(img))
    before = j2k.parse_codestream(bytes(data))
    last_sot = before.tile_parts[-1].offset
    assert struct.unpack_from(">I", data, last_sot + 6)[0] != 0
    struct.pack_into(">I", data, last_sot + 6, 0)
    assert j2k.parse_codestream(bytes(data)) == before
    np.testing.assert_array_equal(j2k.decode(bytes(data)), img)


def _malformed_streams() -> dict[str, bytes]:
    data = j2k.encode_lossless(_smooth_image(16, 16, None))
    sot = data.index(b"\xff\x90")
    sod = data.index(b"\xff\x93", sot)
    over = bytearray(data)
    struct.pack_into(">I", over, sot + 6, len(data) * 2)  # Psot past the end
    longseg = bytearray(data)
    struct.pack_into(">H", longseg, 4, 0xFFFF)  # SIZ length runs off the end
    return {
        "no SOC": b"\x00\x00" + data[2:],
        "empty": b"",
        "truncated main header": data[: sot - 3],
        "truncated tile-part": data[:-10],
        "missing EOC": data[:-2],
        "trailing bytes": data + b"\x00",
        "jp2 box, not j2k": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + data,
        "Psot too large": bytes(over),
        "segment too long": bytes(longseg),
        "no SOD": data[:sod] + b"\x00\x00" + data[sod + 2 :],
    }


@pytest.mark.parametrize("case", list(_malformed_streams()))
def test_payload_bits_malformed(case: str) -> None:
    with pytest.raises(ValueError):
        j2k.payload_bits(_malformed_streams()[case])


# --------------------------------------------------------------------------------------
# rd_curve / timing
# --------------------------------------------------------------------------------------


def test_rd_curve() -> None:
    imgs = [_smooth_image(32, 32, 3, seed=s) for s in range(3)]
    points = j2k.rd_curve(imgs, [1000, 4000])
    assert [p["target_bits"] for p in points] == [1000.0, 4000.0]
    for p in points:
        assert p["n_images"] == 3
        assert 0 < p["bits"] <= p["target_bits"] < p["total_bits"]
        assert p["bpp"] == pytest.approx(p["bits"] / (32 * 32))
    assert points[1]["psnr"] > points[0]["psnr"] > 15
    with pytest.raises(ValueError):
        j2k.rd_curve([], [1000])


def test_time_lossless_roundtrip() -> None:
    imgs = np.stack([_smooth_image(32, 32, 3, seed=s) for s in range(5)])  # batch array
    r = j2k.time_lossless_roundtrip(imgs, warmup=2)
    assert r["n_images"] == 5
    assert r["seconds"] > 0 and r["images_per_s"] == pytest.approx(5 / r["seconds"])
    assert 0 < r["mean_payload_bits"] < r["mean_total_bits"]
