"""Summarise the pretrained models' training logs (benchmarks/results/train/*/metrics.jsonl).

    python benchmarks/train_summary.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wavar.model.transformer import WaveletGPT
from wavar.zoo import MODELS

RESULTS = Path(__file__).parent / "results" / "train"  # logs read, summary written
GPUS = {"mnist": 1, "fashion-mnist": 1, "mnist-large": 1, "fashion-mnist-large": 2,
        "fashion-mnist-raster": 1, "cifar10": 2, "cifar10-lossless": 1,
        # session 3: the CIFAR-10 models continued from their published weights (init_from)
        "cifar10-continued": 2, "cifar10-lossless-continued": 1}


def _params(name: str, previous: dict) -> int:
    # models no longer in the zoo (the -large ones) keep the count recorded when they were
    name = name.removesuffix("-continued")  # the same model, trained on
    if name in MODELS:
        return WaveletGPT.from_pretrained(name).num_params()
    return previous[name]["params"]


def main() -> None:
    rows = []
    old = RESULTS / "train_summary.json"
    previous = {r["model"]: r for r in json.loads(old.read_text())} if old.exists() else {}
    print(f"{'model':20} {'params':>9} {'GPUs':>4} {'minutes':>7} {'steps':>6} "
          f"{'tok/s':>10} {'MFU':>6} {'val bits/tok':>12} {'bits/img':>9}")
    for name, gpus in GPUS.items():
        log = [json.loads(x) for x in (RESULTS / name / "metrics.jsonl").open()]
        train = [r for r in log if "bits_per_token" in r]
        val = [r for r in log if "val_bits_per_token" in r][-1]
        late = train[len(train) // 2:]  # after compilation and warm-up
        row = {"model": name, "params": _params(name, previous),
               "gpus": gpus, "train_minutes": train[-1]["elapsed_s"] / 60,
               "steps": train[-1]["step"],
               "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in late])) * gpus,
               "mfu": float(np.mean([r["mfu"] for r in late])),
               "val_bits_per_token": val["val_bits_per_token"],
               "val_bits_per_image": val["val_bits_per_image"]}
        rows.append(row)
        print(f"{name:20} {row['params']:>9} {gpus:>4} {row['train_minutes']:>7.1f} "
              f"{row['steps']:>6} {row['tokens_per_s']:>10.0f} {row['mfu']:>6.1%} "
              f"{row['val_bits_per_token']:>12.4f} {row['val_bits_per_image']:>9.1f}")
    (RESULTS / "train_summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
