#!/usr/bin/env bash
# The import benchmark (bench/run.py; bench/README.md shows its figures), on a fresh machine too:
# prepares everything (scripts/setup.sh, then the bench's own packages from requirements-bench.txt
# into .venv), then times the real import, the dry run and the raw-copy floor at each size.
#
#   scripts/bench.sh                 # 10,000 and 100,000 users
#   scripts/bench.sh 50000 200000    # chosen sizes
#   BENCH_1M=1 scripts/bench.sh      # also 1,000,000 users (about 15 minutes on 2 CPUs)
#   BENCH_ARGS=--profile scripts/bench.sh 100000   # also where the time goes on Synapse's side
#
# Figures are appended to bench/results/results.json and drawn in bench/results/bench.png.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-setup.sh
source scripts/bench-setup.sh
sizes=("$@")
if [ "${#sizes[@]}" = 0 ]; then
  sizes=(10000 100000)
fi
if [ "${BENCH_1M:-0}" = 1 ] && [[ " ${sizes[*]} " != *" 1000000 "* ]]; then
  sizes+=(1000000)
fi
# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
exec .venv/bin/python bench/run.py ${BENCH_ARGS:-} "${sizes[@]}"
