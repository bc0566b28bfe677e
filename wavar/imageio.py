"""Reading and writing image files as uint8 numpy arrays (the one place for file modes)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wavar.errors import ImageError

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def check_image(img: np.ndarray) -> np.ndarray:
    """A uint8 grey (H, W) or RGB (H, W, 3) image, else :class:`ImageError` naming the problem.

    (H, W, 1) counts as grey.
    """
    if not isinstance(img, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ImageError(f"image must be uint8, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ImageError(
            f"image must be grey (H, W) or RGB (H, W, 3), got shape {tuple(img.shape)}"
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"image is empty: shape {tuple(img.shape)}")
    return img


def pil_to_mode(img: Any, mode: str) -> Any:
    """Convert a PIL image to ``mode`` ("L" or "RGB"), blending transparency over white.

    16-bit grey keeps its top 8 bits (rather than clipping); 32-bit int/float grey is clipped
    to 0..255.
    """
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8))
    elif img.mode in ("I", "F"):
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert(mode)


def read_image(path: str | os.PathLike, mode: str | None = None) -> np.ndarray:
    """Read an image file as uint8 grey (H, W) or RGB (H, W, 3).

    ``mode`` None keeps grey files grey and makes everything else RGB; "L" or "RGB" forces.
    """
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be None, 'L' or 'RGB', got {mode!r}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            target = mode or ("L" if img.mode in _GREY_MODES else "RGB")
            return np.asarray(pil_to_mode(img, target), np.uint8).copy()
    except FileNotFoundError:
        raise ImageError(f"no such image file: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"cannot read {path} as an image: {err}") from None
