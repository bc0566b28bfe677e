#!/usr/bin/env bash
# A training run longer than one device call (issue 18: >= 30 GPU-minutes in one curve). The
# first call starts it detached (setsid: it outlives the call while the machine stays warm, i.e.
# while the next call comes within the idle release, ~30 s); every call then waits up to WAIT
# seconds, prints the run's progress and copies its newest EMA snapshot, in fp16, to $OUT, so a
# machine lost mid-run still leaves its last snapshot here. Once the run has finished, the call
# reports it as train_one.sh does ($OUT/<NAME>.tgz, <NAME>_summary.txt; runs/<NAME>/model16).
#
#   STEP=start CONFIG=configs/X.toml NAME=N EXTRA="..." BUDGET=1260 SNAPSHOT=420 WAIT=560 \
#     bash benchmarks/device/long_run.sh
#   STEP=wait NAME=N WAIT=560 bash benchmarks/device/long_run.sh   # until it prints "finished"
#   STEP=eval NAME=N DATASET=fashion-mnist SETTINGS='ramp-cool: --cfg 1,1.5,2 ...' \
#     bash benchmarks/device/long_run.sh     # schedule_sweep.sh, then FID by bit-plane of the
#                                            # first setting's samples ($OUT/fid_by_plane_N.json)
#   (SNAPSHOTS=1: also the first setting for every earlier snapshot, schedules_N-sSSSSSS.tgz;
#   NO_PLANES=1: no FID by bit-plane)
#
# Needs what train_one.sh needs (the dataset cache under WAVAR_CACHE, the PyWavelets wheel);
# STEP=eval what schedule_sweep.sh needs (.carry/fid16, the test set under WAVAR_CACHE).
set -uo pipefail
source "$(dirname "$0")/env.sh"
NAME=${NAME:?a run name}; RUN=$PWD/runs/$NAME; WAIT=${WAIT:-560}
if [ "${STEP:-}" = eval ]; then
  MODEL=$RUN/model16 TAG=$NAME bash benchmarks/device/schedule_sweep.sh
  first=$(printf '%s\n' "$SETTINGS" | sed -n '/./{s/:.*//p;q}')
  if [ -n "${SNAPSHOTS:-}" ]; then  # FID against GPU-minutes: each earlier snapshot, first setting
    for snap in $(ls -d "$RUN"/snapshots/s* | head -n -1); do
      MODEL=$snap TAG=$NAME-$(basename "$snap" | cut -d- -f1) \
        SETTINGS=$(printf '%s\n' "$SETTINGS" | sed -n '/./{p;q}') \
        bash benchmarks/device/schedule_sweep.sh
    done
  fi
  [ -n "${NO_PLANES:-}" ] && exit
  python3 benchmarks/fid_by_plane.py --samples "/tmp/schedules_$NAME/eval_${first}_samples.npz" \
    --model "$RUN/model16" --dataset "${DATASET:?}" --device cuda \
    --fid-network /tmp/wavar-fid/default_1_fp16.pt -o "$OUT/fid_by_plane_$NAME.json"
  exit
fi
if [ "${STEP:?start or wait}" = start ]; then
  CONFIG=${CONFIG:?a configs/*.toml}; echo "$CONFIG" > "runs/$NAME.config"
  # time_limit_s: the run must end by itself, whatever happens to the calls
  setsid nohup python3 -m wavar.cli.train --config "$CONFIG" --no-samples out_dir="$RUN" \
    budget_s="${BUDGET:?seconds}" time_limit_s=$((BUDGET + 240)) \
    snapshot_every_s="${SNAPSHOT:-420}" ${EXTRA:-} > "$RUN.log" 2>&1 < /dev/null &
  echo $! > "runs/$NAME.pid"
fi
pid=$(cat "runs/$NAME.pid")
for _ in $(seq "$WAIT"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
tail -n 2 "$RUN/metrics.jsonl" 2>/dev/null
snap=$(ls -d "$RUN"/snapshots/s* 2>/dev/null | tail -n 1)
if [ -n "$snap" ]; then
  python3 benchmarks/device/run_summary.py --fp16 "$snap" "/tmp/$NAME-snap/$(basename "$snap")" \
    && tar czf "$OUT/${NAME}_snapshot.tgz" -C "/tmp/$NAME-snap" "$(basename "$snap")" \
    && echo "snapshot $(basename "$snap") -> \$OUT/${NAME}_snapshot.tgz"
fi
if kill -0 "$pid" 2>/dev/null; then
  echo "running: call again with STEP=wait within the idle release"
else
  grep -iE "error|Traceback" "$RUN.log" | tail -n 3
  CONFIG=$(cat "runs/$NAME.config") FINISH_ONLY=1 bash benchmarks/device/train_one.sh
  echo "finished"
fi
