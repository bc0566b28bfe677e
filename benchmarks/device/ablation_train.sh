#!/usr/bin/env bash
# The decoder-state ablation (issue 17), training half, in one call on one H200:
# Fashion-MNIST and MNIST, each with and without the decoder-state features
# (model_args.decoder_state=1 / 0), the bundled models' configs and wall-time budget, all four
# runs side by side on the one GPU (so each arm gets the same share of it). Needs the dataset
# caches under .carry/cache (WAVAR_CACHE) and the PyWavelets wheel in .whl. Writes
# <run>.tgz (model/, metrics.jsonl, train.log) and summary.txt to $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=$PWD/.carry/cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; RUNS=${RUNS:-$PWD/runs/ablation}; mkdir -p "$RUNS" "$OUT"
BUDGET=${BUDGET:-420}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/summary.txt"
python3 - <<'PY'
from wavar.codec import WaveletCodec
from wavar.data.shards import tokenize
for name, codec in (("mnist", WaveletCodec("haar", final_threshold=2**-3)),
                    ("fashion-mnist", WaveletCodec("bior4.4", final_threshold=2**-4))):
    for split in ("train", "test"):
        tokenize(name, codec, split, progress=False)
PY
for ds in fashion-mnist mnist; do
  for ctx in 0 1; do
    python3 -m wavar.cli.train --config configs/$ds.toml --no-samples out_dir=$RUNS/$ds-ctx$ctx \
      model_args.decoder_state=$ctx budget_s=$BUDGET > $RUNS/$ds-ctx$ctx.log 2>&1 &
  done
done
wait
for ds in fashion-mnist mnist; do
  for ctx in 0 1; do
    r=$ds-ctx$ctx
    echo "== $r: $(tail -c 4000 $RUNS/$r.log | tr '\r' '\n' | grep -E '^step|rror' | tail -2)" \
      | tee -a "$OUT/summary.txt"
    cp $RUNS/$r.log $RUNS/$r/train.log 2>/dev/null
    tar czf "$OUT/$r.tgz" -C $RUNS/$r model metrics.jsonl train.log 2>/dev/null
  done
done
ls -la "$OUT"
