#!/usr/bin/env bash
# Second device call: the two MNIST models (GPU 0: bundled small, GPU 1: large), then the
# sampling-speed benchmark of the bundled Fashion-MNIST model on one GPU (.carry/models).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=$PWD/.carry/cache PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; RUNS=/tmp/runs; mkdir -p "$RUNS" "$OUT"
python3 - <<'PY'
from wavar.codec import WaveletCodec
from wavar.data.shards import tokenize
for split in ("train", "test"):
    tokenize("mnist", WaveletCodec("haar", final_threshold=2**-3), split, progress=False)
PY
EXTRA=${EXTRA:-}
CUDA_VISIBLE_DEVICES=0 python3 -m wavar.cli.train --config configs/mnist.toml out_dir=$RUNS/mnist $EXTRA > $RUNS/mnist.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 -m wavar.cli.train --config configs/mnist-large.toml out_dir=$RUNS/mnist-large batch_size=64 $EXTRA > $RUNS/mnist-large.log 2>&1 &
wait
for r in mnist mnist-large; do
  tail -c 2000 $RUNS/$r.log | tr '\r' '\n' | tail -2
  cp $RUNS/$r.log $RUNS/$r/train.log 2>/dev/null
  tar czf "$OUT/$r.tgz" -C $RUNS/$r model metrics.jsonl samples train.log 2>/dev/null
done
cp $RUNS/mnist/ckpt.pt "$OUT/mnist-ckpt.pt"
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/sample_speed.py --model .carry/models/fashion-mnist \
  --batch 1 64 1024 --bf16 --out sample_speed_fashion-mnist_h200 2>&1 | tee "$OUT/speed.txt"
cp benchmarks/results/sampling/sample_speed_fashion-mnist_h200.json "$OUT/"
nvidia-smi --query-gpu=name --format=csv >> "$OUT/speed.txt"
ls -la "$OUT"
