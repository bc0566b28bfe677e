"""CAS (wavar.eval.cas) on tiny synthetic data: two classes of simple shapes."""

import numpy as np
import pytest
import torch

from wavar.data.datasets import ImageDataset
from wavar.errors import CheckpointError, WavarError
from wavar.eval import cas as casmod
from wavar.eval.cas import (
    SmallCNN,
    cas,
    classifier_accuracy,
    classifier_path,
    fit_classifier,
    load_classifier,
    train_classifier,
)


def shapes(n: int, seed: int, size: int = 28, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a filled square; class 1: a hollow ring; random place, size and noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    x = np.empty((n, size, size), np.uint8)
    for i in range(n):
        r = rng.integers(4, 8)
        cy, cx = rng.integers(r + 1, size - r - 1, 2)
        if y[i] == 0:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        else:
            d = np.hypot(yy - cy, xx - cx)
            mask = (d <= r) & (d >= r - 2)
        img = 30 + 200 * mask + rng.normal(0, 15, (size, size))
        x[i] = np.clip(img, 0, 255)
    if rgb:
        x = np.repeat(x[..., None], 3, -1)
    return x, y


@pytest.fixture(scope="module")
def trained() -> SmallCNN:
    # module fixtures run before conftest's one-thread fixture; threads would only spin here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = shapes(384, 0)
    model = fit_classifier(x, y, 2, epochs=4, batch_size=32, lr=5e-3)
    torch.set_num_threads(n)
    return model


def test_learns_separable_classes(trained):
    x, y = shapes(200, 1)
    acc, per_class = classifier_accuracy(trained, x, y)
    assert acc > 0.9
    assert per_class.shape == (2,) and np.all(per_class > 0.8)
    assert acc == pytest.approx(per_class.mean())  # balanced classes


def test_per_class_nan_for_absent_class(trained):
    x, y = shapes(10, 2)
    acc, per_class = classifier_accuracy(trained, x[y == 0], y[y == 0])
    assert per_class.shape == (2,) and np.isnan(per_class[1]) and per_class[0] == acc


def test_rgb_and_32_pixels():
    x, y = shapes(64, 3, size=32, rgb=True)
    model = fit_classifier(x, y, 2, epochs=1, batch_size=32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    assert classifier_accuracy(model, x, y)[1].shape == (2,)


def test_bad_input(trained):
    x, y = shapes(4, 0)
    with pytest.raises(WavarError, match="uint8"):
        classifier_accuracy(trained, x.astype(np.float32), y)
    with pytest.raises(WavarError, match="integer labels"):
        classifier_accuracy(trained, x, y[:3])
    with pytest.raises(WavarError, match="outside"):
        classifier_accuracy(trained, x, y + 5)


@pytest.fixture
def toy_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path))
    splits = {"train": shapes(384, 0), "test": shapes(100, 1)}
    monkeypatch.setattr(casmod, "load", lambda name, split: ImageDataset(
        name, *splits[split], ["square", "ring"]))
    return "toy"


def test_cache_round_trip_and_cas(toy_dataset, tmp_path):
    model = train_classifier(toy_dataset, epochs=4, batch_size=32, lr=5e-3, log=None)
    path = classifier_path(toy_dataset)
    assert path == tmp_path / "cas" / "toy.pt" and path.is_file()
    assert model.meta["test_accuracy"] > 0.9 and model.meta["classes"] == ["square", "ring"]
    again = load_classifier(toy_dataset, train_if_missing=False)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert again.meta == model.meta
    x, y = shapes(40, 5)
    report = cas(x, y, toy_dataset)  # loads the cached classifier
    assert report["accuracy"] > 0.9
    assert report["real_test_accuracy"] == model.meta["test_accuracy"]
    assert [c["name"] for c in report["per_class"]] == ["square", "ring"]
    assert sum(c["samples"] for c in report["per_class"]) == 40
    # samples all of one class and wrongly labelled: CAS collapses, the ceiling does not
    bad = cas(x[y == 0], np.ones((y == 0).sum(), np.int64), toy_dataset, classifier=again)
    assert bad["accuracy"] < 0.2 and np.isnan(bad["per_class"][0]["accuracy"])
    with pytest.raises(WavarError, match="32x32"):
        cas(shapes(4, 0, size=32)[0], np.zeros(4, np.int64), toy_dataset, classifier=again)


def test_missing_and_corrupt_cache(toy_dataset):
    with pytest.raises(CheckpointError, match="no CAS classifier"):
        load_classifier(toy_dataset, train_if_missing=False)
    path = classifier_path(toy_dataset)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="delete it"):
        load_classifier(toy_dataset)
    torch.save({"meta": {"format": "something else"}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a wavar CAS classifier"):
        load_classifier(toy_dataset)


def test_a_bundled_classifier_is_used_before_the_cache(toy_dataset, tmp_path, monkeypatch):
    from wavar.eval.cas import bundle_classifier

    trained = train_classifier(toy_dataset, epochs=2, batch_size=32, lr=5e-3, log=None)
    bundled = tmp_path / "bundled"
    monkeypatch.setattr(casmod, "BUNDLED", bundled)
    bundle_classifier(trained, bundled / f"{toy_dataset}.safetensors")
    classifier_path(toy_dataset).unlink()  # the cache gone: the bundled one needs no training
    said = []
    got = load_classifier(toy_dataset, train_if_missing=False, log=said.append)
    assert said and "bundled with wavar" in said[0]
    assert got.meta == trained.meta
    for (k, a), b in zip(trained.state_dict().items(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    x, y = shapes(20, 7)
    assert cas(x, y, toy_dataset)["accuracy"] == cas(x, y, toy_dataset,
                                                     classifier=trained)["accuracy"]
    (bundled / f"{toy_dataset}.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="bundled with wavar.*unreadable"):
        load_classifier(toy_dataset)


def test_cifar10s_bundled_classifier_loads():
    model = load_classifier("cifar10", train_if_missing=False, log=None)
    assert model.meta["dataset"] == "cifar10" and model.meta["image_shape"] == [32, 32, 3]
    assert len(model.meta["classes"]) == 10 and model.meta["test_accuracy"] > 0.7
    x = np.zeros((2, 32, 32, 3), np.uint8)
    assert model(casmod._to_input(x, "cpu")).shape == (2, 10)
