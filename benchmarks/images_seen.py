"""Training images seen by the zoo's best models (issue 18): is the wavelet language behind the
pixels because it sees fewer images in its minutes, or because it learns less from each?

Tokens trained on are the logged intervals' tokens/s times their lengths, summed over a run's
``metrics.jsonl`` (the last partial interval, under 100 steps, is left out); images are tokens
over the language's mean tokens an image, read from the run's last validation line (bits an
image over bits a token: the test set's mean, which the training split's matches to ~1%). Runs
started from another's weights add up. Bits a position is the final validation bits a token.

    python benchmarks/images_seen.py   # writes results/train/images_seen.json
"""

from __future__ import annotations

import json

from benchmarks._common import EVAL, TRAIN
from benchmarks.fid_minutes import (
    FM_FINE_30,
    FM_PACKED_16,
    FM_RASTER,
    MNIST_FINE_8,
    MNIST_FINE_30,
    MNIST_RASTER,
    minutes,
)

#: (dataset, model, FID and its report under results/eval, runs under results/train)
RUNS = [
    ("fashion-mnist", "raster 8.8M (fashion-mnist-raster-medium)",
     "schedules/fashion-mnist-raster-8.8M/eval_plain.json", FM_RASTER),
    ("fashion-mnist", "wavelet 8.6M, 2^-4 (fashion-mnist)",
     "schedules/fashion-mnist-8.6M-packed-16min/eval_ramp-cool.json", FM_PACKED_16),
    ("fashion-mnist", "wavelet 8.6M, then 2^-6 (fashion-mnist-fine)",
     "schedules/fashion-mnist-8.6M-fine-2e-6-30min/eval_ramp-cool.json", FM_FINE_30),
    ("mnist", "raster 5.7M (mnist-raster-medium)",
     "schedules/mnist-raster-5.7M/eval_plain.json", MNIST_RASTER),
    ("mnist", "wavelet 5.6M, then 2^-4 (mnist-fine at 8.3 min)",
     "schedules/mnist-5.6M-fine-2e-4/eval_ramp-cool.json", MNIST_FINE_8),
    ("mnist", "wavelet 5.6M, then 2^-4 (mnist-fine, top-p 0.8)",
     "schedules/mnist-5.6M-fine-2e-4-30min/eval_ramp-cool-p80.json", MNIST_FINE_30),
    ("mnist", "wavelet 5.6M, then 2^-4 (mnist-fine, no cut)",
     "schedules/mnist-5.6M-fine-2e-4-30min/eval_ramp-cool.json", MNIST_FINE_30),
]


def run_figures(run: str) -> dict:
    """Tokens, tokens an image and images of one run."""
    lines = [json.loads(x) for x in (TRAIN / f"{run}_metrics.jsonl").read_text().splitlines()]
    tokens, last = 0.0, 0.0
    for x in lines:
        if "tokens_per_s" in x:
            tokens += x["tokens_per_s"] * (x["elapsed_s"] - last)
            last = x["elapsed_s"]
    val = [x for x in lines if "val_bits_per_token" in x][-1]
    per_image = val["val_bits_per_image"] / val["val_bits_per_token"]
    return dict(run=run, tokens=tokens, tokens_per_image=round(per_image, 1),
                images=tokens / per_image, bits_per_position=round(val["val_bits_per_token"], 4))


def main() -> None:
    rows = []
    for dataset, model, report, runs in RUNS:
        parts = [run_figures(r) for r in runs]
        rows.append(dict(
            dataset=dataset, model=model, report=report,
            fid=round(json.loads((EVAL / report).read_text())["fid"]["fid"], 2),
            minutes=round(minutes({}, runs, None), 1),
            images_millions=round(sum(p["images"] for p in parts) / 1e6, 2),
            tokens_per_image=parts[-1]["tokens_per_image"],
            bits_per_position=parts[-1]["bits_per_position"],
            runs=[{k: (round(v) if k in ("tokens", "images") else v) for k, v in p.items()}
                  for p in parts]))
        r = rows[-1]
        print(f"{dataset:14s} {model:46s} {r['minutes']:5.1f} min  "
              f"{r['images_millions']:5.2f}M images  {r['tokens_per_image']:7.1f} tokens/image  "
              f"{r['bits_per_position']:.3f} bits/position  FID {r['fid']:6.2f}")
    out = dict(command="python benchmarks/images_seen.py", rows=rows)
    (TRAIN / "images_seen.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
