#!/usr/bin/env bash
# One training run alone on one H200 (issues 17-18): CONFIG (a configs/*.toml) for its
# budget_s, then the published EMA weights in fp16 (what the zoo would ship), metrics.jsonl,
# the log and a throughput summary (median tokens/s and MFU of the logged intervals after the
# first 200 steps, i.e. after compilation) to $OUT/<name>.tgz and $OUT/<name>_summary.txt
# (<name>: NAME, default the config's; a tgz over 15 MB comes back in parts <name>.tgz.part-aa,
# -ab, ...: $OUT takes files of 16 MiB at most; `cat` them together).
# Needs the dataset cache under .carry/cache (WAVAR_CACHE) and the PyWavelets wheel in .whl.
# The run folder stays under runs/ on the device (an ignored path: a warm machine keeps it).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=${WAVAR_CACHE:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" runs
CONFIG=${CONFIG:?a configs/*.toml}; NAME=${NAME:-$(basename "$CONFIG" .toml)}; RUN=$PWD/runs/$NAME
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/${NAME}_summary.txt"
python3 -m wavar.cli.train --config "$CONFIG" --no-samples out_dir="$RUN" ${EXTRA:-} \
  > "$RUN.log" 2>&1
echo "train rc=$?" >> "$OUT/${NAME}_summary.txt"
cp "$RUN.log" "$RUN/train.log"
python3 - "$RUN" "$OUT/${NAME}_summary.txt" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
import torch
from wavar.model.transformer import WaveletGPT
run, summary = Path(sys.argv[1]), sys.argv[2]
lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
train = [x for x in lines if "tokens_per_s" in x and x["step"] > 200]
val = [x for x in lines if "val_bits_per_token" in x]
model = WaveletGPT.from_pretrained(run / "model")
model.save_pretrained(run / "model16", dtype=torch.float16)
with open(summary, "a") as f:
    f.write(f"params {model.num_params()} steps {lines[-1]['step']} "
            f"elapsed {lines[-1]['elapsed_s']:.0f} s\n")
    if train:
        f.write(f"median tokens/s {np.median([x['tokens_per_s'] for x in train]):.0f} "
                f"median MFU {np.median([x['mfu'] for x in train]):.3f}\n")
    for x in val:
        f.write(f"step {x['step']} val bits/token {x['val_bits_per_token']:.4f} "
                f"bits/image {x['val_bits_per_image']:.1f}\n")
PY
tar czf "$OUT/$NAME.tgz" -C "$RUN" model16 metrics.jsonl train.log
if [ "$(stat -c %s "$OUT/$NAME.tgz")" -gt 15000000 ]; then
  split -b 15000000 "$OUT/$NAME.tgz" "$OUT/$NAME.tgz.part-" && rm "$OUT/$NAME.tgz"
fi
cat "$OUT/${NAME}_summary.txt"
