#!/usr/bin/env bash
# The decoder-state ablation (issue 17), evaluation half, on one H200: the full protocol's FID
# and KID (10,000 samples, 1,000 per class, against the 10,000 test images) and the test-set
# NLL of each model folder under .carry/ablation (from ablation_train.sh), default sampling
# settings. Needs .carry/fid16 (the FID network in fp16 parts), the test sets under
# .carry/cache (WAVAR_CACHE) and the PyWavelets wheel in .whl. Writes eval_<run>.json and
# eval_<run>.log into $OUT/ablation/ (bundled as ablation_eval.tgz) and a summary.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=$PWD/.carry/cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/ablation"
WAVAR_FID_NETWORK=$(python3 -m benchmarks.fid_parts assemble .carry/fid16 \
  --out /tmp/wavar-fid/default_1_fp16.pt) || exit 1
export WAVAR_FID_NETWORK
for r in ${RUNS:-fashion-mnist-ctx0 fashion-mnist-ctx1 mnist-ctx0 mnist-ctx1}; do
  ds=${r%-ctx*}
  timeout ${EVAL_TIMEOUT:-200} python3 -m wavar.cli.eval --model .carry/ablation/$r --dataset $ds \
    --fid --nll --n 10000 --device cuda -o "$OUT/ablation/eval_$r.json" $EXTRA \
    > "$OUT/ablation/eval_$r.log" 2>&1
  echo "== $r rc=$? $(tail -n 4 $OUT/ablation/eval_$r.log | tr '\n' ' ' | cut -c1-400)"
done
