"""Where samples differ from the data, without an FID: tokens per bit-plane and two pixel
statistics of a model's samples beside real test images of the same classes (CPU).

For each sampling setting, ``--n`` samples per class (seed 0) and ``--n`` test images of each
class drawn at random (seed 0), coded and decoded by the model's codec (what a perfect model
would sample): the mean number of tokens in each bit-plane (plane 0 the coarsest, counted
from each image's m~; more tokens in a plane = more coefficients found significant or refined
there), the mean pixel value (also of the images cut after each plane: where an excess is
born) and the mean absolute difference between neighbouring pixels (how busy the texture is),
and the model's teacher-forced bits by plane of the same sequences (of its own samples, the
entropy it drew them from; of the data, its cross-entropy). ``--prefix-planes K`` also
completes the real images' first K planes. ``--samples F.npz ...`` reads samples drawn
elsewhere (``x``, ``y``: ``wavar sample --npz``, a GPU run's; the first ``--n`` of each class)
instead of drawing them here, where CIFAR-10 samples take too long: each file's images are
coded by the model's codec, which for a lossless codec gives back exactly the sequences the
model drew (for a lossy one, their decode's code). Writes
``benchmarks/results/eval/plane_stats_<model>[_<tag>].json``.

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/plane_stats.py --model cifar10-lossless \
        --dataset cifar10 --n 5 --settings --samples plain.npz cool.npz --tag gpu-samples

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/plane_stats.py --model mnist-fine \\
        --dataset mnist --n 20 --settings plain --prefix-planes 1 --tag random
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks._common import EVAL
from benchmarks.bits_by_plane import bits_by_plane, sign_tokens
from wavar.data import datasets
from wavar.data.shards import TokenDataset
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of, decode, generate, image_shape_of, prefix_tokens

#: name -> sampling settings: plain, the per-plane schedule the zoo models recommend, one
#: between them on the finest planes (at 2^-6 "ramp + cool" samples come out smoother than the
#: data, plain ones busier), and three that act on the coarsest plane (about half of MNIST's
#: excess ink is laid down there: --prefix-planes 1 halves it): the LL band and m~ of a
#: training image (the paper's robust initialisation), guidance throughout, a cooler first plane
SETTINGS = {"plain": {},
            "ramp-cool": {"cfg": (1.0, 1.5, 2.0),
                          "temperature": (1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7)},
            "ramp-mild": {"cfg": (1.0, 1.5, 2.0),
                          "temperature": (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.85)},
            "ll-init": {"ll_init": True},
            "cfg-2": {"cfg": 2.0},
            "cool-first": {"temperature": (0.7, 1.0)}}
# "ramp + cool" with the tail cut (ramp-cool-p99, -p95, -p90, -p80): options beyond the nucleus
# never drawn (most positions are near-certain: a slip now and then among ~1,000 adds tokens)
SETTINGS.update({f"ramp-cool-p{round(p * 100)}": {**SETTINGS["ramp-cool"], "top_p": p}
                 for p in (0.99, 0.95, 0.9, 0.8)})
# the 0.8 cut on the first three planes only (where MNIST's excess is born), or after them only
SETTINGS.update({f"ramp-cool-p80-{part}": {**SETTINGS["ramp-cool"], "top_p": top_p}
                 for part, top_p in (("coarse", (0.8, 0.8, 0.8, 1.0)),
                                     ("fine", (1.0, 1.0, 1.0, 0.8)))})


def per_class(y: np.ndarray, classes: int, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` images of each class drawn at random, class by class, each class's in
    the split's order."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.sort(rng.choice(np.flatnonzero(y == c), n, replace=False))
                           for c in range(classes)])


def neighbour_difference(images: np.ndarray) -> float:
    """Mean absolute difference between horizontally and vertically neighbouring pixels (how
    busy the texture is)."""
    x = np.asarray(images, np.float64)
    return float(np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()) / 2


def stats(model, codec, seqs, labels: np.ndarray) -> dict:
    """Mean tokens per plane, mean pixel value (all, by class, and of the image cut after each
    plane), mean absolute neighbour difference, and the model's bits by plane."""
    images = decode(model, seqs)
    plane_of = [codec.slots(s).plane[:-1] for s in seqs]  # each token's plane
    planes = [np.bincount(p, minlength=24)[:24] for p in plane_of]
    x = np.stack(images).astype(np.float64)
    busy = neighbour_difference(x)
    tokens = np.mean(planes, axis=0)
    last = int(np.flatnonzero(tokens)[-1]) + 1 if tokens.any() else 0
    cut = [np.mean([codec.decode(s, int(np.searchsorted(p, k + 1)))
                    for s, p in zip(seqs, plane_of, strict=True)]) for k in range(last)]
    # the model's teacher-forced bits of these sequences (of its own samples: the entropy it
    # drew them from; of the data: its cross-entropy)
    data = TokenDataset.from_coded(codec, image_shape_of(model), seqs, labels,
                                   context=bool(model.config.decoder_state))
    bits = bits_by_plane(model, data, len(seqs), batch=20, signs=sign_tokens(model))["by_plane"]
    return {"tokens": float(np.mean([len(s) for s in seqs])),
            "tokens_by_plane": [round(float(t), 1) for t in tokens[:last]],
            "mean_pixel": round(float(x.mean()), 2),
            "mean_pixel_by_class": [round(float(x[labels == c].mean()), 1)
                                    for c in np.unique(labels)],
            "mean_pixel_cut_after_plane": [round(float(v), 2) for v in cut],
            "neighbour_difference": round(busy, 2),
            "model_bits_by_plane": bits[:last]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist-fine")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=10, help="images per class")
    ap.add_argument("--settings", nargs="*", choices=SETTINGS, default=["plain", "ramp-cool"])
    ap.add_argument("--samples", nargs="+", default=[], metavar="NPZ",
                    help="samples drawn elsewhere (x, y), judged beside the settings drawn here")
    ap.add_argument("--tag", default="", help="suffix of the output file's name")
    ap.add_argument("--prefix-planes", type=int, nargs="+", default=[], metavar="K",
                    help="also complete the real images' first K planes (where the drift "
                         "starts: does a plane go wrong by itself, or because the ones before "
                         "did?)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model).eval()
    codec = codec_of(model)
    test = datasets.load(args.dataset, "test")
    classes = model.config.num_classes
    # the reference: n test images of each class drawn at random (seed 0), not the first n:
    # MNIST's test set is ordered by writer population (mean pixel 31.1 in its first half,
    # 36.5 in its second), so its first images are thinner digits than the data the model
    # learned and the FID is measured against (33.8)
    real = list(test.x[per_class(test.y, classes, args.n)])
    labels = np.repeat(np.arange(classes), args.n)
    res = {"command": f"PYTHONPATH=. python benchmarks/plane_stats.py --model {args.model} "
                      f"--dataset {args.dataset} --n {args.n} --settings "
                      f"{' '.join(args.settings)}" + (f" --tag {args.tag}" if args.tag else "")
                      + (f" --prefix-planes {' '.join(map(str, args.prefix_planes))}"
                         if args.prefix_planes else "")
                      + (f" --samples {' '.join(args.samples)}" if args.samples else ""),
           "model": args.model, "images": len(labels),
           # the real images as the language has them (coded and decoded): what a perfect
           # model of it would sample
           "real": stats(model, codec, [codec.encode(img) for img in real], labels)}
    for name in args.settings:
        settings = SETTINGS[name]
        t = time.perf_counter()
        seqs = generate(model, labels, **settings, seed=0)
        res[name] = {**stats(model, codec, seqs, labels),
                     "seconds": round(time.perf_counter() - t, 1)}
        print(name, json.dumps(res[name]), flush=True)
        for k in args.prefix_planes:
            pre = [prefix_tokens(codec, img, planes=k) for img in real]
            t = time.perf_counter()
            seqs = generate(model, labels, **settings, seed=0, prefix=[p.tokens for p in pre],
                            m_tilde=[p.header.m_tilde for p in pre])
            key = f"{name}, first {k} planes given"
            res[key] = {**stats(model, codec, seqs, labels),
                        "seconds": round(time.perf_counter() - t, 1)}
            print(key, json.dumps(res[key]), flush=True)
    for path in args.samples:
        drawn = np.load(path)
        if not {"x", "y"} <= set(drawn.files):
            raise SystemExit(f"{path}: a samples file holds x (images) and y (labels)")
        pick = np.concatenate([np.flatnonzero(drawn["y"] == c)[:args.n] for c in range(classes)])
        if len(pick) < len(labels):
            raise SystemExit(f"{path}: fewer than {args.n} samples of some class")
        res[path] = stats(model, codec, [codec.encode(img) for img in drawn["x"][pick]],
                          drawn["y"][pick])
        print(path, json.dumps(res[path]), flush=True)
    print("real", json.dumps(res["real"]))
    out = EVAL / f"plane_stats_{args.model}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
