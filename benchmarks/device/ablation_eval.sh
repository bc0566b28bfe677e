#!/usr/bin/env bash
# The decoder-state ablation (issue 17), evaluation half, on one H200: the full protocol's FID
# and KID (10,000 samples, 1,000 per class, against the 10,000 test images) and the test-set
# NLL of each model folder under .carry/ablation (from ablation_train.sh), default sampling
# settings. Needs .carry/fid16 (the FID network in fp16 parts), the datasets' caches (the FID
# report's real-data floor reads the training split too) under $WAVAR_CACHE (default
# .carry/cache) and the PyWavelets wheel in .whl. The four together pass the device's 64 MiB;
# session 8 therefore ran it with the test sets alone (the samples were drawn and saved, FID
# stopped for want of train.npz) and, on the still-warm machine, `wavar eval --samples
# /tmp/ablation_eval/eval_<run>_samples.npz --dataset DATASET --fid --device cuda` with the
# full caches. Writes
# ablation_eval.tgz to $OUT: eval_<run>.json, .log and sample grids (not the sample npz files).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=${WAVAR_CACHE:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; REPORTS=/tmp/ablation_eval; mkdir -p "$OUT" "$REPORTS"
WAVAR_FID_NETWORK=$(python3 -m benchmarks.fid_parts assemble .carry/fid16 \
  --out /tmp/wavar-fid/default_1_fp16.pt) || exit 1
export WAVAR_FID_NETWORK
for r in ${RUNS:-fashion-mnist-ctx0 fashion-mnist-ctx1 mnist-ctx0 mnist-ctx1}; do
  ds=${r%-ctx*}
  timeout ${EVAL_TIMEOUT:-200} python3 -m wavar.cli.eval --model .carry/ablation/$r --dataset $ds \
    --fid --nll --n 10000 --device cuda -o "$REPORTS/eval_$r.json" ${EXTRA:-} \
    > "$REPORTS/eval_$r.log" 2>&1
  echo "== $r rc=$? $(tail -n 4 $REPORTS/eval_$r.log | tr '\n' ' ' | cut -c1-400)"
  tar czf "$OUT/ablation_eval.tgz" -C "$REPORTS" --exclude='*.npz' .
done
