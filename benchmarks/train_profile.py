"""Where a packed training step's time goes, and what an attention window saves (issue 19).

A training step as the loop runs it (blocks compiled, bf16 autocast, fused AdamW, clipping;
the embeddings, head and loss eager), on a synthetic packed batch of ``--batch`` sequences
whose lengths are drawn from CIFAR-10's real lossless lengths (``--lengths``: mean, sd, lowest,
longest), random tokens, slots and features: the values do not change the work, the shapes
do. For each ``--windows`` value (0 = full attention) the same model shape is timed (median
of ``--steps`` steps after warm-up: tokens/s) and one step is profiled (CUDA time by kernel,
top ``--top``), all in one process, so the figures compare side by side.

    PYTHONPATH=. python benchmarks/train_profile.py --config configs/cifar10-lossless-large.toml \
        --windows 0,1024,256 --out benchmarks/results/train/train_profile_cifar10_h100.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wavar.codec.grammar import CONTEXT_SIZES
from wavar.model.transformer import WaveletGPT, config_from_preset, loss_bits
from wavar.train.config import load_config
from wavar.train.loop import _autocast, _compile_blocks
from wavar.train.packing import pack_batch


def synthetic_batch(cfg, batch: int, lengths: tuple[int, int, int, int],
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An unpacked numpy batch of the data contract with CIFAR-like lengths."""
    mean, sd, low, high = lengths
    n = np.clip(rng.normal(mean, sd, batch), low, high).astype(np.int64)
    n[0] = high
    T = int(n.max())
    valid = np.arange(T)[None] < n[:, None]
    m = cfg.model_args
    slots = np.stack([rng.integers(0, 16, (batch, T)), rng.integers(0, 3, (batch, T)),
                      rng.integers(0, 6, (batch, T)), rng.integers(0, 4, (batch, T)),
                      rng.integers(0, 4, (batch, T))], -1)
    out = dict(tokens=rng.integers(0, 7, (batch, T)), slots=slots,
               pos=rng.random((batch, T, 2)).astype(np.float32),
               legal=np.full((batch, T), 127), valid=valid,
               m_tilde=rng.integers(8, 12, batch), label=rng.integers(0, 10, batch))
    if m.get("decoder_state"):
        out["context"] = np.stack([rng.integers(0, k, (batch, T)) for k in CONTEXT_SIZES],
                                  -1).astype(np.int8)
    return {k: np.where(valid, v, 0) if k in ("tokens", "legal") else v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--windows", default="0,1024")
    ap.add_argument("--batch", type=int, default=None, help="sequences a step (config's)")
    ap.add_argument("--lengths", default="11063,1500,6000,17781")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_config(args.config, [])
    batch_size = args.batch or cfg.batch_size
    lengths = tuple(int(x) for x in args.lengths.split(","))
    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        b = pack_batch(synthetic_batch(cfg, batch_size, lengths, rng), cfg.pack_len,
                       row_multiple=2)
        batches.append({k: v.to(device) for k, v in b.items()})
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "config": args.config, "batch": batch_size, "lengths": lengths,
              "rows": list(batches[0]["doc"].shape), "runs": []}
    for window in (int(w) for w in args.windows.split(",")):
        torch.manual_seed(0)
        mc = config_from_preset(cfg.model, **{**cfg.model_args, "attn_window": window})
        model = WaveletGPT(mc).to(device).train()
        _compile_blocks(model, cfg.pad_to)
        opt = torch.optim.AdamW(model.optim_groups(0.1), lr=1e-4, fused=True)

        def step(i: int, model=model, opt=opt) -> None:
            b = batches[i % len(batches)]
            with _autocast(device):
                bits, n = loss_bits(model(b), b)
            opt.zero_grad(set_to_none=True)
            (bits / n).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        t0 = time.time()
        for i in range(4):
            step(i)
        torch.cuda.synchronize()
        warm = time.time() - t0
        times = []
        for i in range(args.steps):
            torch.cuda.synchronize()
            t = time.time()
            step(i)
            torch.cuda.synchronize()
            times.append(time.time() - t)
        tokens = sum(int(b["valid"].sum()) for b in batches) / len(batches)
        sec = statistics.median(times)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step(0)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top,
                                          max_name_column_width=70)
        run = {"window": window, "warm_up_s": warm, "step_s": sec, "tokens_per_s": tokens / sec,
               "peak_gb": torch.cuda.max_memory_allocated() / 1e9, "profile": table}
        report["runs"].append(run)
        print(f"window {window}: {sec * 1e3:.1f} ms a step, {tokens / sec:,.0f} tokens/s "
              f"(warm-up {warm:.0f} s)\n{table}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        del model, opt
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
