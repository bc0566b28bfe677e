"""benchmarks/compress_batched.py: a phase cut short by its time limit keeps each finished
worker's slice, and the same command again codes only the slices still missing."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import benchmarks.compress_batched as cb
from tests.data.synthetic import idx_dir
from wavar.compress import compress_many
from wavar.data import datasets
from wavar.model.transformer import WaveletGPT


def squares(root: Path, n: int) -> Path:
    """An MNIST-like idx folder of n bright squares on black: short sequences (noise would
    outrun the model's length, and every token is a model step on this CPU)."""
    x = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        x[i, 8 : 16 + 4 * (i % 2), 8 : 16 + 4 * (i // 2)] = 255 - 40 * i
    idx_dir(root, images=x)
    return root


def run(monkeypatch: pytest.MonkeyPatch, capsys, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", ["compress_batched.py", *argv])
    cb.main()
    return capsys.readouterr().out


@pytest.mark.slow  # worker processes spawn: ~30 s
def test_an_interrupted_phase_runs_only_the_slices_it_lacks(tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path / "cache"))
    datasets.fetch("mnist", squares(tmp_path / "idx", 2))
    files, report = tmp_path / "wvc", tmp_path / "report.json"
    args = ["--model", "mnist-small", "--dataset", "mnist", "--n", "2", "--device", "cpu",
            "--rows", "1", "--workers", "2", "--files", str(files), "--out", str(report)]
    x = datasets.load("mnist", "test").x
    model = WaveletGPT.from_pretrained("mnist-small")
    bits: list[float] = []
    whole = compress_many(model, x, "mnist-small", rows=1, code_bits=bits)
    # as if a call had been killed while worker 1 was still coding: worker 0 kept its slice
    # (image 0), nothing of worker 1's (image 1) and no encode.json were written
    settings = dict(model="mnist-small", dataset="mnist", n=2, rows=1, workers=2)
    cb.Slices(files, settings).keep("encode", dict(rank=0, start=0, n=1, bits=bits[:1], t0=0.0,
                                                   t1=1.0, call="earlier"), whole[:1])
    with pytest.raises(SystemExit, match="has no encode.json"):
        run(monkeypatch, capsys, *args, "--phase", "decode")
    printed = run(monkeypatch, capsys, *args, "--phase", "encode")
    assert "encode: slices [0] already done" in printed and "running [1]" in printed
    assert [(files / f"{i:05d}.wvc").read_bytes() for i in range(2)] == whole
    rep = json.loads(report.read_text())
    # two calls: no one figure of images/s, each call's slices instead
    assert rep["encode_images_per_s"] is None
    assert [c["slices"] for c in rep["encode_calls"]] == [[0], [1]]
    assert rep["payload_over_model"] < 0.05

    # a record of other settings is not taken for this run's
    (files / "decode_0.json").write_text(json.dumps(dict(
        rank=0, start=0, n=1, exact=1, t0=0, t1=1, call="x", settings={"rows": 99})))
    printed = run(monkeypatch, capsys, *args, "--phase", "decode")
    assert "already done" not in printed
    rep = json.loads(report.read_text())
    assert rep["complete"] and rep["round_trip_exact"].startswith("2/2")
    assert rep["alone_exact"] == [True, True] and rep["decode_images_per_s"] > 0
