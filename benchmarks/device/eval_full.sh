#!/usr/bin/env bash
# The full evaluation protocol (docs/design.md §4) of one model on one dataset, on CUDA:
# 10,000 samples (1,000 per class) -> FID/KID against the 10,000 test images and the real-data
# floor (10,000 train images vs test), CAS, test-set NLL, and rate-distortion (--rd) on the first
# 200 test images beside JPEG 2000. Writes <NAME>.json, <NAME>_samples.npz, <NAME>_samples.png,
# <NAME>_rd.png and <NAME>.log into $OUT.
#
#   benchmarks/device/eval_full.sh MODEL DATASET [extra wavar eval args, e.g. --cfg 2 --bf16]
#
# Environment (PYTHONPATH must already reach wavar and its dependencies):
#   OUT                 output folder (default /tmp/out)
#   WAVAR_CACHE         cache with the datasets (and, once computed, the reference statistics
#                       and the CAS classifier: keep it between calls on a warm machine)
#   WAVAR_FID_NETWORK   the Inception network file (standard, or assembled from fp16 parts), or
#   FID_PARTS           a folder holding all fp16 part folders: assembled here first
#   NAME                report name (default eval_<model>_<dataset>_full)
#   EVAL_TIMEOUT        seconds before the evaluation is stopped (default 570)
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL DATASET [wavar eval args]" >&2; exit 2
fi
MODEL=$1; DATASET=$2; shift 2
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${WAVAR_FID_NETWORK:-}" ] && [ -n "${FID_PARTS:-}" ]; then
  WAVAR_FID_NETWORK=$($PY -m benchmarks.fid_parts assemble "$FID_PARTS" \
    --out "${TMPDIR:-/tmp}/wavar-fid/default_1_fp16.pt") || exit 1
  export WAVAR_FID_NETWORK
fi
echo "FID network: ${WAVAR_FID_NETWORK:-<cached standard>}"
NAME=${NAME:-eval_$(basename "$MODEL")_${DATASET}_full}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/$NAME.log" 2>&1
timeout "${EVAL_TIMEOUT:-570}" $PY -m wavar.cli.eval --model "$MODEL" --dataset "$DATASET" \
  --fid --cas --nll --rd --n 10000 --device cuda -o "$OUT/$NAME.json" "$@" 2>&1 \
  | tee -a "$OUT/$NAME.log"
rc=${PIPESTATUS[0]}
ls -la "$OUT"
exit "$rc"
