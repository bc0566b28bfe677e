"""Where samples differ from the data, without an FID: tokens per bit-plane and two pixel
statistics of a model's samples beside real test images of the same classes (CPU).

For each sampling setting, ``--n`` samples per class (seed 0) and the first ``--n`` test images
of each class, coded and decoded by the model's codec (what a perfect model would sample): the
mean number of tokens in each bit-plane (plane 0 the coarsest, counted from each image's m~;
more tokens in a plane = more coefficients found significant or refined there), the mean
pixel value and the mean absolute difference between neighbouring pixels (how busy the
texture is). Writes ``benchmarks/results/eval/plane_stats_<model>.json``.

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/plane_stats.py --model mnist-fine \\
        --dataset mnist --n 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks._common import EVAL
from wavar.data import datasets
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of, decode, generate

#: name -> (cfg, temperature): plain, the per-plane schedule the zoo models recommend, and one
#: between them on the finest planes (at 2^-6 "ramp + cool" samples come out smoother than the
#: data, plain ones busier)
SETTINGS = {"plain": (1.0, 1.0),
            "ramp-cool": ((1.0, 1.5, 2.0), (1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7)),
            "ramp-mild": ((1.0, 1.5, 2.0), (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.85))}


def stats(codec, seqs, images: list[np.ndarray], labels: np.ndarray) -> dict:
    """Mean tokens per plane, mean pixel value (all, and by class) and mean absolute
    neighbour difference."""
    planes = [np.bincount(codec.slots(s).plane[:-1], minlength=24)[:24] for s in seqs]
    x = np.stack(images).astype(np.float64)
    busy = (np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()) / 2
    tokens = np.mean(planes, axis=0)
    last = int(np.flatnonzero(tokens)[-1]) + 1 if tokens.any() else 0
    return {"tokens": float(np.mean([len(s) for s in seqs])),
            "tokens_by_plane": [round(float(t), 1) for t in tokens[:last]],
            "mean_pixel": round(float(x.mean()), 2),
            "mean_pixel_by_class": [round(float(x[labels == c].mean()), 1)
                                    for c in np.unique(labels)],
            "neighbour_difference": round(busy, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist-fine")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=10, help="images per class")
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=["plain", "ramp-cool"])
    ap.add_argument("--tag", default="", help="suffix of the output file's name")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model).eval()
    codec = codec_of(model)
    test = datasets.load(args.dataset, "test")
    classes = model.config.num_classes
    real = [img for c in range(classes) for img in test.x[test.y == c][: args.n]]
    labels = np.repeat(np.arange(classes), args.n)
    res = {"command": f"PYTHONPATH=. python benchmarks/plane_stats.py --model {args.model} "
                      f"--dataset {args.dataset} --n {args.n} --settings "
                      f"{' '.join(args.settings)}" + (f" --tag {args.tag}" if args.tag else ""),
           "model": args.model, "images": len(labels),
           # the real images as the language has them (coded and decoded): what a perfect
           # model of it would sample
           "real": stats(codec, seqs := [codec.encode(img) for img in real],
                         decode(model, seqs), labels)}
    for name in args.settings:
        cfg, temperature = SETTINGS[name]
        t = time.perf_counter()
        seqs = generate(model, labels, cfg=cfg, temperature=temperature, seed=0)
        res[name] = {**stats(codec, seqs, decode(model, seqs), labels),
                     "seconds": round(time.perf_counter() - t, 1)}
        print(name, json.dumps(res[name]), flush=True)
    print("real", json.dumps(res["real"]))
    out = EVAL / f"plane_stats_{args.model}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
