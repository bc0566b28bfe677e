"""``wavar eval`` end to end, with tiny networks patched in for Inception and the classifier."""

import dataclasses
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
    monkeypatch.setattr(fidmod, "load_network", lambda device="cpu", path=None: net)
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
    assert f["fid_network"] == r["fid_network"] == "standard fp32"
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
    # --no-floor: FID without the training split
    (toy / "cache" / "datasets" / "toy" / "train.npz").unlink()
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy", "--fid", "--no-floor",
                     "-o", str(out)]) == 0
    f = json.loads(out.read_text())["fid"]
    assert abs(f["fid"]) < 1e-6 and "floor" not in f and "floor_fid" not in f


def test_several_samples_files_are_joined(toy, capsys):
    x, y = shapes(40, 1)  # the toy test set in two halves: FID ~ 0 only if both are read
    halves = [toy / "a.npz", toy / "b.npz"]
    np.savez(halves[0], x=x[:20], y=y[:20])
    np.savez(halves[1], x=x[20:], y=y[20:])
    out = toy / "joined.json"
    assert cli.main(["eval", "--samples", *map(str, halves), "--dataset", "toy", "--fid",
                     "--no-floor", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["fid"]["samples"] == 40 and abs(r["fid"]["fid"]) < 1e-6
    assert r["samples_file"] == f"{halves[0]}, {halves[1]}"
    assert r["command"].startswith(f"wavar eval --samples {halves[0]} {halves[1]} --dataset toy")
    np.savez(halves[1], x=np.zeros((5, 8, 8), np.uint8), y=np.zeros(5, np.int64))
    assert cli.main(["eval", "--samples", *map(str, halves), "--dataset", "toy", "--cas",
                     "-o", str(out)]) == 1
    assert "different shapes" in one_line_error(capsys)


def test_model_mode(toy, monkeypatch, capsys):
    from wavar.cli import eval as evalcli

    seen = {}

    def fake_generate(model, n, options, seed, batch, log=print):  # tiled labels
        seen.update(cfg=options.cfg, temperature=options.temperature, ll_init=options.ll_init,
                    top_p=options.top_p)
        y = np.arange(n) % model.config.num_classes
        return shapes(n, seed)[0], y

    monkeypatch.setattr(evalcli, "generate_samples", fake_generate)
    out = toy / "m.json"
    assert cli.main(["eval", "--model", "mnist-small", "--dataset", "toy10", "--cas", "--fid",
                     "--n", "20", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "mnist-small" and r["samples"] == 20 and r["cfg"] == 1.0
    assert r["samples_per_class"] == [2] * 10 and r["sample_batch"] == 100
    with np.load(toy / "m_samples.npz") as z:  # the samples, for --samples later
        assert z["x"].shape == (20, 28, 28) and list(z["y"][:11]) == [*range(10), 0]
    assert cli.main(["eval", "--model", "mnist-small", "--dataset", "toy10", "--cas", "--n", "20",
                     "--cfg", "3", "--temperature", "0.8", "-o", str(out)]) == 0
    assert seen == {"cfg": 3.0, "temperature": 0.8, "ll_init": False, "top_p": None}
    assert json.loads(out.read_text())["temperature"] == 0.8
    # the progress line names the settings the report records, unset ones left out
    assert "(cfg 3.0, temperature 0.8, seed 0, cpu, batch 100)" in capsys.readouterr().out
    assert cli.main(["eval", "--model", "mnist-small", "--dataset", "toy10", "--cas", "--n", "20",
                     "--top-p", "0.99", "-o", str(out)]) == 0
    assert seen["top_p"] == 0.99 and json.loads(out.read_text())["top_p"] == 0.99
    assert "temperature 1.0, top-p 0.99, seed" in capsys.readouterr().out
    seen.clear()  # a nucleus that keeps nothing fails before any sampling
    assert cli.main(["eval", "--model", "mnist-small", "--dataset", "toy10", "--cas", "--n", "20",
                     "--top-p", "0", "-o", str(out)]) == 1
    assert "top_p must be > 0" in one_line_error(capsys) and not seen
    assert cli.main(["eval", "--model", "mnist-small", "--dataset", "toy10", "--cas", "--n", "20",
                     "--ll-init", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert seen["ll_init"] is True and r["ll_init"] is True and "--ll-init" in r["command"]
    assert ", ll-init, seed 0" in capsys.readouterr().out


def test_nll(toy):
    out = toy / "nll.json"
    assert cli.main(["eval", "--model", "mnist-small", "--dataset", "toy10", "--nll", "--nll-limit",
                     "3", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["nll"]["images"] == 3 and r["nll"]["bits_per_token"] > 0
    assert "fid" not in r and "cas" not in r and "grid" not in r


def test_generate_samples_tiles_labels(monkeypatch):
    from wavar.cli.eval import generate_samples
    from wavar.model.transformer import WaveletGPT
    from wavar.sample import SamplingOptions
    from wavar.sample import generate as gen

    real, calls, inits, tops = gen.generate, [], [], []

    def short(model, labels, options):  # the first 40 tokens only (coarse images), for speed
        calls.append(list(labels))
        inits.append(options.ll_init)
        tops.append(options.top_p)
        return real(model, labels, dataclasses.replace(options, max_tokens=40))

    monkeypatch.setattr(gen, "generate", short)
    model = WaveletGPT.from_pretrained("mnist-small")
    plain = SamplingOptions()
    x, y = generate_samples(model, 13, plain, seed=0, batch=5, log=None)
    assert x.shape == (13, 28, 28) and x.dtype == np.uint8 and list(y) == [*range(10), 0, 1, 2]
    assert calls == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 1, 2]]
    again, _ = generate_samples(model, 13, plain, seed=0, batch=5, log=None)
    assert np.array_equal(x, again)  # seeded
    assert inits == [False] * 6
    # --ll-init reaches the sampler: each sample starts from a training image's LL band
    started, _ = generate_samples(model, 5, SamplingOptions(ll_init=True), seed=0, batch=5,
                                  log=None)
    assert inits[-1] is True and not np.array_equal(started, x[:5])
    # top_p reaches the sampler: a nucleus that keeps only the most likely token changes
    # the samples of the same seeds
    greedy, _ = generate_samples(model, 5, SamplingOptions(top_p=1e-6), seed=0, batch=5,
                                 log=None)
    assert tops[-1] == 1e-6 and not np.array_equal(greedy, x[:5])


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


@pytest.fixture
def tiny_model(tmp_path) -> str:
    """A tiny random 10-class model for 28 x 28 images (the haar language of the MNIST one)."""
    from wavar.model.transformer import WaveletGPT, config_from_preset

    torch.manual_seed(0)
    cfg = config_from_preset("tiny", max_seq_len=1806, num_classes=10,
                             codec={"wavelet": "haar", "final_threshold": 0.125,
                                    "image_shape": [28, 28]})
    model = WaveletGPT(cfg)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # not the uniform law: bits vary
    model.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_rd(toy, tiny_model, capsys):
    out = toy / "rd.json"
    assert cli.main(["eval", "--model", tiny_model, "--dataset", "toy10", "--rd",
                     "--rd-images", "2", "-o", str(out)]) == 0
    r = json.loads(out.read_text())["rd"]
    assert r["images"] == 2 and r["pixels"] == 28 * 28
    pts = r["points"]
    assert [p["budget"] for p in pts][:3] == [16, 23, 32]
    bits = [p["model_bits"] for p in pts]
    assert all(b > 0 for b in bits) and bits == sorted(bits)  # prefixes only grow
    assert bits[-1] == pytest.approx(r["mean_model_bits"])
    assert pts[-1]["tokens"] == pytest.approx(r["mean_tokens"])
    assert pts[-1]["psnr"] > pts[0]["psnr"]
    assert all(p["j2k_payload_bits"] > 0 and p["j2k_psnr"] > 0 for p in pts)
    assert (toy / "rd_rd.png").is_file()
    assert "J2K PSNR" in capsys.readouterr().out


def test_rd_bits_match_nll(toy, tiny_model):
    """Model bits of a full sequence = its code length as the likelihood code measures it."""
    from wavar.data.shards import TokenDataset
    from wavar.eval.likelihood import nll
    from wavar.eval.rd import model_rd
    from wavar.model.transformer import WaveletGPT
    from wavar.sample.generate import codec_of

    model = WaveletGPT.from_pretrained(tiny_model)
    test = load("toy10", "test")
    rd = model_rd(model, test.x[:2], test.y[:2], jpeg2000=False)
    data = TokenDataset.from_sequences(
        codec_of(model), (28, 28), *_tokens(codec_of(model), test.x[:2]), test.y[:2])
    assert rd["mean_model_bits"] == pytest.approx(nll(model, data)["bits_per_image"], rel=1e-5)
    assert "j2k_psnr" not in rd["points"][0]


def test_nll_in_packed_rows_gives_the_same_bits(toy, tiny_model):
    """`wavar eval --nll` on CUDA packs the test sequences (FlexAttention); here, the CPU's
    dense masks of the same rows: the same code lengths as a sequence a row."""
    from wavar.data.shards import TokenDataset
    from wavar.eval.likelihood import nll, packed_row_len
    from wavar.model.transformer import WaveletGPT
    from wavar.sample.generate import codec_of

    model = WaveletGPT.from_pretrained(tiny_model)
    test = load("toy10", "test")
    data = TokenDataset.from_sequences(
        codec_of(model), (28, 28), *_tokens(codec_of(model), test.x[:5]), test.y[:5])
    row = packed_row_len(model)
    assert row % 128 == 0 and row >= 2 * (model.config.max_seq_len + 1)
    one, packed = nll(model, data, batch_size=3), nll(model, data, batch_size=3, pack_len=row)
    assert packed["images"] == one["images"] == 5
    assert packed["bits_per_image"] == pytest.approx(one["bits_per_image"], rel=1e-5)
    assert packed["bits_per_token"] == pytest.approx(one["bits_per_token"], rel=1e-5)


def _tokens(codec, x):
    seqs = codec.encode_batch(x)
    lengths = np.array([len(s) for s in seqs])
    return (np.concatenate([s.tokens for s in seqs]), np.concatenate([[0], np.cumsum(lengths)]),
            np.array([s.header.m_tilde for s in seqs], np.int64))


def test_floor_alone_and_network_kind(toy, capsys):
    out = toy / "floor.json"
    assert cli.main(["eval", "--dataset", "toy", "--floor", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["fid_network"] == "standard fp32"
    f = r["floor"]
    assert f["fid"] > 0 and f["floor"] == "toy train[:60] vs toy test[:40]"
    assert f["protocol"] is False and "samples" not in r
    assert "FID floor" in capsys.readouterr().out
    assert cli.main(["eval", "--dataset", "toy", "--cas"]) == 2
    assert "--model --samples is required" in one_line_error(capsys)


def test_rd_and_floor_usage(toy, tiny_model, capsys):
    npz = toy / "s.npz"
    np.savez(npz, x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.int64))
    assert cli.main(["eval", "--samples", str(npz), "--dataset", "toy", "--rd"]) == 2
    assert "--rd needs --model" in one_line_error(capsys)
    assert cli.main(["eval", "--model", tiny_model, "--dataset", "toy10", "--rd",
                     "--rd-images", "0"]) == 2
    assert "--rd-images must be >= 1" in one_line_error(capsys)


def test_model_mode_batches_to_fit_the_memory(toy, monkeypatch, capsys):
    from wavar.cli import eval as evalcli
    from wavar.model.transformer import WaveletGPT
    from wavar.sample import planning

    batches = []

    def fake_generate(model, n, options, seed, batch, log=print):
        batches.append(batch)
        return shapes(n, seed)[0], np.arange(n) % model.config.num_classes

    monkeypatch.setattr(evalcli, "generate_samples", fake_generate)
    model = WaveletGPT.from_pretrained("mnist-small")
    row = planning.cache_bytes(model, 1, model.config.max_seq_len)
    # room for 30 images' caches: the default batch (100 on the CPU) comes down to 30, said aloud
    monkeypatch.setattr(planning, "free_memory",
                        lambda device: int(30 * row / planning.CACHE_SHARE) + 1)
    out = toy / "m.json"
    args = ["eval", "--model", "mnist-small", "--dataset", "toy10", "--cas", "-o", str(out)]
    assert cli.main([*args, "--n", "50"]) == 0
    assert batches == [30] and json.loads(out.read_text())["sample_batch"] == 30
    assert "--batch 30 (not 100): an image's key/value cache takes" in capsys.readouterr().out
    assert cli.main([*args, "--n", "20"]) == 0  # 20 samples fit in one batch: no change
    assert batches[-1] == 100
    assert cli.main([*args, "--n", "50", "--batch", "40"]) == 2  # named, so not changed
    assert "--batch 40 does not fit" in one_line_error(capsys) and len(batches) == 2
