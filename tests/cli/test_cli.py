"""One smoke test per CLI flag, in-process (each subcommand's main(argv) returns the status)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import smooth_image
from wavar.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def digit(tmp_path, rng) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(smooth_image(rng, 28, 28)).save(path)
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavar: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_encode_decode_show(tmp_path, rng, capsys):
    img = smooth_image(rng, 20, 30, 3)
    src = tmp_path / "img.png"
    Image.fromarray(img).save(src)
    wvr = tmp_path / "img.wvr"
    assert cli.main(["encode", str(src), "-o", str(wvr), "--wavelet", "cdf53"]) == 0
    out = tmp_path / "out.png"
    assert cli.main(["decode", str(wvr), "-o", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), img)  # lossless through files
    assert cli.main(["decode", str(wvr), "-o", str(out), "--tokens", "50"]) == 0
    assert not np.array_equal(np.asarray(Image.open(out)), img)
    strip, gif = tmp_path / "strip.png", tmp_path / "a.gif"
    assert cli.main(["show", str(src), "-o", str(strip), "--gif", str(gif), "--steps", "4",
                     "--language", "zerotree", "--refinement", "immediate",
                     "--final-threshold", "0.25", "--mode", "L"]) == 0
    assert Image.open(strip).size[0] > 4 * 30 and Image.open(gif).n_frames > 4


def test_codec_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.wvr"
    bad.write_bytes(b"WVAR\x01" + bytes(40))
    assert cli.main(["decode", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert "truncated" in one_line_error(capsys)
    assert cli.main(["encode", str(tmp_path / "missing.png"), "-o", str(bad)]) == 1
    assert "no such image" in one_line_error(capsys)
    assert cli.main(["encode", str(bad), "-o", str(bad), "--final-threshold", "0.3"]) == 1
    one_line_error(capsys)
    assert cli.main(["nonsense"]) == 2
    assert cli.main(["show"]) == 2


SAMPLE = ["sample", "--model", "mnist-small", "--n", "2", "--tokens", "40"]


@pytest.mark.parametrize("flags", [
    ["--class", "3"],
    ["--classes", "all", "--n", "1"],
    ["--classes", "1,7", "--cfg", "2.0"],
    ["--class", "0", "--temperature", "0.8", "--top-k", "2", "--top-p", "0.9", "--seed", "3"],
    ["--class", "5", "--planes", "2"],
])
def test_sample_flags(flags, tmp_path):
    out = tmp_path / "g.png"
    assert cli.main([*SAMPLE, *flags, "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 28


def test_sample_conditioning_and_outputs(tmp_path, digit):
    out, gif, npz = tmp_path / "g.png", tmp_path / "g.gif", tmp_path / "s.npz"
    assert cli.main([*SAMPLE, "--class", "2", "--prefix-image", str(digit), "--prefix-planes",
                     "2", "-o", str(out), "--gif", str(gif), "--npz", str(npz)]) == 0
    data = np.load(npz)
    assert data["x"].shape == (2, 28, 28) and list(data["y"]) == [2, 2]
    mask = tmp_path / "mask.png"
    m = np.zeros((28, 28), np.uint8)
    m[:, :14] = 255
    Image.fromarray(m).save(mask)
    assert cli.main([*SAMPLE, "--class", "4", "--image", str(digit), "--mask", str(mask),
                     "-o", str(out)]) == 0
    assert cli.main([*SAMPLE, "--class", "4", "--image", str(digit), "--prefix-tokens", "30",
                     "-o", str(out)]) == 0


def test_sample_errors(tmp_path, digit, capsys):
    out = str(tmp_path / "g.png")
    assert cli.main([*SAMPLE, "--class", "cat", "-o", out]) == 2
    assert "unknown class" in one_line_error(capsys)
    assert cli.main(["sample", "--model", "no-such-model", "-o", out]) == 1
    assert "unknown model" in one_line_error(capsys)
    assert cli.main([*SAMPLE, "--n", "-1", "-o", out]) == 2
    one_line_error(capsys)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    assert cli.main([*SAMPLE, "--image", str(digit), "--mask", str(small), "-o", out]) == 2
    assert "mask" in one_line_error(capsys)
    assert cli.main([*SAMPLE, "--prefix-planes", "2", "-o", out]) == 2
    one_line_error(capsys)
    assert cli.main([*SAMPLE, "--image", str(digit), "--prefix-planes", "2", "--prefix-tokens",
                     "30", "-o", out]) == 2  # which would win is not a guess to make
    assert "not allowed with argument" in one_line_error(capsys)
    assert cli.main([*SAMPLE, "--temperature", "0", "-o", out]) == 2  # the settings' own check
    assert "temperature must be > 0" in one_line_error(capsys)


def test_sample_a_raster_model_keeps_the_top_half_of_an_image_and_refuses_planes(
        tmp_path, digit, capsys):
    out, npz = str(tmp_path / "g.png"), tmp_path / "s.npz"
    raster = ["sample", "--model", "fashion-mnist-raster", "--class", "1", "--n", "1"]
    assert cli.main([*raster, "--prefix-image", str(digit), "-o", out, "--npz", str(npz)]) == 0
    assert "first 392 pixel values (its top half" in capsys.readouterr().out
    kept = np.asarray(Image.open(digit).convert("L"))[:14]
    assert np.array_equal(np.load(npz)["x"][0, :14], kept)
    assert cli.main([*raster, "--planes", "2", "-o", out]) == 1
    assert "no bit-planes" in one_line_error(capsys)
    assert cli.main([*raster, "--prefix-image", str(digit), "--prefix-planes", "1",
                     "-o", out]) == 2
    assert "--prefix-tokens N" in one_line_error(capsys)


def test_sample_verbose_prints_the_plan(tmp_path, capsys):
    assert cli.main([*SAMPLE, "--class", "1", "-v", "-o", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "sampling plan:" in out
    for line in ("loop      cpu", "step      model", "attention pytorch", "graphs    none",
                 "draw      pytorch"):
        assert line in out
    assert "grammar on the host: the model is on the CPU" in out


@pytest.mark.slow  # samples 20 images with the bundled model: 14-34 s on 2 busy cores
def test_the_readme_main_job_runs(tmp_path, monkeypatch):
    """The README's first command is `make demo`; run its wavar line as the Makefile has it."""
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:")[1]
    line = next(ln.strip() for ln in recipe.splitlines() if "wavar " in ln)
    argv = re.sub(r"^\$\(VENV\)/bin/wavar\s+", "", line).split()
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 0
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())


def test_plot_learning_curves(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "bits_per_token": 1 / s, "elapsed_s": 6.0 * s} for s in range(1, 5)]
    rows.append({"step": 4, "val_bits_per_token": 0.3, "elapsed_s": 24.0})
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    out = tmp_path / "c.png"
    assert cli.main(["plot", str(run), "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 300
    (run / "metrics.jsonl").write_text("{not json")
    assert cli.main(["plot", str(run), "-o", str(out)]) == 2
    assert "not a JSON line" in one_line_error(capsys)


def test_sample_uses_the_models_recommended_setting_unless_named(tmp_path, capsys):
    from wavar.model.transformer import WaveletGPT

    model = WaveletGPT.from_pretrained("mnist-small")
    model.config.sampling = {"cfg": [1.0, 3.0], "temperature": 0.5}
    model.save_pretrained(tmp_path / "m")
    base = ["sample", "--model", str(tmp_path / "m"), "--class", "3", "--n", "2",
            "--tokens", "60"]

    def images(*flags) -> np.ndarray:
        out = tmp_path / f"s{len(list(tmp_path.glob('*.npz')))}.npz"
        assert cli.main([*base, *flags, "-o", str(tmp_path / "s.png"), "--npz", str(out)]) == 0
        return np.load(out)["x"]

    recommended = images()
    assert "recommended --cfg 1.0,3.0, --temperature 0.5" in capsys.readouterr().out
    assert np.array_equal(recommended, images("--cfg", "1,3", "--temperature", "0.5"))
    assert "recommended" not in capsys.readouterr().out
    assert not np.array_equal(recommended, images("--cfg", "1", "--temperature", "1"))
    images("--cfg", "1")  # one named: the other still recommended
    assert "recommended --temperature 0.5 " in capsys.readouterr().out
    # a recommended filter: said as the option a user would type, and it reaches the draw
    model.config.sampling = {"top_p": 1e-6}
    model.save_pretrained(tmp_path / "m")
    greedy = images("--cfg", "1", "--temperature", "1")
    assert "recommended --top-p 1e-06 " in capsys.readouterr().out
    assert np.array_equal(greedy, images("--cfg", "1", "--temperature", "1", "--top-p", "1e-6"))
