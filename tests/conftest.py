"""Shared fixtures: small real-looking images, and CIFAR-10 test images when available."""

from pathlib import Path

import numpy as np
import pytest

CIFAR_TEST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10" / "test.npz"


def smooth_image(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    """A blurry random image plus an edge: wavelet-sparse like a photo, not like noise."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(channels):
        a, b, c = rng.normal(size=3)
        img = 128 + 60 * np.sin(3 * a * xx + 2 * b * yy) + 40 * (xx + c * yy > 0.5)
        img += rng.normal(scale=6, size=(h, w))
        out.append(img)
    img = np.clip(np.stack(out, -1), 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def cifar_images() -> np.ndarray:
    """Up to 16 CIFAR-10 test images if the shared shard exists, else synthetic ones."""
    if CIFAR_TEST.exists():
        return np.load(CIFAR_TEST)["x"][:16]
    rng = np.random.default_rng(0)
    return np.stack([smooth_image(rng, 32, 32, 3) for _ in range(16)])


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Small models gain nothing from intra-op threads, and on a shared 2-core machine the
    # threads' spin-waiting makes a busy neighbour slow the tests down five-fold.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
