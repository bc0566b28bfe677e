#!/usr/bin/env bash
# What an attention window does to the 24.9M CIFAR-10 lossless model's training step (issue 19;
# BENCHMARKS.md, "The window trained in"), in one device call of ~2.5 minutes (session 28): the
# training step timed and CUDA-profiled with the window and without
# (benchmarks/train_profile.py: synthetic packed batches of CIFAR-like lengths), then attention
# alone, forward and backward and forward only, over 24 test-set sequences packed as the loop
# packs them: full, windowed as the model masks it (one lookup a pair), windowed with the mask
# function of three lookups the model had before session 28, that without the class prefix in
# sight, and flash attention's own window (benchmarks/attention_packed.py).
# Both write into $OUT.
#
#   WAVAR_CACHE=$PWD/.carry/c21 bash benchmarks/device/window_profile.sh   (carry .carry/c21, .whl)
#
# WAVAR_CACHE must hold datasets/cifar10/{test.npz,meta.json} (the lengths: the test set is
# tokenized once, ~1 minute). WINDOWS (default 1024,0) chooses the step's variants.
set -uo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p benchmarks/results/train  # (slim_tree.sh takes benchmarks/results out of the tree)
timeout "${STEP_TIMEOUT:-200}" python3 benchmarks/train_profile.py \
  --config configs/cifar10-lossless-large.toml --windows "${WINDOWS:-1024,0}" --steps 8 \
  --out "$OUT/train_profile_cifar10.json" > "$OUT/train_profile.log" 2>&1
echo "train_profile rc=$?"; grep -E "^window" "$OUT/train_profile.log"
timeout "${ATTENTION_TIMEOUT:-320}" python3 benchmarks/attention_packed.py --dataset cifar10 \
  --batch 24 --pack-len 36864 --heads 7 --windows 1024,256 > "$OUT/attention_packed.log" 2>&1
echo "attention_packed rc=$?"; grep -A12 "\"ms_per_layer\"\|\"ms_forward" "$OUT/attention_packed.log"
cp benchmarks/results/train/attention_packed_cifar10_*.json "$OUT/" 2>/dev/null
