"""The dataset cache (wavar.data.cache): layout, reproducible files, damage and its message."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.data.synthetic import idx_dir
from wavar.data import datasets as ds
from wavar.data.cache import _sha256
from wavar.errors import DatasetError


def test_cache_round_trip_meta_and_reuse(tmp_path: Path, monkeypatch, cache: Path) -> None:
    raw = idx_dir(tmp_path / "fm")
    out = ds.fetch("fashion-mnist", tmp_path / "fm")
    assert out == cache / "datasets" / "fashion-mnist"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "train.npz"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == "fashion-mnist" and meta["image_shape"] == [28, 28]
    assert meta["splits"]["train"]["count"] == 6
    assert meta["splits"]["train"]["sha256"] == _sha256(out / "train.npz")
    assert sum(meta["splits"]["test"]["label_counts"]) == 4
    with np.load(out / "train.npz") as d:
        assert d["x"].dtype == np.uint8 and d["y"].dtype == np.int64
        np.testing.assert_array_equal(d["x"], raw["train"][0])

    def boom(*a, **k):
        raise AssertionError("a cached dataset was read again")

    monkeypatch.setattr(ds, "_read_idx_splits", boom)
    assert ds.fetch("fashion-mnist", tmp_path / "fm") == out  # cached: not re-read
    monkeypatch.undo()
    monkeypatch.setenv("WAVAR_CACHE", str(cache))
    ds.fetch("fashion-mnist", tmp_path / "fm", force=True)
    again = json.loads((out / "meta.json").read_text())
    assert again["splits"] == meta["splits"]  # same data, same bytes: reproducible files
    with zipfile.ZipFile(out / "train.npz") as zf:  # no wall-clock time inside
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    monkeypatch.setattr(ds, "_read_idx_splits", boom)
    with pytest.raises(AssertionError):
        ds.fetch("fashion-mnist", tmp_path / "fm", force=True)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_cache_file_says_refetch(tmp_path: Path, damage: str) -> None:
    idx_dir(tmp_path / "fm")
    out = ds.fetch("fashion-mnist", tmp_path / "fm")
    f = out / "train.npz"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    else:
        f.unlink()
    with pytest.raises(DatasetError, match="wavar data fetch fashion-mnist --force"):
        ds.load("fashion-mnist")
    ds.load("fashion-mnist", "test")  # the other split is intact


def test_corrupt_meta_and_bad_names(tmp_path: Path) -> None:
    idx_dir(tmp_path / "fm")
    out = ds.fetch("fashion-mnist", tmp_path / "fm")
    (out / "meta.json").write_text('{"format": "wavar-data')
    with pytest.raises(DatasetError, match="--force"):
        ds.load("fashion-mnist")
    with pytest.raises(DatasetError, match="not cached"):
        ds.load("folder-unknown")
    with pytest.raises(DatasetError, match="split"):
        ds.load("mnist", "valid")
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'"):
        ds.fetch("svhn")
