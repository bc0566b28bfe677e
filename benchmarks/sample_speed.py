"""Sampling speed: images/s and tokens/s at several batch sizes, beside the bandwidth bound.

The bound of a decode step is the bytes it must read from memory (the weights once, plus the
keys and values cached so far for every live sequence) over the memory bandwidth (4.8 TB/s on
an H200 by its datasheet). The ratio bound/measured says how close generation runs to it.

    python benchmarks/sample_speed.py --model fashion-mnist --batch 1 64 1024 --compare  # GPU
    python benchmarks/sample_speed.py --model fashion-mnist --batch 16 --cpu     # CPU latency
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import generate

RESULTS = Path(__file__).parent / "results"


def kv_bytes_read(model, lengths: np.ndarray, dtype_bytes: int) -> float:
    """Bytes of cached keys/values a generation must read: sum over steps of live prefixes."""
    c = model.config
    per_pos = c.n_layer * 2 * c.n_kv_head * (c.n_embd // c.n_head) * dtype_bytes
    # a sequence of length L reads 1 + 2 + ... + (L + 1) cached positions (prefix included)
    return float(per_pos * ((lengths + 1) * (lengths + 2) / 2).sum())


def run(model, batch: int, seed: int, bandwidth: float, dtype_bytes: int,
        gpu_grammar: bool | None = None) -> dict:
    labels = np.arange(batch) % model.config.num_classes
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    seqs = generate(model, labels, seed=seed, gpu_grammar=gpu_grammar)
    sync()
    dt = time.perf_counter() - t
    lengths = np.array([len(s) for s in seqs])
    steps = int(lengths.max())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound_s = (steps * param_bytes + kv_bytes_read(model, lengths, dtype_bytes)) / bandwidth
    return {"batch": batch, "grammar": "gpu" if gpu_grammar else "cpu", "seconds": dt,
            "images_per_s": batch / dt,
            "tokens_per_s": float(lengths.sum()) / dt, "steps": steps,
            "mean_tokens": float(lengths.mean()), "bound_s": bound_s,
            "fraction_of_bound": bound_s / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 weights and KV cache (GPU)")
    ap.add_argument("--bandwidth", type=float, default=4.8e12)
    ap.add_argument("--compare", action="store_true",
                    help="GPU: also time the CPU-grammar loop (host round trip per token)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model, device=device)
    dtype_bytes = 4
    if args.bf16:
        model = model.to(torch.bfloat16)
        dtype_bytes = 2
    paths = [None]
    if device == "cuda":
        paths = [True, False] if args.compare else [True]
    rows = []
    for path in paths:
        generate(model, [0] * 8, seed=0, max_tokens=600, gpu_grammar=path)  # warm-up, compile
        rows += [run(model, b, seed=1, bandwidth=args.bandwidth, dtype_bytes=dtype_bytes,
                     gpu_grammar=path) for b in args.batch]
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor()
           or platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "cpus": os.cpu_count(), "dtype": "bf16" if args.bf16 else "fp32",
           "params": model.num_params()}
    print(f"{args.model} on {env['device']} ({env['dtype']}, {env['params']} parameters)")
    print(f"{'grammar':>7} {'batch':>6} {'seconds':>8} {'img/s':>9} {'tok/s':>11} {'steps':>6} "
          f"{'bound s':>8} {'of bound':>8}")
    for r in rows:
        print(f"{r['grammar']:>7} {r['batch']:>6} {r['seconds']:>8.2f} {r['images_per_s']:>9.1f} "
              f"{r['tokens_per_s']:>11.0f} {r['steps']:>6} {r['bound_s']:>8.3f} "
              f"{r['fraction_of_bound']:>8.1%}")
    name = args.out or f"sample_speed_{args.model}_{device}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
