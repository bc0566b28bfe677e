"""Markdown tables of the evaluation results, one per dataset, for BENCHMARKS.md.

Reads, in ``benchmarks/results/eval/`` (or ``--results DIR``):

* ``eval_*.json``: ``wavar eval`` reports (one row each; dataset and model from the report);
* ``train_summary.json`` (``benchmarks/train_summary.py``): parameters and training minutes;
* ``sample_speed_<model>_h200.json`` (``benchmarks/sample_speed.py``): images/s at batch 1024;

the last two from DIR itself or, where it has none, from its sibling topic folders
(``../train/``, ``../sampling/``); and writes ``eval_tables.md`` into DIR (and prints it).
Every row names the command that made its numbers and the raw file; a missing number prints
as "—". FIDs from fewer than the protocol's 10,000 samples, or from the fp16-stored
development network, are marked.

    PYTHONPATH=. .venv/bin/python benchmarks/eval_tables.py [--results DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "eval"
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
DASH = "—"
COLUMNS = ["model", "params", "train GPU-min", "samples", "FID", "KID x1000", "CAS",
           "bits/token", "bits/image", "bits/dim", "images/s (H200, b1024)", "command",
           "result file"]


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    return format(v, fmt)


def _key(name) -> str:
    """A model's table key: its zoo name, or the folder name of a path."""
    if not name:
        return ""
    p = Path(str(name))
    return p.parent.name if p.name in ("model", "model.safetensors") else p.name


def _beside(results: Path, topic: str, pattern: str) -> Path:
    """The folder holding another topic's files: ``results`` itself where it holds any (one flat
    folder), else its sibling topic folder (``benchmarks/results/<topic>/``)."""
    return results if any(results.glob(pattern)) else results.parent / topic


def load_training(results: Path) -> dict[str, dict]:
    rows = _read(_beside(results, "train", "train_summary.json") / "train_summary.json") or []
    return {r["model"]: r for r in rows if isinstance(r, dict) and "model" in r}


def load_speed(results: Path) -> dict[str, tuple[float, str]]:
    """model -> (images/s at the largest batch measured, up to 1024; file name)."""
    out = {}
    for path in sorted(_beside(results, "sampling", "sample_speed_*_h200.json").glob(
            "sample_speed_*_h200.json")):
        data = _read(path)
        if not isinstance(data, dict):
            continue
        rows = [r for r in data.get("rows", []) if r.get("batch", 0) <= 1024
                and "images_per_s" in r]
        if rows:
            best = max(rows, key=lambda r: r["batch"])
            model = path.name[len("sample_speed_"): -len("_h200.json")]
            out[model] = (best["images_per_s"], path.name, best["batch"])
    return out


def report_row(path: Path, r: dict, training: dict, speed: dict) -> dict[str, str]:
    model = _key(r.get("model")) or f"samples: {Path(str(r.get('samples_file', '?'))).name}"
    label = model + (f" (cfg {r['cfg']:g})" if r.get("cfg", 1.0) not in (1.0, None) else "")
    train = training.get(model, {})
    fid, cas, nll = r.get("fid") or {}, r.get("cas") or {}, r.get("nll") or {}
    fid_s = _num(fid.get("fid"), ".2f")
    if fid and not fid.get("protocol"):
        fid_s += " *"
    if (fid.get("fid_network") or r.get("fid_network", "")).startswith("fp16"):
        fid_s += " †"
    kid = fid.get("kid")
    sp = speed.get(model)
    minutes = (train["train_minutes"] * train.get("gpus", 1)
               if "train_minutes" in train else None)
    return {
        "model": label,
        "params": _num(r.get("parameters", train.get("params")), ","),
        "train GPU-min": _num(minutes, ".1f"),
        "samples": _num(r.get("samples"), ","),
        "FID": fid_s if fid else DASH,
        "KID x1000": _num(None if kid is None else 1000 * kid, ".2f"),
        "CAS": _num(cas.get("accuracy"), ".3f"),
        "bits/token": _num(nll.get("bits_per_token"), ".4f"),
        "bits/image": _num(nll.get("bits_per_image"), ".1f"),
        "bits/dim": _num(nll.get("bits_per_dim"), ".4f"),
        "images/s (H200, b1024)": DASH if sp is None else
        f"{sp[0]:.1f}" + ("" if sp[2] == 1024 else f" (b{sp[2]})"),
        "command": f"`{r['command']}`" if r.get("command") else DASH,
        "result file": f"`{path.name}`" + (f", `{sp[1]}`" if sp else ""),
    }


def floor_row(reports: list[tuple[Path, dict]]) -> dict[str, str] | None:
    """The real-data floor of a dataset, from the report that measured it best."""
    found = []
    for path, r in reports:
        f, fl = r.get("fid") or {}, r.get("floor") or {}
        if fl.get("fid") is not None:
            found.append((bool(fl.get("protocol")), path, r, fl["fid"], fl.get("kid"),
                          fl.get("floor", "")))
        elif f.get("floor_fid") is not None:
            found.append((bool(f.get("protocol")), path, r, f["floor_fid"], f.get("floor_kid"),
                          f.get("floor", "")))
    if not found:
        return None
    ok, path, r, fid, kid, what = max(found, key=lambda e: (e[0], e[1].stat().st_mtime))
    row = dict.fromkeys(COLUMNS, DASH)
    net = "†" if r.get("fid_network", "").startswith("fp16") else ""
    row.update({"model": f"real-data floor ({what})" if what else "real-data floor",
                "FID": f"{fid:.2f}" + ("" if ok else " *") + (f" {net}" if net else ""),
                "KID x1000": _num(None if kid is None else 1000 * kid, ".2f"),
                "command": f"`{r['command']}`" if r.get("command") else DASH,
                "result file": f"`{path.name}`"})
    return row


def tables(results: Path) -> str:
    training, speed = load_training(results), load_speed(results)
    by_dataset: dict[str, list[tuple[Path, dict]]] = {}
    for path in sorted(results.glob("eval_*.json")):
        r = _read(path)
        if isinstance(r, dict) and "dataset" in r:
            by_dataset.setdefault(r["dataset"], []).append((path, r))
    order = [d for d in TITLES if d in by_dataset] + sorted(set(by_dataset) - set(TITLES))
    lines = ["# Evaluation tables", "",
             "Made by `benchmarks/eval_tables.py` from the files in `benchmarks/results/` "
             "(`eval/`, `train/train_summary.json`, `sampling/`). "
             "FID/KID: 10,000 samples (1,000 per class) against the 10,000 test images "
             "(docs/design.md §4); * marks fewer samples (biased upwards, not comparable); "
             "† marks the fp16-stored development Inception network. "
             "Train GPU-min = wall minutes x GPUs.", ""]
    if not order:
        lines.append("No evaluation reports (`eval_*.json`) found.")
    for ds in order:
        rows = [report_row(p, r, training, speed) for p, r in by_dataset[ds]]
        floor = floor_row(by_dataset[ds])
        if floor:
            rows.append(floor)
        lines += [f"## {TITLES.get(ds, ds)}", "",
                  "| " + " | ".join(COLUMNS) + " |",
                  "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in COLUMNS) + " |"
                  for row in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS), metavar="DIR")
    p.add_argument("--out", default=None, metavar="MD",
                   help="default <results>/eval_tables.md")
    args = p.parse_args(argv)
    results = Path(args.results)
    text = tables(results)
    out = Path(args.out) if args.out else results / "eval_tables.md"
    out.write_text(text)
    print(text)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
