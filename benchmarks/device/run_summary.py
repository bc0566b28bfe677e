"""What the device scripts report of a training run folder (``train_one.sh``, ``long_run.sh``).

    python3 benchmarks/device/run_summary.py RUN SUMMARY   # RUN/model -> RUN/model16, summary
    python3 benchmarks/device/run_summary.py --fp16 SRC DST  # one weights folder to fp16
    python3 benchmarks/device/run_summary.py --speed METRICS AFTER  # a short run's medians

The summary appends to SUMMARY: parameters, steps and wall time, the median tokens/s, MFU and
data wait of the logged intervals after the first 200 steps (after compilation), every
validation point. ``--speed`` prints the same medians of a metrics.jsonl after step AFTER (a
run too short for 200).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from wavar.model.transformer import WaveletGPT


def to_fp16(src: Path, dst: Path) -> WaveletGPT:
    model = WaveletGPT.from_pretrained(src)
    model.save_pretrained(dst, dtype=torch.float16)
    return model


def speed(train: list[dict]) -> str:
    """Median tokens/s, MFU and data wait of logged training intervals."""
    wait = np.median([x.get("data_wait", np.nan) for x in train])
    return (f"median tokens/s {np.median([x['tokens_per_s'] for x in train]):.0f} "
            f"median MFU {np.median([x['mfu'] for x in train]):.3f} "
            f"median data wait {wait:.3f} ({len(train)} intervals)")


def summarise(run: Path, summary: Path) -> None:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if "tokens_per_s" in x and x["step"] > 200]
    val = [x for x in lines if "val_bits_per_token" in x]
    model = to_fp16(run / "model", run / "model16")
    with open(summary, "a") as f:
        f.write(f"params {model.num_params()} steps {lines[-1]['step']} "
                f"elapsed {lines[-1]['elapsed_s']:.0f} s\n")
        if train:
            f.write(speed(train) + "\n")
        for x in val:
            f.write(f"step {x['step']} val bits/token {x['val_bits_per_token']:.4f} "
                    f"bits/image {x['val_bits_per_image']:.1f}\n")


if __name__ == "__main__":
    if sys.argv[1] == "--fp16":
        to_fp16(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "--speed":
        rows = [json.loads(x) for x in Path(sys.argv[2]).read_text().splitlines()]
        print(speed([x for x in rows if "tokens_per_s" in x and x["step"] > int(sys.argv[3])]))
    else:
        summarise(Path(sys.argv[1]), Path(sys.argv[2]))
