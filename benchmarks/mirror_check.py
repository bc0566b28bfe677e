"""Is horizontal-flip augmentation safe for a dataset? (issue 18: ``hflip`` for Fashion-MNIST.)

For each class of the training split: the share of images closer (squared error) to the class's
mean image as they are than mirrored. Near 0.5 the class has no preferred orientation and
mirrored copies look like real ones; near 1 its images face one way, and mirrored training
images teach the model objects the test set does not hold (Fashion-MNIST's shoes).

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/mirror_check.py --dataset fashion-mnist
    # writes results/train/mirror_<dataset>.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import TRAIN
from wavar.data.datasets import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    args = ap.parse_args()
    data = load(args.dataset, "train")
    x = data.x.astype(np.float32)
    shares = {}
    for c, name in enumerate(data.classes):
        xs = x[data.y == c]
        mean = xs.mean(0)
        as_is = ((xs - mean) ** 2).reshape(len(xs), -1).sum(1)
        mirrored = ((xs[:, :, ::-1] - mean) ** 2).reshape(len(xs), -1).sum(1)
        shares[name] = round(float((as_is < mirrored).mean()), 4)
        print(f"{name:12s} {shares[name]:.3f} of {len(xs)} closer to the class mean as they are")
    out = TRAIN / f"mirror_{args.dataset}.json"
    out.write_text(json.dumps(dict(
        command=f"PYTHONPATH=. python benchmarks/mirror_check.py --dataset {args.dataset}",
        dataset=args.dataset, split="train",
        closer_as_is_than_mirrored=shares), indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
