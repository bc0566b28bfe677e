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
source "$(dirname "$0")/env.sh"
CONFIG=${CONFIG:?a configs/*.toml}; NAME=${NAME:-$(basename "$CONFIG" .toml)}; RUN=$PWD/runs/$NAME
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/${NAME}_summary.txt"
if [ -z "${FINISH_ONLY:-}" ]; then  # FINISH_ONLY=1: the run is done (long_run.sh): report it
  python3 -m wavar.cli.train --config "$CONFIG" --no-samples out_dir="$RUN" ${EXTRA:-} \
    > "$RUN.log" 2>&1
  echo "train rc=$?" >> "$OUT/${NAME}_summary.txt"
fi
cp "$RUN.log" "$RUN/train.log"
python3 benchmarks/device/run_summary.py "$RUN" "$OUT/${NAME}_summary.txt"
tar czf "$OUT/$NAME.tgz" -C "$RUN" model16 metrics.jsonl train.log
if [ "$(stat -c %s "$OUT/$NAME.tgz")" -gt 15000000 ]; then
  split -b 15000000 "$OUT/$NAME.tgz" "$OUT/$NAME.tgz.part-" && rm "$OUT/$NAME.tgz"
fi
cat "$OUT/${NAME}_summary.txt"
