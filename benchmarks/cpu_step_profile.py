"""CPU cost of one sampling step of a zoo model (2 images, 1 thread), with a torch profile.

    PYTHONPATH=. python benchmarks/cpu_step_profile.py --model cifar10 > \
        benchmarks/results/sampling/cpu_step_profile_cifar10.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import profile

from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="cifar10")
    args = ap.parse_args()
    torch.set_num_threads(1)
    m = WaveletGPT.from_pretrained(args.model)
    generate(m, [3], seed=0, max_tokens=50)  # warm-up (numba, allocator)
    for steps in (300, 1200):
        t = time.perf_counter()
        generate(m, [3, 3], seed=0, max_tokens=steps)
        print(f"{steps} steps: {(time.perf_counter() - t) / steps * 1000:.1f} ms/step")
    with profile() as p:
        generate(m, [3, 3], seed=0, max_tokens=300)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
