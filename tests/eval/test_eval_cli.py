"""``wavar eval`` end to end, with tiny networks patched in for Inception and the classifier."""

import json

import numpy as np
import pytest
import torch

from tests.eval.test_cas import shapes
from tests.eval.test_fid import TinyNet
from wavar.cli import main as cli
from wavar.data.datasets import _store, load
from wavar.eval import cas as casmod
from wavar.eval import fid as fidmod
from wavar.eval.cas import SmallCNN


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavar: error:") and "\n" not in err and "Traceback" not in err
    return err


def toy_classifier(classes: list[str]) -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN(1, len(classes)).eval()
    model.meta = {"classes": classes, "image_shape": [28, 28], "test_accuracy": 0.5,
                  "test_per_class": [0.5] * len(classes)}
    return model


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A cached 2-class dataset 'toy' and a 10-class 'toy10'; no download, no training."""
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path / "cache"))
    _store("toy", {"train": shapes(60, 0), "test": shapes(40, 1)}, ["square", "ring"], "test")
    x, _ = shapes(50, 2)
    y = np.arange(50) % 10
    _store("toy10", {"train": (x[:30], y[:30]), "test": (x[30:], y[30:])},
           [f"c{i}" for i in range(10)], "test")
    net = TinyNet()
    monkeypatch.setattr(fidmod, "load_network", lambda device="cpu": net)
    monkeypatch.setattr(casmod, "load_classifier",
                        lambda dataset, device="cpu": toy_classifier(load(dataset).classes))
    return tmp_path


def test_samples_mode(toy, capsys):
    x, y = shapes(40, 1)  # the toy test set itself: FID ~ 0 against it
    npz = toy / "s.npz"
    np.savez(npz, x=x, y=y)
    out = toy / "out" / "report.json"
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy", "--fid", "--cas",
                     "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "CAS" in printed and "square" in printed
    r = json.loads(out.read_text())
    assert {"dataset", "samples", "samples_file", "grid", "fid", "cas", "seconds"} <= set(r)
    f = r["fid"]
    assert {"fid", "kid", "kid_std", "floor_fid", "floor_kid", "samples", "reference", "floor",
            "network", "protocol"} <= set(f)
    assert abs(f["fid"]) < 1e-6 and f["samples"] == 40 and f["reference"] == "toy test[:40]"
    assert f["floor"] == "toy train[:60] vs toy test[:40]" and f["floor_fid"] > 0
    assert f["protocol"] is False
    c = r["cas"]
    assert {"accuracy", "real_test_accuracy", "per_class", "samples"} <= set(c)
    assert [e["samples"] for e in c["per_class"]] == [20, 20]
    assert (toy / "out" / "report_samples.png").is_file()
    assert not (toy / "out" / "report_samples.npz").exists()  # only a model's samples are saved
    # --n takes the first N; CAS alone needs no FID network
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy", "--cas", "--n", "10",
                     "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["cas"]["samples"] == 10 and "fid" not in r


def test_model_mode(toy, monkeypatch):
    from wavar.cli import eval as evalcli

    def fake_generate(model, n, cfg, seed, batch, log=print):  # no sampling: tiled labels
        y = np.arange(n) % model.config.num_classes
        return shapes(n, seed)[0], y

    monkeypatch.setattr(evalcli, "generate_samples", fake_generate)
    out = toy / "m.json"
    assert cli.main(["eval", "--model", "mnist", "--dataset", "toy10", "--cas", "--fid",
                     "--n", "20", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "mnist" and r["samples"] == 20 and r["cfg"] == 1.0
    with np.load(toy / "m_samples.npz") as z:  # the samples, for --samples later
        assert z["x"].shape == (20, 28, 28) and list(z["y"][:11]) == [*range(10), 0]


def test_nll(toy):
    out = toy / "nll.json"
    assert cli.main(["eval", "--model", "mnist", "--dataset", "toy10", "--nll", "--nll-limit",
                     "3", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["nll"]["images"] == 3 and r["nll"]["bits_per_token"] > 0
    assert "fid" not in r and "cas" not in r and "grid" not in r


def test_generate_samples_tiles_labels(monkeypatch):
    from wavar.cli.eval import generate_samples
    from wavar.model.transformer import WaveletGPT
    from wavar.sample import generate as gen

    real, calls = gen.generate, []

    def short(model, labels, **kw):  # the first 40 tokens only (coarse images), for speed
        calls.append(list(labels))
        return real(model, labels, max_tokens=40, **kw)

    monkeypatch.setattr(gen, "generate", short)
    model = WaveletGPT.from_pretrained("mnist")
    x, y = generate_samples(model, 13, cfg=1.0, seed=0, batch=5, log=None)
    assert x.shape == (13, 28, 28) and x.dtype == np.uint8 and list(y) == [*range(10), 0, 1, 2]
    assert calls == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 1, 2]]
    again, _ = generate_samples(model, 13, cfg=1.0, seed=0, batch=5, log=None)
    assert np.array_equal(x, again)  # seeded


@pytest.mark.parametrize("content, match", [
    ({"x": np.zeros((4, 28, 28), np.uint8)}, "no 'y' array"),
    ({"x": np.zeros((4, 28, 28), np.float32), "y": np.zeros(4, np.int64)}, "must be uint8"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(4, np.float64)}, "integer labels"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(3, np.int64)}, "integer labels"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.full(4, 7)}, "labels outside 0..1"),
])
def test_bad_samples_file(toy, capsys, content, match):
    npz = toy / "bad.npz"
    np.savez(npz, **content)
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy", "--cas",
                     "-o", str(toy / "r.json")]) == 1
    assert match in one_line_error(capsys)


def test_usage_errors(toy, capsys):
    npz = toy / "s.npz"
    np.savez(npz, x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.int64))
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy"]) == 2
    assert "at least one metric" in one_line_error(capsys)
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy", "--nll"]) == 2
    assert "--nll needs --model" in one_line_error(capsys)
    assert cli.main(["eval", "--samples", str(npz), "--fid"]) == 2
    one_line_error(capsys)
    assert cli.main(["eval", "--samples", str(toy / "missing.npz"), "--dataset", "toy",
                     "--cas"]) == 1
    assert "cannot read samples file" in one_line_error(capsys)
    for name, data in (("a.npy", None), ("b.npz", b"PK\x03\x04 not a zip")):
        bad = toy / name
        if data is None:
            np.save(bad, np.zeros(3))
        else:
            bad.write_bytes(data)
        assert cli.main(["eval", "--samples", str(bad), "--dataset", "toy", "--cas"]) == 1
        assert "cannot read samples file" in one_line_error(capsys)
    assert cli.main(["--help"]) == 0 and "eval" in capsys.readouterr().out
