#!/usr/bin/env bash
# Session 2 on a warm 4-GPU H200 machine (the device tool), in chained calls. Training and
# evaluation run as detached daemons (setsid) that outlive each call; later calls only bring
# data (each call carries < 64 MiB) and collect results. Every daemon works from a copy of the
# repo in /tmp/repo, so a call's fresh copy of the tree never changes code under a running job.
#
#   GPU 3:     raster baseline (fashion-mnist, same budget as the wavelet model), then the full
#              eval protocol of mnist, fashion-mnist and the raster model
#   GPUs 0+1:  CIFAR-10 lossy (torchrun, DDP), then its full eval on GPU 0
#   GPU 2:     CIFAR-10 lossless, then its test-set bits/dim
#
# Calls (carry in brackets):
#   session2.sh setup             [.whl .carry/s1]   install, caches, start the GPU-3 queue
#   session2.sh stage DIR         [DIR]              CIFAR shards and FID-network parts
#   session2.sh start-cifar BUDGET_S                 start the CIFAR runs (all staged shards;
#                                                    session 2 ran 720 s, after a restart)
#   session2.sh status | collect                     look / copy results into $OUT
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/repo PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export WAVAR_CACHE=/tmp/wc WAVAR_CIFAR10=/tmp/cifar10
export WAVAR_FID_NETWORK=/tmp/fid/default_1_fp16.pt
# several runs share the host's cores: without a cap each process spins all 64 (load 172 seen,
# trainings at a third of their speed)
export OMP_NUM_THREADS=8 MKL_NUM_THREADS=8 NUMBA_NUM_THREADS=8
RUNS=/tmp/runs RES=/tmp/res
mkdir -p $RUNS $RES /tmp/cifar10 /tmp/fidparts /tmp/fid $WAVAR_CACHE
cmd=${1:-status}; shift || true

evaluate() {  # evaluate GPU MODEL DATASET NAME [args]: the full protocol, into $RES/NAME
  local gpu=$1 model=$2 data=$3 name=$4; shift 4
  while [ ! -f $WAVAR_FID_NETWORK ]; do sleep 5; done
  mkdir -p $RES/$name
  CUDA_VISIBLE_DEVICES=$gpu OUT=$RES/$name NAME=$name EVAL_TIMEOUT=1200 \
    bash /tmp/repo/benchmarks/device/eval_full.sh "$model" "$data" --batch 2500 "$@"
}

case $cmd in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  rm -rf /tmp/repo && cp -r "$PWD" /tmp/repo && rm -rf /tmp/repo/.carry /tmp/repo/.whl
  cp -r .carry/s1/cache/* $WAVAR_CACHE/
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $RES/env.txt
  python3 -c "import torch, numba; print('torch', torch.__version__, 'numba', numba.__version__)" >> $RES/env.txt
  cat $RES/env.txt
  setsid nohup bash /tmp/repo/benchmarks/device/session2.sh queue3 > $RES/queue3.log 2>&1 < /dev/null &
  ;;
queue3)
  cd /tmp/repo
  CUDA_VISIBLE_DEVICES=3 python3 -m wavar.cli.train --config configs/fashion-mnist-raster.toml \
    out_dir=$RUNS/fashion-mnist-raster > $RUNS/fashion-mnist-raster.log 2>&1
  evaluate 3 mnist mnist eval_mnist_full
  evaluate 3 fashion-mnist fashion-mnist eval_fashion-mnist_full
  evaluate 3 $RUNS/fashion-mnist-raster/model fashion-mnist eval_fashion-mnist-raster_full
  ;;
stage)
  for f in "$1"/*.npz; do [ -e "$f" ] && cp "$f" /tmp/cifar10/; done
  for p in "$1"/part*; do [ -e "$p" ] && cp -r "$p" /tmp/fidparts/; done
  ls /tmp/cifar10 /tmp/fidparts
  if [ $(ls -d /tmp/fidparts/part* | wc -l) = 3 ] && [ ! -f $WAVAR_FID_NETWORK ]; then
    (cd /tmp/repo && python3 -m benchmarks.fid_parts assemble /tmp/fidparts --out $WAVAR_FID_NETWORK)
  fi
  ;;
start-cifar)
  budget=$1
  cd /tmp/repo
  python3 - <<'PY'
from wavar.codec import WaveletCodec as W
from wavar.data.shards import tokenize
tokenize("cifar10", W("bior4.4", final_threshold=2**-4), "train", progress=False)
tokenize("cifar10", W("cdf53", final_threshold=1.0), "train", progress=False)
PY
  setsid nohup bash /tmp/repo/benchmarks/device/session2.sh queue0 "$budget" > $RES/queue0.log 2>&1 < /dev/null &
  setsid nohup bash /tmp/repo/benchmarks/device/session2.sh queue2 "$budget" > $RES/queue2.log 2>&1 < /dev/null &
  sleep 20; tail -n 5 $RUNS/cifar10.log $RUNS/cifar10-lossless.log
  ;;
queue0)
  cd /tmp/repo
  CUDA_VISIBLE_DEVICES=0,1 torchrun --nproc_per_node 2 --master_port 29517 -m wavar.cli.train \
    --config configs/cifar10.toml out_dir=$RUNS/cifar10 budget_s=$1 time_limit_s=$(($1 + 60)) \
    > $RUNS/cifar10.log 2>&1
  # the protocol split over three GPUs (GPU 3's queue is done by now): FID/KID/CAS, NLL, RD
  while [ ! -f $WAVAR_FID_NETWORK ]; do sleep 5; done
  R=$RES/eval_cifar10_full; M=$RUNS/cifar10/model; mkdir -p $R
  for spec in "0 fid --fid --cas --n 10000 --batch 2500" "1 nll --nll" "3 rd --rd --rd-images 100"; do
    set -- $spec; g=$1; n=$2; shift 2
    CUDA_VISIBLE_DEVICES=$g python3 -m wavar.cli.eval --model $M --dataset cifar10 \
      --device cuda "$@" -o $R/eval_cifar10_$n.json > $R/eval_cifar10_$n.log 2>&1 &
  done
  wait
  ;;
queue2)
  cd /tmp/repo
  CUDA_VISIBLE_DEVICES=2 python3 -m wavar.cli.train --config configs/cifar10-lossless.toml \
    --no-samples out_dir=$RUNS/cifar10-lossless budget_s=$1 time_limit_s=$(($1 + 60)) \
    > $RUNS/cifar10-lossless.log 2>&1
  mkdir -p $RES/eval_cifar10-lossless
  CUDA_VISIBLE_DEVICES=2 python3 -m wavar.cli.eval --model $RUNS/cifar10-lossless/model \
    --dataset cifar10 --nll --device cuda -o $RES/eval_cifar10-lossless/eval_cifar10-lossless.json \
    > $RES/eval_cifar10-lossless/eval_cifar10-lossless.log 2>&1
  ;;
status)
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  for f in $RES/queue*.log $RUNS/*.log; do
    echo "== $f"; tail -c 1500 "$f" | tr '\r' '\n' | grep -v '^\s*$' | tail -4
  done
  ls $RES/*/ 2>/dev/null
  ;;
collect)
  OUT=${OUT:-/tmp/out}
  # results (reports, grids, logs, metrics) in one archive; sample sets and weights apart
  for r in $RUNS/*/; do
    n=$(basename $r); mkdir -p $RES/train/$n
    cp $RUNS/$n.log $RES/train/$n/train.log 2>/dev/null
    cp -r $r/metrics.jsonl $r/samples $RES/train/$n/ 2>/dev/null
  done
  for m in cifar10 cifar10-lossless fashion-mnist-raster; do
    [ -f $RUNS/$m/model/model.safetensors ] && (cd /tmp/repo && python3 -c "
from wavar.model.transformer import WaveletGPT; import torch
WaveletGPT.from_pretrained('$RUNS/$m/model').save_pretrained('$RES/models/$m', dtype=torch.float16)")
  done
  tar czf $OUT/results.tgz --exclude='*_samples.npz' --exclude=models/cifar10 \
    --exclude=models/cifar10-lossless -C $RES .
  (cd $RES && tar czf $OUT/samples.tgz $(ls */*_samples.npz 2>/dev/null | grep -v cifar10))
  (cd $RES && ls */*cifar10*_samples.npz 2>/dev/null && tar cf - */*cifar10*_samples.npz \
    | split -b 15M - $OUT/cifar10-samples.tar.)
  (cd $RES && [ -d models/cifar10 ] && tar cf - models/cifar10 | split -b 15M - $OUT/model-cifar10.tar.)
  (cd $RES && [ -d models/cifar10-lossless ] && tar cf $OUT/model-cifar10-lossless.tar models/cifar10-lossless)
  ls -la $OUT
  ;;
esac
