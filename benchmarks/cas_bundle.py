"""Train a dataset's CAS classifier here (the CPU, seed 0) and bundle it with wavar.

``wavar/eval/classifiers/<dataset>.safetensors`` then judges that dataset's samples wherever
CAS is measured (``wavar.eval.cas.load_classifier``), instead of a classifier trained afresh on
each machine (a GPU's training is not bit-reproducible, so the figures of two evaluations could
differ by their classifiers alone).

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/cas_bundle.py --dataset cifar10

Its meta (real test accuracy overall and per class, schedule, training time) also goes to
``benchmarks/results/eval/cas_bundle_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from wavar.eval.cas import BUNDLED, EPOCHS, bundle_classifier, train_classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = train_classifier(args.dataset, epochs=args.epochs)  # also caches it
    path = BUNDLED / f"{args.dataset}.safetensors"
    bundle_classifier(model, path)
    out = Path(__file__).parent / "results" / "eval" / f"cas_bundle_{args.dataset}.json"
    out.write_text(json.dumps(model.meta, indent=1) + "\n")
    print(f"-> {path} ({path.stat().st_size:,} bytes; real test accuracy "
          f"{model.meta['test_accuracy']:.4f})")


if __name__ == "__main__":
    main()
