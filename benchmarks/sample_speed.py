"""Sampling speed: images/s and tokens/s at several batch sizes, beside the bandwidth bound.

The bound of a decode step is the bytes it must read from memory (the weights once, plus the
keys and values cached so far for every live sequence) over the memory bandwidth (4.8 TB/s on
an H200 by its datasheet). The ratio bound/measured says how close generation runs to it.

    python benchmarks/sample_speed.py --model fashion-mnist-small --batch 1 64 1024 --compare  # GPU
    python benchmarks/sample_speed.py --model fashion-mnist-small --profile 1024 --step-check
    python benchmarks/sample_speed.py --model fashion-mnist-small --batch 16 --cpu     # CPU latency
    python benchmarks/sample_speed.py --model cifar10 --kernel --tf32

Each generation runs the sampling plan (``wavar.sample.plan``) the machine picks; ``--compare``
also times the GPU loop with the model's PyTorch step (where the plan fuses it) and the CPU
loop (the host steps the grammar). ``--kernel`` first checks the Triton decode-attention kernel
against its PyTorch reference on the model's shapes and times it alone: the bandwidth it
reaches reading the cache. ``--step-check`` checks the fused step against the model's and
times one step of each alone.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wavar.model.transformer import WaveletGPT
from wavar.sample import SamplingPlan, plan
from wavar.sample.generate import generate

RESULTS = Path(__file__).parent / "results" / "sampling"


def kv_bytes_read(model, lengths: np.ndarray, dtype_bytes: int) -> float:
    """Bytes of cached keys/values a generation must read: sum over steps of live prefixes."""
    c = model.config
    per_pos = c.n_layer * 2 * c.n_kv_head * (c.n_embd // c.n_head) * dtype_bytes
    # a sequence of length L reads 1 + 2 + ... + (L + 1) cached positions (prefix included)
    return float(per_pos * ((lengths + 1) * (lengths + 2) / 2).sum())


def run(model, batch: int, seed: int, bandwidth: float, dtype_bytes: int,
        sampling: SamplingPlan) -> dict:
    labels = np.arange(batch) % model.config.num_classes
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    seqs = generate(model, labels, seed=seed, plan=sampling)
    sync()
    dt = time.perf_counter() - t
    lengths = np.array([len(s) for s in seqs])
    # the tokens' fingerprint: equal across variants that must draw the same tokens
    digest = hashlib.sha1(b"".join(s.tokens.tobytes() for s in seqs)).hexdigest()[:16]
    steps = int(lengths.max())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound_s = (steps * param_bytes + kv_bytes_read(model, lengths, dtype_bytes)) / bandwidth
    choices = ("loop", "step", "attention", "graphs", "draw")
    return {"batch": batch, **{k: getattr(sampling, k) for k in choices}, "seconds": dt,
            "images_per_s": batch / dt,
            "tokens_per_s": float(lengths.sum()) / dt, "steps": steps,
            "mean_tokens": float(lengths.mean()), "tokens_sha1": digest, "bound_s": bound_s,
            "fraction_of_bound": bound_s / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="fashion-mnist-small")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 weights and KV cache (GPU)")
    ap.add_argument("--bandwidth", type=float, default=4.8e12)
    ap.add_argument("--compare", action="store_true",
                    help="GPU: also time the model's PyTorch step (where the plan fuses it) "
                    "and the CPU loop (host round trip per token)")
    ap.add_argument("--kernel", action="store_true",
                    help="GPU: check and time the decode-attention kernel alone first")
    ap.add_argument("--step-check", action="store_true",
                    help="GPU: check the fused decode step against the model's and time one "
                    "step of each alone")
    ap.add_argument("--tf32", action="store_true",
                    help="GPU: let fp32 matrix products use TF32 tensor cores")
    ap.add_argument("--profile", type=int, default=0, metavar="B",
                    help="GPU: profile a whole generation at batch B per variant (kernel table)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    torch.set_num_threads(args.threads)
    model = WaveletGPT.from_pretrained(args.model, device=device)
    dtype_bytes = 4
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.bf16:
        model = model.to(torch.bfloat16)
        dtype_bytes = 2
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor()
           or platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "cpus": os.cpu_count(), "dtype": "bf16" if args.bf16 else "fp32",
           "tf32": args.tf32,
           "params": model.num_params()}
    name = args.out or f"sample_speed_{args.model}_{device}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"env": env, "rows": []}
    rows = report["rows"]

    def save() -> None:
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))

    if args.kernel and device == "cuda":
        report["kernel"] = kernel_check(model, max(args.batch), args.bandwidth)
        save()
    if args.step_check and device == "cuda":
        report["step"] = step_check(model, max(args.batch))
        save()
    chosen = plan(model)  # the machine's own (default sampling settings)
    report["plan"] = {"text": str(chosen), "why": dict(chosen.why)}
    print(f"sampling plan:\n{chosen}")
    # (label, plan)
    variants: list[tuple[str, SamplingPlan]] = [(f"{chosen.loop}-loop/{chosen.step}", chosen)]
    if device == "cuda" and args.compare:
        if chosen.step == "fused":
            variants.append(("gpu-loop/model", chosen.replace(step="model", draw="pytorch")))
        variants.append(("cpu-loop/model", SamplingPlan("cpu", "model", "pytorch", "none",
                                                        "pytorch", why={"loop": "--compare"})))

    print(f"{args.model} on {env['device']} ({env['dtype']}, {env['params']} parameters)")
    print(f"{'variant':>20} {'batch':>6} {'seconds':>8} {'img/s':>9} {'tok/s':>11} "
          f"{'steps':>6} {'bound s':>8} {'of bound':>8}")
    for label, sampling in variants:
        try:
            # warm-up: numba and cuBLAS initialisation
            generate(model, [0] * 8, seed=0, max_tokens=600, plan=sampling)
            for b in args.batch:
                # and once at the timed batch: Triton builds its kernel for the batch's chunk
                # size
                generate(model, np.arange(b) % model.config.num_classes, seed=0, plan=sampling)
                r = run(model, b, seed=1, bandwidth=args.bandwidth, dtype_bytes=dtype_bytes,
                        sampling=sampling)
                rows.append({**r, "variant": label})
                show(rows[-1])
                save()
            if args.profile and sampling.loop == "gpu":
                profile(model, args.profile, sampling,
                        RESULTS / f"{name}_profile_{label.replace('/', '-')}.txt")
        except Exception as e:  # noqa: BLE001 - a failed variant is a result too
            rows.append({"variant": label, "error": f"{type(e).__name__}: {e}"[:2000]})
            print(rows[-1], flush=True)
            save()


def kernel_check(model, batch: int, bandwidth: float) -> dict:
    """The Triton decode attention against its reference on this model's shapes (random
    queries and caches, every row at its own random position; fp32 and bf16, tensor-core tiles
    and plain products), then alone on the clock (20 calls replayed as one CUDA graph, so
    launches do not count): the bytes of cache it reads per second, against the bound's
    bandwidth."""
    from wavar.model import kernels

    c = model.config
    hd = c.n_embd // c.n_head
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device="cuda").manual_seed(0)
    out: dict = {"batch": batch, "head_dim": hd, "heads": c.n_head, "kv_heads": c.n_kv_head,
                 "cache_len": c.max_seq_len + 1, "dtype": str(dtype), "checks": [],
                 "timings": []}

    def inputs(b: int, fill: str, dt: torch.dtype = dtype):
        def rand(*shape):
            return torch.randn(*shape, generator=gen, device="cuda").to(dt)

        length = c.max_seq_len + 1
        kc, vc = rand(b, c.n_kv_head, length, hd), rand(b, c.n_kv_head, length, hd)
        if fill == "random":
            p = torch.randint(0, c.max_seq_len, (b,), generator=gen, device="cuda")
            p[1::7] = -1  # some finished rows
        else:
            p = torch.full((b,), c.max_seq_len - 1, device="cuda")
        return (rand(b, c.n_head, hd), rand(b, c.n_kv_head, hd), rand(b, c.n_kv_head, hd),
                kc, vc, p)

    # with the model's window and with a window of 300 (some chunks then read nothing)
    windows = sorted({0, 300, c.attn_window})
    for dt, dot, b, chunk, window in itertools.product((torch.float32, torch.bfloat16),
                                                       (True, False), sorted({1, 64, batch}),
                                                       (None, 128), windows):
        q, k, v, kc, vc, p = inputs(b, "random", dt)
        kc2, vc2 = kc.clone(), vc.clone()
        want = kernels.decode_attention_reference(q, k, v, kc, vc, p, window=window)
        got = kernels.decode_attention_triton(q, k, v, kc2, vc2, p, chunk=chunk,
                                              dot=dot, window=window)
        live = p >= 0
        out["checks"].append({
            "dtype": str(dt), "dot": dot, "batch": b, "window": window,
            "chunk": chunk or kernels.default_chunk(b * c.n_kv_head, kc.size(2),
                                                    q.device),
            "max_abs_diff": float((got - want)[live].float().abs().max()),
            "finished_rows_zero": bool((got[~live] == 0).all()),
            "caches_equal": bool(torch.equal(kc, kc2) and torch.equal(vc, vc2))})
        print("kernel check", out["checks"][-1], flush=True)

    per_pos = 2 * c.n_kv_head * hd * dtype.itemsize  # one layer's key and value
    configs: list[dict] = [{"impl": "reference"}, {"impl": "triton", "dot": False},
                           {"impl": "triton"}]
    configs += [{"impl": "triton", "precision": pr} for pr in ("tf32", "tf32x3", "ieee")]
    configs += [{"impl": "triton", "chunk": ch} for ch in (256, 1024)]
    for b in sorted({1, 64, batch}):
        for fill in ("random", "full"):
            q, k, v, kc, vc, p = inputs(b, fill)
            read = float(per_pos * (p[p >= 0] + 1).sum())
            for cfg in configs:
                options = {key: x for key, x in cfg.items() if key != "impl"}
                try:
                    if cfg["impl"] == "reference":
                        sec = clock(kernels.decode_attention_reference, (q, k, v, kc, vc, p))
                    else:
                        sec = clock(lambda *a, o=options: kernels.decode_attention_triton(*a, **o),
                                    (q, k, v, kc, vc, p))
                except Exception as e:  # noqa: BLE001 - a tiling that does not build
                    out["timings"].append({**cfg, "batch": b, "fill": fill,
                                           "error": f"{type(e).__name__}: {e}"[:300]})
                    continue
                out["timings"].append({**cfg, "batch": b, "fill": fill, "us": sec * 1e6,
                                       "bytes": read, "GB_per_s": read / sec / 1e9,
                                       "of_bandwidth": read / sec / bandwidth})
                print("kernel time", out["timings"][-1], flush=True)
    return out


def clock(fn, args) -> float:
    """Seconds per call, 20 calls captured as one CUDA graph and replayed (launches do not
    count)."""
    fn(*args)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(20):
            fn(*args)
    graph.replay()
    start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / 100


def step_check(model, batch: int) -> dict:
    """The fused decode step against ``model.decode_step`` (per-row attention) on this model:
    random previous tokens, slots and caches, every row at a random position (one in seven
    finished); then one step of each alone on the clock, at those positions and at the
    positions of a typical generation's middle (every row at step 900)."""
    from wavar.sample.fused_step import FusedDecodeStep
    from wavar.sample.steps import StepInputs

    c = model.config
    gen = torch.Generator(device="cuda").manual_seed(0)
    out: dict = {"batch": batch, "checks": [], "timings": []}
    fused = FusedDecodeStep(model)
    fused16 = FusedDecodeStep(model, weights="fp16")
    # the accuracy of each product precision, against the model's own step
    accuracy = {"default": fused, "tf32": FusedDecodeStep(model, precision="tf32",
                                                          weights="fp32"),
                "fp16 weights": fused16}

    def inputs(b: int):
        cache = model.new_cache(b)
        cache.k.normal_(generator=gen)
        cache.v.normal_(generator=gen)
        ints = [torch.randint(0, n, (b,), generator=gen, device="cuda") for n in (
            c.vocab_size + 1, c.n_planes_max, c.n_channels, c.max_level + 1, 4, c.n_kinds)]
        mt = torch.randint(c.m_tilde_min, c.m_tilde_max + 1, (b,), generator=gen, device="cuda")
        pos = torch.rand(b, 2, generator=gen, device="cuda")
        t = torch.randint(0, c.max_seq_len - 1, (b,), generator=gen, device="cuda")
        t[1::7] = -1
        return cache, ints[0], StepInputs(torch.stack(ints[1:], 1), pos), mt, t

    def model_step(cache, prev, step_inputs, mt, t):
        return model.decode_step(cache, prev, step_inputs.slots, step_inputs.pos, mt, t)

    for b in sorted({1, 64, batch}):
        cache, prev, step_inputs, mt, t = inputs(b)
        ref = type(cache)(cache.k.clone(), cache.v.clone())
        want = model_step(ref, prev, step_inputs, mt, t)
        live = t >= 0
        for products, step in accuracy.items():
            mine = type(cache)(cache.k.clone(), cache.v.clone())
            got = step(mine, prev, step_inputs, mt, t)
            out["checks"].append({
                "batch": b, "products": products, "weights": step.weights,
                "max_abs_diff_logits": float((got - want)[live].abs().max()),
                "max_abs_logit": float(want[live].abs().max()),
                "max_abs_diff_cache": float(max((mine.k - ref.k).abs().max(),
                                                (mine.v - ref.v).abs().max()))})
            print("step check", out["checks"][-1], flush=True)
        steps = {"rows": model_step, "fused": fused,
                 "fused/weights " + fused16.weights: fused16}
        for fill in ("random", "900"):
            if fill == "900":
                t = torch.full_like(t, 900)
            for name, step in steps.items():
                sec = clock(step, (cache, prev, step_inputs, mt, t))
                out["timings"].append({"step": name, "batch": b, "fill": fill, "us": sec * 1e6})
                print("step time", out["timings"][-1], flush=True)
    return out


def show(r: dict) -> None:
    print(f"{r['variant']:>20} {r['batch']:>6} {r['seconds']:>8.2f} "
          f"{r['images_per_s']:>9.1f} {r['tokens_per_s']:>11.0f} {r['steps']:>6} "
          f"{r['bound_s']:>8.3f} {r['fraction_of_bound']:>8.1%} {r['tokens_sha1']}", flush=True)


def profile(model, batch: int, sampling: SamplingPlan, path: Path) -> None:
    """CUDA kernel time of a whole generation at ``batch``: where a step's time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    labels = np.arange(batch) % model.config.num_classes
    kw = dict(seed=2, plan=sampling)
    generate(model, labels, **kw)  # capture and compile outside
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        steps = max(len(s) for s in generate(model, labels, **kw))
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40)
    path.write_text(f"batch {batch}, {steps} steps, plan {sampling.loop}/{sampling.step}/"
                    f"{sampling.attention}/{sampling.graphs}/{sampling.draw}: {dt:.3f} s "
                    f"({dt / steps * 1e3:.3f} ms per step, profiler on)\n{table}\n")
    print(path.read_text()[:6000])


if __name__ == "__main__":
    main()
