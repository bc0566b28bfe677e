"""Pictures for people: image grids, labelled strips, PNG and animated GIF output.

All functions take uint8 images, grey ``(H, W)`` or RGB ``(H, W, 3)``; ``(H, W, 1)`` is
accepted as grey. Inputs are validated up front so a bad call fails with a clear
``ValueError`` rather than a cryptic Pillow or NumPy error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["grid", "labelled_strip", "save_gif", "save_png"]


def prefix_lengths(total: int, steps: int) -> list[int]:
    """``steps`` log-spaced prefix lengths ending with the full sequence (the frames of a
    coarse-to-fine display: early tokens change the image most)."""
    if total == 0:
        return [0]
    ks = np.unique(np.geomspace(max(1, total / 2 ** (steps - 1)), total, steps).astype(int))
    return [int(k) for k in ks]


def _check(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate one uint8 grey/RGB image; return it as ``(H, W)`` or ``(H, W, 3)``."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"{what}: expected shape (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{what}: empty image of shape {img.shape}")
    return img


def _check_many(images: Sequence[np.ndarray] | np.ndarray, what: str) -> list[np.ndarray]:
    """Validate a non-empty list of same-size images; promote all to RGB if any is RGB."""
    if isinstance(images, np.ndarray):
        # A bare array is a batch: (N, H, W) grey or (N, H, W, C). A single (H, W, 3)
        # image would be ambiguous with 3 grey images of width 3, so it is not guessed.
        if images.ndim not in (3, 4):
            raise ValueError(
                f"{what}: an array input must be a batch (N, H, W) or (N, H, W, C), "
                f"got shape {images.shape}; wrap a single image in a list"
            )
    imgs = [_check(im, f"{what}[{i}]") for i, im in enumerate(images)]
    if not imgs:
        raise ValueError(f"{what}: no images given")
    size = imgs[0].shape[:2]
    for i, im in enumerate(imgs):
        if im.shape[:2] != size:
            raise ValueError(f"{what}: image {i} is {im.shape[:2]}, image 0 is {size}")
    if any(im.ndim == 3 for im in imgs):
        imgs = [_to_rgb(im) for im in imgs]
    return imgs


def _to_rgb(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale: each pixel becomes a ``scale`` x ``scale`` block."""
    if scale == 1:
        return img
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def _check_scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return int(scale)


def grid(
    images: Sequence[np.ndarray] | np.ndarray,
    ncols: int | None = None,
    pad: int = 2,
    scale: int = 1,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile equal-size images into a grid, row by row.

    Parameters
    ----------
    images : sequence of np.ndarray or np.ndarray
        uint8 images of equal height and width; grey and RGB may be mixed (the grid is
        then RGB). A bare array is read as a batch ``(N, H, W)`` or ``(N, H, W, C)``.
    ncols : int, optional
        Number of columns; default ``ceil(sqrt(N))``. Capped at N.
    pad : int, optional
        Pixels of padding between cells and around the border.
    scale : int, optional
        Nearest-neighbour upscale factor applied to each image (not to the padding).
    pad_value : int, optional
        Grey level 0..255 of the padding (white by default).

    Returns
    -------
    np.ndarray
        uint8 ``(R, C)`` or ``(R, C, 3)`` with ``rows = ceil(N / ncols)``,
        ``R = rows * H * scale + (rows + 1) * pad`` and
        ``C = ncols * W * scale + (ncols + 1) * pad``. Unused cells are ``pad_value``.

    Raises
    ------
    ValueError
        On empty input, mismatched sizes, non-uint8 dtype or bad parameters.
    """
    imgs = _check_many(images, "grid")
    scale = _check_scale(scale)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in 0..255, got {pad_value}")
    n = len(imgs)
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    h, w = imgs[0].shape[0] * scale, imgs[0].shape[1] * scale
    out_shape = (nrows * h + (nrows + 1) * pad, ncols * w + (ncols + 1) * pad) + imgs[0].shape[2:]
    out = np.full(out_shape, pad_value, dtype=np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = _upscale(im, scale)
    return out


def _load_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in default font: no font files needed, works offline everywhere.
    return ImageFont.load_default()


def labelled_strip(
    images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str], scale: int = 4
) -> np.ndarray:
    """Images side by side, each upscaled, with a text label centred under each.

    Parameters
    ----------
    images : sequence of np.ndarray or np.ndarray
        uint8 grey/RGB images of equal size (e.g. decodes of growing token prefixes).
    labels : sequence of str
        One label per image; may contain newlines (e.g. ``"123 tok\\n24.1 dB"``).
    scale : int, optional
        Nearest-neighbour upscale factor, so tiny images (28x28, 32x32) are legible
        next to the text.

    Returns
    -------
    np.ndarray
        uint8 RGB ``(H', W', 3)``: white background, black text. Each column is as wide
        as the larger of the upscaled image and its label; the label band below the
        images is as tall as the tallest label.

    Raises
    ------
    ValueError
        On empty input, mismatched sizes, wrong dtype, or ``len(labels) != len(images)``.
    """
    imgs = [_to_rgb(im) for im in _check_many(images, "labelled_strip")]
    scale = _check_scale(scale)
    labels = list(labels)
    if len(labels) != len(imgs):
        raise ValueError(f"labelled_strip: {len(imgs)} images but {len(labels)} labels")

    font = _load_font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # FreeType fonts give float boxes; round outward to whole pixels.
    boxes = [
        tuple(math.floor(v) if k < 2 else math.ceil(v) for k, v in enumerate(box))
        for box in (
            measure.multiline_textbbox((0, 0), str(t), font=font, align="center") for t in labels
        )
    ]
    text_w = [b[2] - b[0] for b in boxes]
    text_h = max(b[3] - b[1] for b in boxes)

    pad = 4  # white space between columns, around the strip and between image and text
    h, w = imgs[0].shape[0] * scale, imgs[0].shape[1] * scale
    col_w = [max(w, tw) for tw in text_w]
    width = sum(col_w) + pad * (len(imgs) + 1)
    height = pad + h + pad + text_h + pad

    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = pad
    xs = []
    for im, cw in zip(imgs, col_w, strict=True):
        ix = x + (cw - w) // 2
        canvas[pad : pad + h, ix : ix + w] = _upscale(im, scale)
        xs.append(x)
        x += cw + pad

    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for label, box, tw, cw, x0 in zip(labels, boxes, text_w, col_w, xs, strict=True):
        # Subtract the bbox origin: fonts draw with an offset from the anchor point.
        tx = x0 + (cw - tw) // 2 - box[0]
        ty = pad + h + pad - box[1]
        draw.multiline_text((tx, ty), str(label), fill=(0, 0, 0), font=font, align="center")
    return np.asarray(pil).copy()


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save a uint8 grey or RGB image as PNG (creating parent directories).

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    array : np.ndarray
        uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
    """
    img = _check(array, "save_png")
    _mkdir_parent(path)
    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG")


def _mkdir_parent(path: str | os.PathLike[str]) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def _to_palette(rgb: np.ndarray) -> Image.Image:
    """Convert an RGB frame to a 'P' image, exactly when it has <= 256 colours."""
    flat = rgb.reshape(-1, 3)
    colours, index = np.unique(flat, axis=0, return_inverse=True)
    if len(colours) <= 256:
        # Exact palette: Pillow's own conversion would run median cut and could shift
        # colours even when the frame fits in a GIF palette.
        h, w = rgb.shape[:2]
        im = Image.frombytes("P", (w, h), index.reshape(h, w).astype(np.uint8).tobytes())
        im.putpalette(colours.astype(np.uint8).tobytes())
        return im
    # Too many colours: median-cut palette, no dithering so that static regions do not
    # shimmer from frame to frame.
    return Image.fromarray(rgb).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )


def save_gif(
    path: str | os.PathLike[str],
    frames: Sequence[np.ndarray] | np.ndarray,
    duration_ms: int = 80,
    loop: int = 0,
) -> None:
    """Save frames as an animated GIF.

    All-grey frames are written in mode 'L' (grey palette, exact). If any frame is RGB,
    all are made RGB and each gets its own palette: exact when the frame has at most 256
    colours, median cut without dithering otherwise.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (parent directories are created).
    frames : sequence of np.ndarray or np.ndarray
        uint8 frames of equal size; a bare array is a batch ``(N, H, W[, C])``.
    duration_ms : int, optional
        Display time of each frame.
    loop : int, optional
        Number of loops, 0 = forever.

    Notes
    -----
    Pillow merges consecutive identical frames into one (adding their durations), so
    a reader may see fewer frames than were given; the timing is preserved.

    Raises
    ------
    ValueError
        On empty input, mismatched sizes, wrong dtype or non-positive duration.
    """
    imgs = _check_many(frames, "save_gif")
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    if loop < 0:
        raise ValueError(f"loop must be >= 0, got {loop}")
    if imgs[0].ndim == 2:
        pil = [Image.fromarray(np.ascontiguousarray(im)) for im in imgs]  # uint8 2-D -> 'L'
    else:
        pil = [_to_palette(im) for im in imgs]
    _mkdir_parent(path)
    pil[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=pil[1:],
        duration=int(duration_ms),
        loop=int(loop),
    )
