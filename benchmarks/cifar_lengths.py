"""CIFAR-10 sequence lengths against image quality: choosing the final threshold of a model.

Lossy language (bior4.4 with YCbCr, zero-block, deferred refinement): for each final threshold
2^-1 .. 2^-6 (the last bit-plane coded, on coefficients of images scaled to [0, 1]), the mean,
p99 and max tokens per image and the mean PSNR of the decoded full sequence. Lossless language
(cdf53 with the RCT, final threshold 1): mean, p99 and max tokens per image (the decode is
checked to be bit-exact). Without ``--quick``, also the lengths over all 60,000 images for the
candidate settings. A model must cover the longest sequence and trains at a cost that grows
with the mean length, so these numbers set ``final_threshold`` and ``max_seq_len`` in
``configs/cifar10*.toml``.

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/cifar_lengths.py [--quick] [--n N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import CODEC, Report, machine_info

from wavar import WaveletCodec
from wavar.data.datasets import load
from wavar.eval.metrics import psnr

EXPONENTS = (-1, -2, -3, -4, -5, -6)
WHOLE = (("bior4.4", -3), ("bior4.4", -4), ("bior4.4", -5), ("cdf53", 0))  # max over 60k


def whole_dataset(x: np.ndarray) -> dict:
    """Length statistics over all images, in chunks (a model's max_seq_len must cover them)."""
    out = {}
    for wavelet, e in WHOLE:
        codec = WaveletCodec(wavelet, final_threshold=2.0**e)
        lengths = np.concatenate([[len(s) for s in codec.encode_batch(x[i:i + 5000])]
                                  for i in range(0, len(x), 5000)])
        out[f"{wavelet} 2^{e}"] = {"mean_tokens": float(lengths.mean()),
                                   "p99_tokens": float(np.percentile(lengths, 99)),
                                   "max_tokens": int(lengths.max())}
    return out


def lengths_row(codec: WaveletCodec, x: np.ndarray, check_psnr: bool = True) -> dict:
    t0 = time.perf_counter()
    seqs = codec.encode_batch(x)
    lengths = np.array([len(s) for s in seqs])
    dec = codec.decode_batch(seqs)
    ps = np.array([psnr(a, b) for a, b in zip(x, dec, strict=True)])
    return {
        "mean_tokens": float(lengths.mean()),
        "p50_tokens": float(np.percentile(lengths, 50)),
        "p99_tokens": float(np.percentile(lengths, 99)),
        "max_tokens": int(lengths.max()),
        "min_tokens": int(lengths.min()),
        "mean_psnr": float(np.mean(np.minimum(ps, 99.0))),
        "min_psnr": float(np.min(np.minimum(ps, 99.0))),
        "n_exact": int(np.isinf(ps).sum()),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 images")
    ap.add_argument("--n", type=int, default=500, help="first N test images (500)")
    args = ap.parse_args()
    n = 50 if args.quick else args.n
    rep = Report("cifar_lengths", args.quick, CODEC)
    x = load("cifar10", "test").x[:n]
    rep.print(f"CIFAR-10 test, first {n} images {x.shape[1:]}: tokens per image and PSNR of the "
              f"full decode" + (" (QUICK)" if args.quick else ""))
    rep.print("PSNR: mean over images of per-image PSNR in dB (peak 255, all three channels).")
    lossy = {}
    rows = []
    for e in EXPONENTS:
        r = lengths_row(WaveletCodec("bior4.4", final_threshold=2.0**e), x)
        lossy[e] = r
        rows.append([f"2^{e}", round(r["mean_tokens"], 1), int(r["p50_tokens"]),
                     int(r["p99_tokens"]), r["max_tokens"], round(r["mean_psnr"], 2),
                     round(r["min_psnr"], 2), round(r["seconds"], 1)])
    rep.table(["T_f", "mean", "p50", "p99", "max", "PSNR", "min PSNR", "s"], rows,
              title="lossy: bior4.4 + YCbCr, zero-block, deferred refinement")
    r = lengths_row(WaveletCodec("cdf53", final_threshold=1.0), x)
    rep.table(["T_f", "mean", "p50", "p99", "max", "exact", "s"],
              [["1", round(r["mean_tokens"], 1), int(r["p50_tokens"]), int(r["p99_tokens"]),
                r["max_tokens"], f"{r['n_exact']}/{n}", round(r["seconds"], 1)]],
              title="lossless: cdf53 + RCT, zero-block, deferred refinement")
    rep.print(f"lossless tokens per dimension: {r['mean_tokens'] / x[0].size:.2f} "
              f"(PixelCNN++ codes 2.92 bits/dim)")
    whole = None
    if not args.quick:
        allx = np.concatenate([load("cifar10", "train").x, load("cifar10", "test").x])
        whole = whole_dataset(allx)
        rep.table(["codec", "mean", "p99", "max"],
                  [[k, round(v["mean_tokens"], 1), int(v["p99_tokens"]), v["max_tokens"]]
                   for k, v in whole.items()],
                  title=f"all {len(allx)} images (train + test): lengths only")
    rep.save({"machine": machine_info(), "n_images": n,
              "lossy": {f"2^{e}": v for e, v in lossy.items()}, "lossless": r,
              "whole_dataset": whole})


if __name__ == "__main__":
    main()
