"""The dataset cache on disk: where it lives, and how files get into it.

``<cache>`` is ``$WAVAR_CACHE`` or ``~/.cache/wavar``; dataset ``name`` lives in
``<cache>/datasets/<name>/`` as ``{train,test}.npz`` (``x`` uint8 ``(N, H, W)`` or
``(N, H, W, 3)``, ``y`` int64) plus ``meta.json``, which records each file's sha256 and marks
the cache complete. Every file is written atomically (:func:`wavar.atomic.write_atomic`) and
byte-for-byte reproducibly, so concurrent writers of the same data agree. The reading side is
:func:`wavar.data.datasets.read_meta` and :func:`wavar.data.datasets.load`; the rest of wavar's
cache (FID statistics, the CAS classifier, token shards) uses the same helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from wavar.atomic import write_atomic
from wavar.errors import DatasetError

# What meta.json says it is; read_meta refuses a newer version.
_FORMAT = "wavar-dataset"
_VERSION = 1


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


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        digest = write_atomic(out / f"{split}.npz", lambda f, x=x, y=y: _write_npz(f, x=x, y=y),
                              digest=True)
        meta["splits"][split] = {
            "file": f"{split}.npz",
            "count": len(y),
            "shape": list(x.shape),
            "label_counts": np.bincount(y, minlength=len(classes)).tolist(),
            "sha256": digest,
        }
    text = json.dumps(meta, indent=2) + "\n"
    write_atomic(out / "meta.json", lambda f: f.write(text.encode()))
    return out
