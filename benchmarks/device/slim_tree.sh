#!/usr/bin/env bash
# The working tree travels to the device with every call: 64 MiB with what the call carries,
# and the zoo's weights (~125 MB) and benchmarks/results do not fit beside a dataset and the
# FID network. `out NAME...` copies the named zoo models into .carry/init/ (an ignored folder to
# carry, for `init_from=.carry/init/NAME`), then takes wavar/zoo/weights/* and
# benchmarks/results out of the working tree and prints the size that travels; `back` restores
# them from git (new result files stay). `out` refuses while either folder holds changes git
# does not have: they would be lost.
#
#   bash benchmarks/device/slim_tree.sh out fashion-mnist-fine   # before the device calls
#   bash benchmarks/device/slim_tree.sh back                     # after them
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
case "${1:-}" in
  out)
    shift
    if [ -n "$(git status --porcelain -- wavar/zoo/weights benchmarks/results)" ]; then
      echo "slim_tree: commit or move the changes under wavar/zoo/weights and" \
           "benchmarks/results first" >&2
      exit 1
    fi
    rm -rf .carry/init && mkdir -p .carry/init
    for name in "$@"; do cp -r "wavar/zoo/weights/$name" .carry/init/; done
    rm -rf wavar/zoo/weights/* benchmarks/results
    git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 \
      | awk '{printf "the tree that travels: %.1f MiB (.carry/init: %s)\n", $1 / 2^20, "'"$*"'"}'
    ;;
  back)
    git checkout -- wavar/zoo/weights benchmarks/results
    ;;
  *)
    echo "usage: $0 out [ZOO_NAME ...] | back" >&2
    exit 2
    ;;
esac
