"""Which sampling settings help a wavelet model's samples? A small-sample CPU study.

For each setting (guidance scale, temperature, top-p) draw ``--n`` samples of a zoo model (equal
shares per class, one seed), and measure KID (unbiased at small n, unlike FID) and FID against
the first ``--refs`` test images, plus CAS with the cached classifier. Not the 10k protocol:
these numbers only rank settings against each other.

    python benchmarks/sampling_settings.py --model mnist-small --n 400 --refs 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wavar.data.datasets import load
from wavar.eval import cas, fid
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import decode, generate
from wavar.zoo import MODELS

RESULTS = Path(__file__).parent / "results" / "eval"
SETTINGS = [  # (cfg, temperature, top_p)
    (1.0, 1.0, None), (3.0, 1.0, None), (1.0, 0.8, None), (1.0, 1.0, 0.9), (3.0, 0.8, None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist-small")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--refs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model)
    dataset = MODELS[args.model].dataset
    net = fid.load_network("cpu")
    test = load(dataset, "test")
    ref = fid.inception_features(test.x[: args.refs], network=net)
    classifier = cas.load_classifier(dataset)
    labels = np.arange(args.n) % model.config.num_classes
    rows = []
    for cfg, temp, top_p in SETTINGS:
        t = time.perf_counter()
        images = []
        for s in range(0, args.n, args.batch):
            seqs = generate(model, labels[s : s + args.batch], cfg=cfg, temperature=temp,
                            top_p=top_p, seed=s)
            images += decode(model, seqs)
        x = np.stack(images)
        feats = fid.inception_features(x, network=net)
        kid_mean, kid_std = fid.kid(feats, ref, subset_size=min(len(feats), len(ref)))
        row = {"cfg": cfg, "temperature": temp, "top_p": top_p, "samples": args.n,
               "kid": kid_mean, "kid_std": kid_std, "fid_biased": fid.fid_from_features(feats, ref),
               "cas": cas.classifier_accuracy(classifier, x, labels)[0],
               "seconds": time.perf_counter() - t}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"model": args.model, "dataset": dataset, "refs": f"{dataset} test[:{args.refs}]",
           "network": "standard fp32", "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sampling_settings_{args.model}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
