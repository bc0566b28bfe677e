"""A forced prefix on the CPU loop: one prefill against a step per forced token (CPU).

Samples bit-plane ``--planes`` of ``--n`` Fashion-MNIST test images given their first
``--planes`` planes (the real image's tokens forced, the plane after them sampled, then stop:
one live frame of ``wavar serve``, or ``wavar sample --prefix-image ... --planes K+1``), timed
with the shared prefix prefilled and, side by side, with the prefill switched off (every forced
token stepped, the loop before it). Writes
``benchmarks/results/sampling/prefix_prefill_<model>.json``.

    PYTHONPATH=. python benchmarks/prefix_prefill.py --model fashion-mnist-small --n 10 --planes 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks._common import SAMPLING
from wavar.data import datasets
from wavar.model.transformer import WaveletGPT
from wavar.sample import cpu_loop
from wavar.sample.generate import codec_of, generate, prefix_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="fashion-mnist-small")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--planes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model)
    codec = codec_of(model)
    test = datasets.load(args.dataset, "test")
    # images of one m~ (the prefix fixes each row's m~; one value keeps rows comparable)
    mts = np.array([codec.encode(im).header.m_tilde for im in test.x[:200]])
    m = int(np.bincount(mts).argmax())
    pick = np.flatnonzero(mts == m)[: args.n]
    pre = [prefix_tokens(codec, test.x[i], planes=args.planes) for i in pick]
    run = dict(prefix=[p.tokens for p in pre], m_tilde=[m] * len(pick), seed=0,
               max_plane=args.planes + 1)
    labels = test.y[pick].astype(np.int64)
    generate(model, labels[:2], **{**run, "prefix": run["prefix"][:2], "m_tilde": [m, m]})
    real = cpu_loop._take_common_prefix
    times: dict[str, list[float]] = {"prefill": [], "stepped": []}
    for _ in range(args.repeats):
        for name in times:
            cpu_loop._take_common_prefix = real if name == "prefill" else (lambda *a: (0, []))
            t = time.perf_counter()
            seqs = generate(model, labels, **run)
            times[name].append(time.perf_counter() - t)
    cpu_loop._take_common_prefix = real
    res = dict(command=f"python benchmarks/prefix_prefill.py --model {args.model} --n {args.n} "
                       f"--planes {args.planes} --repeats {args.repeats}",
               model=args.model, images=len(pick), planes_forced=args.planes,
               forced_tokens_min=min(map(len, pre)), forced_tokens_mean=float(np.mean(
                   [len(p) for p in pre])),
               tokens_mean=float(np.mean([len(s) for s in seqs])), threads=args.threads,
               seconds={k: [round(x, 2) for x in v] for k, v in times.items()},
               speedup=min(times["stepped"]) / min(times["prefill"]))
    out = SAMPLING / f"prefix_prefill_{args.model}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
