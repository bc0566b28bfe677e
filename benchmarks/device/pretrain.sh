#!/usr/bin/env bash
# Train the pretrained models in one call on a 2-GPU H200 machine (the device tool):
#   GPU 0: mnist (bundled, small)       GPU 1: fashion-mnist (bundled, small)
#   GPU 0: mnist-large (batch 64)       GPUs 0+1: fashion-mnist-large under torchrun (DDP)
# Each run has the same training wall-time budget (configs: budget_s). Needs the MNIST and
# Fashion-MNIST caches under .carry/cache (WAVAR_CACHE) and the PyWavelets wheel in .whl.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=$PWD/.carry/cache PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; RUNS=/tmp/runs; mkdir -p "$RUNS" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
python3 -c "import torch, numba; print('torch', torch.__version__, 'numba', numba.__version__)" | tee -a "$OUT/env.txt"
# tokenize once, before the runs share the shards
python3 - <<'PY'
from wavar.codec import WaveletCodec
from wavar.data.shards import tokenize
for name, codec in (("mnist", WaveletCodec("haar", final_threshold=2**-3)),
                    ("fashion-mnist", WaveletCodec("bior4.4", final_threshold=2**-4))):
    for split in ("train", "test"):
        tokenize(name, codec, split, progress=False)
PY
EXTRA=${EXTRA:-}
CUDA_VISIBLE_DEVICES=0 python3 -m wavar.cli.train --config configs/mnist.toml out_dir=$RUNS/mnist $EXTRA > $RUNS/mnist.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 -m wavar.cli.train --config configs/fashion-mnist.toml out_dir=$RUNS/fashion-mnist $EXTRA > $RUNS/fashion-mnist.log 2>&1 &
CUDA_VISIBLE_DEVICES=0 python3 -m wavar.cli.train --config configs/mnist-large.toml out_dir=$RUNS/mnist-large batch_size=64 $EXTRA > $RUNS/mnist-large.log 2>&1 &
CUDA_VISIBLE_DEVICES=0,1 torchrun --nproc_per_node 2 --master_port 29517 -m wavar.cli.train --config configs/fashion-mnist-large.toml out_dir=$RUNS/fashion-mnist-large $EXTRA > $RUNS/fashion-mnist-large.log 2>&1 &
wait
for r in mnist fashion-mnist mnist-large fashion-mnist-large; do
  tail -c 3000 $RUNS/$r.log | tr '\r' '\n' | tail -3
  cp $RUNS/$r.log $RUNS/$r/train.log 2>/dev/null
  tar czf "$OUT/$r.tgz" -C $RUNS/$r model metrics.jsonl samples train.log 2>/dev/null
done
cp $RUNS/mnist/ckpt.pt "$OUT/mnist-ckpt.pt"; cp $RUNS/fashion-mnist/ckpt.pt "$OUT/fashion-mnist-ckpt.pt"
ls -la "$OUT"
