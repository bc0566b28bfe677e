#!/usr/bin/env bash
# Sampling speed of the sampler before issue 16's refactor (commit b65aade, unpacked into
# .carry/old: `git archive b65aade wavar benchmarks/sample_speed.py benchmarks/_common.py |
# tar -x -C .carry/old`, without its zoo weights) and after it, side by side on one H200,
# twice each, TF32, batch 1 / 64 / 1024, for the bundled fashion-mnist and mnist models; then a
# model with the decoder-state features (.carry/ablation/fashion-mnist-ctx1) and a model whose
# head size the Triton kernels cannot tile (mnist-large's shape, random weights) on the
# default GPU path. Needs /tmp/site (the PyWavelets wheel installed) or PYTHONPATH set.
# Writes speed.tgz to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 WAVAR_CACHE=$PWD/.carry/cache
S=${SITE:-/tmp/site}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/speed"
for m in fashion-mnist mnist; do
  for rep in 1 2; do
    PYTHONPATH=$S:$PWD/.carry/old timeout 100 python3 .carry/old/benchmarks/sample_speed.py \
      --model wavar/zoo/weights/$m --batch 1 64 1024 --tf32 --out old_${m}_$rep
    cp .carry/old/benchmarks/results/old_${m}_$rep.json "$OUT/speed/"
    PYTHONPATH=$S:$PWD timeout 100 python3 benchmarks/sample_speed.py --model $m \
      --batch 1 64 1024 --tf32 --out new_${m}_$rep
    cp benchmarks/results/sampling/new_${m}_$rep.json "$OUT/speed/"
  done
done
PYTHONPATH=$S:$PWD timeout 90 python3 benchmarks/sample_speed.py \
  --model .carry/ablation/fashion-mnist-ctx1 --batch 1024 --tf32 --out new_fmctx1
cp benchmarks/results/sampling/new_fmctx1.json "$OUT/speed/"
PYTHONPATH=$S:$PWD timeout 60 python3 - <<'PY' 2>&1 | tail -8 | tee "$OUT/speed/nonpow2.txt"
import time

import torch

from wavar.model.config import ModelConfig
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import generate

c = WaveletGPT.from_pretrained("mnist-small").config.to_dict()
c.update(n_layer=2, n_embd=224, n_head=4, n_kv_head=4)
m = WaveletGPT(ModelConfig.from_dict(c)).cuda().eval()
t = time.time()
s = generate(m, [0] * 64, seed=0)
torch.cuda.synchronize()
print(s.plan)
print("mnist-large shape (head 56) on cuda: 64 sequences, mean length",
      sum(map(len, s)) / 64, "in %.1f s" % (time.time() - t))
PY
tar czf "$OUT/speed.tgz" -C "$OUT" speed
