import hashlib
import os
from pathlib import Path

import pytest

from wavar.atomic import write_atomic


def test_write_atomic_replaces_whole_file_and_returns_its_digest(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "f.bin"  # missing folders are made
    assert write_atomic(target, lambda f: f.write(b"old")) is None
    got = write_atomic(target, lambda f: (f.write(b"new "), f.write(b"bytes")), digest=True)
    assert target.read_bytes() == b"new bytes"
    assert got == hashlib.sha256(b"new bytes").hexdigest()
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_write_atomic_leaves_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.bin"
    write_atomic(target, lambda f: f.write(b"old"))

    def fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]  # temp file removed


def test_write_atomic_file_mode_follows_umask(tmp_path: Path) -> None:
    # not mkstemp's 0600: a shared cache stays readable to the group and others
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
