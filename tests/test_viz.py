"""Tests for wavar.viz: grids, labelled strips, PNG and GIF output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from wavar import viz


def _grey(h: int = 8, w: int = 6, v: int = 0) -> np.ndarray:
    return np.full((h, w), v, np.uint8)


def _rgb(h: int = 8, w: int = 6, colour: tuple[int, int, int] = (10, 200, 30)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


# --------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "ncols", "pad", "scale", "rows", "cols"),
    [
        (1, None, 2, 1, 1, 1),
        (5, None, 2, 1, 2, 3),  # ceil(sqrt(5)) = 3 columns, 2 rows
        (9, None, 0, 1, 3, 3),
        (7, 2, 1, 3, 4, 2),
        (3, 10, 2, 2, 1, 3),  # ncols capped at n
    ],
)
def test_grid_shape(n: int, ncols: int | None, pad: int, scale: int, rows: int, cols: int) -> None:
    h, w = 8, 6
    out = viz.grid([_grey(h, w)] * n, ncols=ncols, pad=pad, scale=scale)
    assert out.dtype == np.uint8
    assert out.shape == (rows * h * scale + (rows + 1) * pad, cols * w * scale + (cols + 1) * pad)


def test_grid_placement_padding_and_scale() -> None:
    a, b = _grey(2, 3, 10), _grey(2, 3, 20)
    out = viz.grid([a, b, a], ncols=2, pad=1, scale=2, pad_value=255)
    assert out.shape == (2 * 4 + 3, 2 * 6 + 3)
    np.testing.assert_array_equal(out[1:5, 1:7], 10)  # cell (0, 0), upscaled
    np.testing.assert_array_equal(out[1:5, 8:14], 20)  # cell (0, 1)
    np.testing.assert_array_equal(out[6:10, 1:7], 10)  # cell (1, 0)
    np.testing.assert_array_equal(out[6:10, 8:14], 255)  # unused cell keeps pad_value
    assert (out[0] == 255).all() and (out[:, 7] == 255).all()  # border and gutter


def test_grid_mixed_grey_rgb_promotes() -> None:
    out = viz.grid([_grey(4, 4, 7), _rgb(4, 4), _grey(4, 4, 7)[..., None]], pad=0, ncols=3)
    assert out.shape == (4, 12, 3)
    np.testing.assert_array_equal(out[:, :4], 7)
    np.testing.assert_array_equal(out[0, 4], (10, 200, 30))


def test_grid_batch_arrays() -> None:
    assert viz.grid(np.zeros((4, 5, 5), np.uint8), pad=0).shape == (10, 10)
    assert viz.grid(np.zeros((4, 5, 5, 3), np.uint8), pad=0).shape == (10, 10, 3)


@pytest.mark.parametrize(
    "images",
    [
        [],
        np.zeros((0, 4, 4), np.uint8),
        [_grey(4, 4), _grey(4, 5)],  # size mismatch
        [np.zeros((4, 4), np.float32)],  # dtype
        [np.zeros((4, 4, 4), np.uint8)],  # RGBA not supported
        np.zeros((4, 4), np.uint8),  # bare single image is not a batch
    ],
)
def test_grid_errors(images: object) -> None:
    with pytest.raises(ValueError):
        viz.grid(images)  # type: ignore[arg-type]


def test_grid_bad_params() -> None:
    for kwargs in ({"ncols": 0}, {"pad": -1}, {"scale": 0}, {"pad_value": 300}):
        with pytest.raises(ValueError):
            viz.grid([_grey()], **kwargs)


# --------------------------------------------------------------------------------------
# labelled_strip
# --------------------------------------------------------------------------------------


def test_labelled_strip_has_text_below_images() -> None:
    imgs = [_grey(8, 8, 128), _rgb(8, 8), _grey(8, 8, 200)]
    labels = ["12 tok\n18.0 dB", "123 tok\n24.1 dB", "lossless"]
    out = viz.labelled_strip(imgs, labels, scale=4)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[1] > 3 * 8 * 4  # wider than the upscaled images side by side
    assert out.shape[0] > 8 * 4  # taller: label band
    # The upscaled image appears intact.
    found = np.argwhere((out == (10, 200, 30)).all(axis=2))
    assert found.shape[0] == 32 * 32
    image_bottom = found[:, 0].max()
    # Dark text pixels exist below the images, and only there (images are not dark).
    label_area = out[image_bottom + 1 :]
    dark = (label_area.max(axis=2) < 100).sum()
    assert dark > 20
    assert (out[: image_bottom + 1].max(axis=2) < 100).sum() == 0
    # Two-line labels make the band taller than a one-line one.
    one = viz.labelled_strip(imgs, ["a", "b", "c"], scale=4)
    assert out.shape[0] > one.shape[0]


def test_labelled_strip_long_label_widens_column() -> None:
    out = viz.labelled_strip([_grey(2, 2)], ["a fairly long label"], scale=1)
    assert out.shape[1] > 40


def test_labelled_strip_errors() -> None:
    with pytest.raises(ValueError):
        viz.labelled_strip([_grey(), _grey()], ["only one"])
    with pytest.raises(ValueError):
        viz.labelled_strip([], [])
    with pytest.raises(ValueError):
        viz.labelled_strip([_grey()], ["x"], scale=0)


# --------------------------------------------------------------------------------------
# save_png / save_gif
# --------------------------------------------------------------------------------------


def test_save_png_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (5, 7), np.uint8), rng.integers(0, 256, (5, 7, 3), np.uint8)):
        path = tmp_path / "sub" / "x.png"
        viz.save_png(path, arr)
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), arr)
    with pytest.raises(ValueError):
        viz.save_png(tmp_path / "bad.png", np.zeros((5, 7), np.int64))


def _read_gif(path: Path) -> tuple[list[np.ndarray], dict]:
    with Image.open(path) as im:
        info = dict(im.info)
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    return frames, info


def test_save_gif_rgb_exact_colours(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (40, 3), np.uint8)
    frames = [palette[rng.integers(0, 40, (9, 11))] for _ in range(4)]  # 40 colours each
    frames[2] = viz.grid([frames[2][..., 0]], pad=0)  # a grey frame among RGB ones
    path = tmp_path / "a.gif"
    viz.save_gif(path, frames, duration_ms=50, loop=0)
    got, info = _read_gif(path)
    assert len(got) == 4
    assert got[0].shape == (9, 11, 3)
    assert info.get("loop") == 0 and info.get("duration") == 50
    for g, f in zip(got, frames, strict=True):
        np.testing.assert_array_equal(g, f if f.ndim == 3 else np.repeat(f[..., None], 3, 2))


def test_save_gif_grey_mode_l(tmp_path: Path) -> None:
    frames = np.stack([np.full((6, 5), v, np.uint8) for v in (0, 50, 100, 255)])
    frames[:, 0, 0] = 77
    path = tmp_path / "g.gif"
    viz.save_gif(path, frames)
    with Image.open(path) as im:
        # Pillow may read a grey GIF back as 'P' with a grey palette; the pixels matter.
        assert im.size == (5, 6) and im.n_frames == 4
    got, _ = _read_gif(path)
    for g, f in zip(got, frames, strict=True):
        np.testing.assert_array_equal(g, np.repeat(f[..., None], 3, axis=2))


def test_save_gif_many_colours_quantised(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (32, 32, 3), np.uint8) for _ in range(2)]  # > 256 colours
    path = tmp_path / "q.gif"
    viz.save_gif(path, frames)
    got, _ = _read_gif(path)
    assert len(got) == 2 and got[0].shape == (32, 32, 3)
    err = np.abs(got[0].astype(int) - frames[0].astype(int)).mean()
    assert err < 30  # median cut: approximate, not garbage


def test_save_gif_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        viz.save_gif(tmp_path / "e.gif", [])
    with pytest.raises(ValueError):
        viz.save_gif(tmp_path / "e.gif", [_grey(4, 4), _grey(5, 4)])
    with pytest.raises(ValueError):
        viz.save_gif(tmp_path / "e.gif", [np.zeros((4, 4), np.uint16)])
    with pytest.raises(ValueError):
        viz.save_gif(tmp_path / "e.gif", [_grey()], duration_ms=0)
