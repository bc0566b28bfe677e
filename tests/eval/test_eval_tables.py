"""benchmarks/eval_tables.py on a synthetic results folder: rows, floor, missing entries."""

import json

from benchmarks.eval_tables import DASH, main


def write(path, obj):
    path.write_text(json.dumps(obj))


def test_tables(tmp_path, capsys):
    write(tmp_path / "train_summary.json",
          [{"model": "fm", "params": 1000, "gpus": 2, "train_minutes": 6.0}])
    write(tmp_path / "sample_speed_fm_h200.json",
          {"rows": [{"batch": 1, "images_per_s": 0.1}, {"batch": 1024, "images_per_s": 73.9}]})
    floor = {"fid": 1.234, "kid": 0.0001, "floor": "fm train[:10000] vs fm test[:10000]",
             "protocol": True}
    write(tmp_path / "eval_fm_full.json", {
        "dataset": "fashion-mnist", "model": "fm", "cfg": 1.0, "samples": 10000,
        "parameters": 1000, "command": "wavar eval --model fm --dataset fashion-mnist --fid",
        "fid_network": "fp16-stored (development)",
        "fid": {"fid": 12.5, "kid": 0.004, "protocol": True, "floor_fid": 1.5,
                "fid_network": "fp16-stored (development)"},
        "floor": floor, "cas": {"accuracy": 0.9},
        "nll": {"bits_per_token": 0.5, "bits_per_image": 900.0}})
    write(tmp_path / "eval_other.json", {"dataset": "mnist", "samples_file": "x/theirs.npz",
                                        "samples": 200, "fid": {"fid": 30.0, "protocol": False}})
    (tmp_path / "eval_broken.json").write_text("{not json")
    write(tmp_path / "eval_nodataset.json", {"model": "fm"})
    out = tmp_path / "tables.md"
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    mnist, fm = text.index("## MNIST"), text.index("## Fashion-MNIST")
    assert mnist < fm  # the datasets' fixed order
    fm_rows = [ln for ln in text[fm:].splitlines() if ln.startswith("| ") and "model |" not in ln]
    assert len(fm_rows) == 2
    cells = [c.strip() for c in fm_rows[0].strip("|").split("|")]
    assert cells[:11] == ["fm", "1,000", "12.0", "10,000", "12.50 †", "4.00", "0.900",
                          "0.5000", "900.0", DASH, "73.9"]
    assert "`wavar eval --model fm" in fm_rows[0] and "`eval_fm_full.json`" in fm_rows[0]
    assert "real-data floor (fm train[:10000]" in fm_rows[1] and "1.23" in fm_rows[1]
    mnist_rows = [ln for ln in text[mnist:fm].splitlines() if ln.startswith("| samples")]
    assert len(mnist_rows) == 1 and "30.00 *" in mnist_rows[0]
    assert mnist_rows[0].count(DASH) >= 8


def test_empty_folder(tmp_path):
    assert main(["--results", str(tmp_path)]) == 0
    assert "No evaluation reports" in (tmp_path / "eval_tables.md").read_text()
