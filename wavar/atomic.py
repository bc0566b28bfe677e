"""Files written whole or not at all: the one way wavar writes a file another reader may open.

A reader (another rank of a distributed job, a second process, the next run after a crash)
sees either the old file or the complete new one, never half of it:

>>> from wavar.atomic import write_atomic
>>> write_atomic(path, lambda f: f.write(data))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object],
                 digest: bool = False) -> str | None:
    """Write ``path``: ``write(f)`` fills a temporary file beside it (``f`` open for binary
    writing), which is synced to disk and renamed over ``path``; the folder is synced too, so
    the rename survives a crash. If ``write`` raises, the temporary is removed and ``path`` is
    as it was. Missing folders are made. Returns the sha256 of the bytes written if ``digest``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own (writers in other processes may race for the same path), and not
    # mkstemp: its 0600 mode would make a shared cache unreadable to others; 0666 & ~umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        sha = None
        if digest:
            with open(tmp, "rb") as f:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)
    return sha


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform or file system without folder handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
