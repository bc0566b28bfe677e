#!/usr/bin/env bash
# Samples of one model in chunks that each fit one device call, for the full FID protocol of a
# model too slow to sample 10,000 images in one (issue 19: the lossless CIFAR-10 model, ~11,300
# tokens an image). Each chunk is `wavar sample --classes all --n N` (10 x N images) saved as
# $OUT/<model>_s<seed>.npz; chunk seeds must lie further apart than a chunk's batches (batch i of
# a chunk draws seed + i). Join and judge them afterwards, anywhere:
#   wavar eval --samples s0.npz s100.npz ... --dataset cifar10 --fid --cas
#
#   MODEL=cifar10-lossless N=250 SEEDS="0 100" bash benchmarks/device/sample_chunks.sh
#
# DEADLINE (seconds, default 540): no chunk starts once it is past. ARGS: more `wavar sample`
# arguments (a sampling setting, e.g. ARGS="--temperature 1,1,1,1,0.9,0.8,0.7"), and TAG a
# name for them in the files' names (<model>_<tag>_s<seed>.npz).
set -uo pipefail
source "$(dirname "$0")/env.sh"
start=$SECONDS
for s in ${SEEDS:-0}; do
  if (( SECONDS - start > ${DEADLINE:-540} )); then echo "past the deadline: seed $s not run"; break; fi
  python3 -m wavar.cli.sample --model "${MODEL:-cifar10-lossless}" --classes all --n "${N:-250}" \
    --seed "$s" --device cuda -v ${ARGS:-} \
    --npz "$OUT/$(basename "${MODEL:-cifar10-lossless}")${TAG:+_$TAG}_s$s.npz" \
    -o "/tmp/s$s.png" 2>&1 | tee -a "$OUT/sample_chunks.log"
done
