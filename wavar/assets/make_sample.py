"""Draw the bundled sample image (a small made-up landscape), so no photo is copied in."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def draw(size: int = 64) -> Image.Image:
    y = np.linspace(0, 1, size)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 235]) + y * np.array([200, 225, 250])
    img = Image.fromarray(np.broadcast_to(sky, (size, size, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    s = size / 64
    d.ellipse([44 * s, 6 * s, 56 * s, 18 * s], fill=(255, 220, 80))
    d.polygon([(0, 40 * s), (20 * s, 28 * s), (40 * s, 38 * s), (64 * s, 30 * s),
               (64 * s, 64 * s), (0, 64 * s)], fill=(70, 140, 60))
    d.rectangle([12 * s, 38 * s, 30 * s, 54 * s], fill=(180, 60, 50))
    d.polygon([(10 * s, 38 * s), (21 * s, 28 * s), (32 * s, 38 * s)], fill=(90, 50, 40))
    d.rectangle([18 * s, 45 * s, 23 * s, 54 * s], fill=(60, 40, 30))
    return img


if __name__ == "__main__":
    draw().save(Path(__file__).with_name("sample.png"))
