"""Which bit-planes the FID gap is born in: FID of samples that complete the first K planes of
real training images, beside the codec's own floor on the same images (CPU or GPU).

``--n`` training images drawn at random (an equal share per class, seed 0) are coded by the
model's codec. For each K of ``--planes`` the model keeps their first K bit-planes (and m~) and
samples the rest under a sampling setting of ``plane_stats.SETTINGS``; K = 0 is free sampling
with the images' m~. Each set's FID and KID against the whole test set (its Inception
statistics cached), beside two references on the same images: the images themselves (the
real-data floor at this count: FID at 1,000 images lies well above the protocol's at 10,000)
and their coded-and-decoded forms (the language's floor, what completing every plane gives).
Where the FID falls towards the codec's as K grows says which planes the samples get wrong:
the coarse planes (shapes: the class's layout) or the fine ones (texture).

Resumable: entries already in the output file are kept and skipped.

    WAVAR_CACHE=... WAVAR_FID_NETWORK=... PYTHONPATH=. python benchmarks/prefix_fid.py \\
        --model mnist-fine --dataset mnist --n 1000 --planes 0 1 2 3 --setting ramp-cool
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import EVAL
from benchmarks.plane_stats import SETTINGS, neighbour_difference, per_class
from wavar.data import datasets
from wavar.eval import fid
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of, decode, generate, prefix_tokens


def image_stats(images: np.ndarray, feats: np.ndarray, ref: fid.FeatureStats) -> dict:
    """FID and KID against the reference, mean pixel and mean neighbour difference."""
    kid_mean, kid_std = fid.kid(feats, ref.features)
    return {"fid": round(fid.FeatureStats.of(feats, "").fid(ref), 2),
            "kid_x1000": round(1000 * kid_mean, 2), "kid_std_x1000": round(1000 * kid_std, 2),
            "mean_pixel": round(float(images.mean()), 2),
            "neighbour_difference": round(neighbour_difference(images), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist-fine")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=1000, help="training images (and samples per K)")
    ap.add_argument("--planes", type=int, nargs="+", default=[0, 1, 2, 3], metavar="K")
    ap.add_argument("--setting", choices=SETTINGS, default="ramp-cool")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", help="default results/eval/prefix_fid_<model>_<setting>"
                                           "_<n>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = (EVAL / f"prefix_fid_{args.model}_{args.setting}_{args.n}.json" if args.output is None
           else Path(args.output))
    res = json.loads(out.read_text()) if out.is_file() else {}
    res.update({"command": "PYTHONPATH=. python benchmarks/prefix_fid.py --model "
                           f"{args.model} --dataset {args.dataset} --n {args.n} --planes "
                           f"{' '.join(map(str, args.planes))} --setting {args.setting}",
                "model": args.model, "setting": SETTINGS[args.setting],
                "reference": f"{args.dataset} test, all images"})

    def record(key: str, entry: dict) -> None:
        res[key] = entry
        print(key, json.dumps(entry), flush=True)
        out.write_text(json.dumps(res, indent=2) + "\n")

    model = WaveletGPT.from_pretrained(args.model).eval().to(args.device)
    codec = codec_of(model)
    network = fid.load_network(args.device)
    ref = fid.reference_statistics(args.dataset, "test", device=args.device, network=network)
    train = datasets.load(args.dataset, "train")
    classes = model.config.num_classes
    if args.n % classes:
        raise SystemExit(f"--n must be a multiple of the {classes} classes")
    idx = per_class(train.y, classes, args.n // classes)
    real, labels = train.x[idx], train.y[idx]

    def features(images: np.ndarray) -> np.ndarray:
        return fid.inception_features(images, device=args.device, network=network)

    if "data" not in res:
        record("data", image_stats(real, features(real), ref))
    seqs = [codec.encode(img) for img in real]
    if "codec" not in res:
        coded = np.stack(decode(model, seqs))
        record("codec", {**image_stats(coded, features(coded), ref),
                         "tokens": round(float(np.mean([len(s) for s in seqs])), 1)})
    for k in args.planes:
        key = f"first {k} planes given"
        if key in res:
            continue
        pre = [prefix_tokens(codec, img, planes=k) for img in real]
        t = time.perf_counter()
        samples = []
        for b in range(0, args.n, args.batch):
            part = slice(b, b + args.batch)
            samples += generate(model, labels[part], **SETTINGS[args.setting], seed=b,
                                prefix=[p.tokens for p in pre[part]],
                                m_tilde=[p.header.m_tilde for p in pre[part]])
        seconds = time.perf_counter() - t
        images = np.stack(decode(model, samples))
        record(key, {**image_stats(images, features(images), ref),
                     "prefix_tokens": round(float(np.mean([len(p) for p in pre])), 1),
                     "tokens": round(float(np.mean([len(s) for s in samples])), 1),
                     "sampling_seconds": round(seconds, 1)})
    print(f"-> {out}")


if __name__ == "__main__":
    main()
