#!/usr/bin/env bash
# Whole test sets as .wvc files coded on one H200 (issue 21): benchmarks/compress_batched.py for
# each line "model dataset n rows workers" of RUNS (default: 1,000 CIFAR-10 test images with
# cifar10-lossless, then the MNIST and Fashion-MNIST test sets with the zoo's lossless pixel
# models, which the 2-core CPU has coded too: results/codec/compress_batched_*_cpu.json), each
# under TIMEOUT seconds; its JSON (written once every worker has coded, again when all have
# decoded) and log (a line a worker and phase) go to $OUT. The host steps the range coder row
# by row (~50 us a row and a step on this project's CPU), so a whole test set may take minutes:
# give each call one line of RUNS if the three do not fit in one.
#
#   WAVAR_CACHE=$PWD/.carry/testsets RUNS='mnist mnist 10000 256 14' \
#     bash benchmarks/device/compress_gpu.sh
#
# CIFAR-10's lossless sequences (11,063 tokens an image, 14,814 at most) do not fit both
# phases in one call: PHASE=encode keeps the files in .carry/wvc-<model> and returns them as
# $OUT/wvc-<model>.tgz; unpack it into .carry here, carry .carry/wvc-<model>, and PHASE=decode
# in the next call decodes them and completes the report. Each worker's slice is kept the
# moment it ends, so a call cut short by TIMEOUT still returns the finished slices: the same
# PHASE again, carrying .carry/wvc-<model>, runs only the rest. (4 workers of 250 rows coded
# 250 CIFAR-10 images each in ~445 s on an H200, one worker not within 545 s with set-up;
# 8 workers of 125 rows finished no slice within 400 s: they share the GPU and the host, so a
# call of its own with TIMEOUT=590 is what a phase needs, and the default is back at 4 x 250.)
#
# Needs .whl (PyWavelets and constriction, cp312: the machine has neither) and the test sets
# under WAVAR_CACHE (datasets/{mnist,fashion-mnist,cifar10}/ with meta.json and test.npz).
set -uo pipefail
source "$(dirname "$0")/env.sh"
python3 -c 'import constriction' 2>/dev/null \
  || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
RUNS=${RUNS:-$'cifar10-lossless cifar10 1000 250 4
mnist-raster-medium mnist 10000 256 14\nfashion-mnist-raster-medium fashion-mnist 10000 256 14'}
PHASE=${PHASE:-both}
while read -r model dataset n rows workers; do
  [ -z "$model" ] && continue
  log=$OUT/compress_batched_${model}_cuda.log; phase=()
  if [ "$PHASE" != both ]; then
    log=${log%.log}_$PHASE.log; phase=(--phase "$PHASE" --files ".carry/wvc-$model")
  fi
  timeout "${TIMEOUT:-540}" python3 benchmarks/compress_batched.py --model "$model" \
    --dataset "$dataset" --n "$n" --device cuda --rows "$rows" --workers "$workers" \
    "${phase[@]}" > "$log" 2>&1
  echo "== $model $PHASE rc=$? $(grep -E '^worker|"(file_bpd|payload_over_model|encode_images_per_s|decode_images_per_s|round_trip_exact)"' "$log" | tr -s ' ' | tr '\n' ' ')"
  cp "benchmarks/results/codec/compress_batched_${model}_cuda.json" "$OUT/" 2>/dev/null
  [ "$PHASE" = encode ] && tar czf "$OUT/wvc-$model.tgz" -C .carry "wvc-$model"
done <<< "$RUNS"
