#!/usr/bin/env bash
# Sampling schedules (issue 17): the full protocol's FID and KID (10,000 samples, 1,000 per
# class, seed 0, against the 10,000 test images; no real-data floor: it needs the training
# split, and it does not depend on the model) of MODEL under each setting of SETTINGS (lines
# "name: wavar-eval-arguments"), on one H200; the first setting also gets the test-set NLL.
# Needs .carry/fid16 (the FID network in fp16 parts), the test set under $WAVAR_CACHE
# (default .carry/testsets) and the PyWavelets wheel in .whl. Writes schedules_<tag>.tgz
# (eval_<name>.json, .log, sample grids) to $OUT. NLL=0 skips the NLL (~50 s for 10,000
# Fashion-MNIST test images at 2^-6 on an H200).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=${WAVAR_CACHE:-$PWD/.carry/testsets} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; TAG=${TAG:-sweep}; REPORTS=/tmp/schedules_$TAG; mkdir -p "$OUT" "$REPORTS"
MODEL=${MODEL:?model folder or zoo name}; DATASET=${DATASET:?dataset}
# an earlier call on a warm machine may have assembled it already (then .carry/fid16 need not
# travel: it is 42 of the 64 MiB a call carries)
if [ ! -f "${WAVAR_FID_NETWORK:-/nonexistent}" ]; then
  WAVAR_FID_NETWORK=$(python3 -m benchmarks.fid_parts assemble .carry/fid16 \
    --out /tmp/wavar-fid/default_1_fp16.pt) || exit 1
fi
export WAVAR_FID_NETWORK
first=--nll; [ "${NLL:-1}" = 0 ] && first=
while IFS= read -r line; do
  [ -z "$line" ] && continue
  name=${line%%:*}; args=${line#*:}
  timeout ${EVAL_TIMEOUT:-240} python3 -m wavar.cli.eval --model "$MODEL" --dataset "$DATASET" \
    --fid --no-floor $first --n ${N:-10000} --batch ${BATCH:-2000} --device cuda $args \
    -o "$REPORTS/eval_$name.json" > "$REPORTS/eval_$name.log" 2>&1
  echo "== $name ($args) rc=$? $(grep -E '^FID|^KID|bits' $REPORTS/eval_$name.log | tr '\n' ' ' | cut -c1-300)"
  first=
  tar czf "$OUT/schedules_$TAG.tgz" -C "$REPORTS" --exclude='*.npz' .
done <<< "$SETTINGS"
