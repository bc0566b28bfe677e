"""Sampling speed: images/s and tokens/s at several batch sizes, beside the bandwidth bound.

The bound of a decode step is the bytes it must read from memory (the weights once, plus the
keys and values cached so far for every live sequence) over the memory bandwidth (4.8 TB/s on
an H200 by its datasheet). The ratio bound/measured says how close generation runs to it.

    python benchmarks/sample_speed.py --model fashion-mnist --batch 1 64 1024 --compare  # GPU
    python benchmarks/sample_speed.py --model fashion-mnist --graphs step model --profile 1024
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
        gpu_grammar: bool | None = None, graphs: str = "step") -> dict:
    labels = np.arange(batch) % model.config.num_classes
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    seqs = generate(model, labels, seed=seed, gpu_grammar=gpu_grammar, cuda_graphs=graphs)
    sync()
    dt = time.perf_counter() - t
    lengths = np.array([len(s) for s in seqs])
    steps = int(lengths.max())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound_s = (steps * param_bytes + kv_bytes_read(model, lengths, dtype_bytes)) / bandwidth
    return {"batch": batch, "grammar": "gpu" if gpu_grammar else "cpu",
            "graphs": graphs if gpu_grammar else "model", "seconds": dt,
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
    ap.add_argument("--graphs", nargs="+", default=["step"], choices=["step", "model", "off"],
                    help="GPU grammar: what each step replays as a CUDA graph (compared)")
    ap.add_argument("--compile-step", action="store_true",
                    help="also time the GPU loop with the model step under torch.compile")
    ap.add_argument("--profile", type=int, default=0, metavar="B",
                    help="GPU: profile 300 steps at batch B per graph mode (kernel table)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model, device=device)
    dtype_bytes = 4
    if args.bf16:
        model = model.to(torch.bfloat16)
        dtype_bytes = 2
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor()
           or platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "cpus": os.cpu_count(), "dtype": "bf16" if args.bf16 else "fp32",
           "params": model.num_params()}
    name = args.out or f"sample_speed_{args.model}_{device}"
    RESULTS.mkdir(exist_ok=True)
    variants = [(None, "model")]  # (gpu_grammar, graphs)
    if device == "cuda":
        variants = [(True, g) for g in args.graphs] + ([(False, "model")] if args.compare else [])
    rows = []

    def time_variants(label: str = "") -> None:
        for path, graphs in variants:
            try:  # warm-up: numba and cuBLAS initialisation, compiles
                generate(model, [0] * 8, seed=0, max_tokens=600, gpu_grammar=path,
                         cuda_graphs=graphs)
                for b in args.batch:
                    r = run(model, b, seed=1, bandwidth=args.bandwidth, dtype_bytes=dtype_bytes,
                            gpu_grammar=path, graphs=graphs)
                    rows.append({**r, "variant": label or r["graphs"]})
                    show(rows[-1])
            except Exception as e:  # noqa: BLE001 - a failed variant is a result too
                rows.append({"variant": label or graphs, "grammar": "gpu" if path else "cpu",
                             "error": f"{type(e).__name__}: {e}"[:2000]})
                print(rows[-1])
            (RESULTS / f"{name}.json").write_text(json.dumps({"env": env, "rows": rows},
                                                             indent=1))

    print(f"{args.model} on {env['device']} ({env['dtype']}, {env['params']} parameters)")
    print(f"{'grammar':>7} {'graphs':>7} {'batch':>6} {'seconds':>8} {'img/s':>9} {'tok/s':>11} "
          f"{'steps':>6} {'bound s':>8} {'of bound':>8}")
    time_variants()
    if args.profile and device == "cuda":
        for _, graphs in [v for v in variants if v[0]]:
            profile(model, args.profile, graphs, RESULTS / f"{name}_profile_{graphs}.txt")
    if args.compile_step and device == "cuda":
        variants = [(True, g) for g in args.graphs]
        model.decode_step = torch.compile(model.decode_step, dynamic=True)
        time_variants("compiled-" + "+".join(args.graphs))


def show(r: dict) -> None:
    print(f"{r['grammar']:>7} {r['variant']:>7} {r['batch']:>6} {r['seconds']:>8.2f} "
          f"{r['images_per_s']:>9.1f} {r['tokens_per_s']:>11.0f} {r['steps']:>6} "
          f"{r['bound_s']:>8.3f} {r['fraction_of_bound']:>8.1%}", flush=True)


def profile(model, batch: int, graphs: str, path: Path) -> None:
    """CUDA kernel time of 300 sampling steps at ``batch``: where a step's time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    labels = np.arange(batch) % model.config.num_classes
    generate(model, labels, seed=2, max_tokens=300, cuda_graphs=graphs)  # capture outside
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        generate(model, labels, seed=2, max_tokens=300, cuda_graphs=graphs)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40)
    path.write_text(f"batch {batch}, 300 steps, cuda_graphs={graphs}: {dt:.3f} s "
                    f"({dt / 300 * 1e3:.3f} ms per step, profiler on)\n{table}\n")
    print(path.read_text()[:6000])



if __name__ == "__main__":
    main()
