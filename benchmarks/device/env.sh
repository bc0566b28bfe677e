# Sourced by the training scripts on the device (train_one.sh, long_run.sh): PyWavelets from
# the wheel in .whl where it is missing, PYTHONPATH, the dataset cache (WAVAR_CACHE, default
# .carry/cache), $OUT and runs/.
python3 -c 'import pywt' 2>/dev/null \
  || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD WAVAR_CACHE=${WAVAR_CACHE:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" runs
