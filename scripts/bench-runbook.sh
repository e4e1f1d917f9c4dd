#!/usr/bin/env bash
# The runbook benchmark (bench/runbook.py; bench/README.md shows its figures), on a fresh machine too:
# prepares everything (scripts/setup.sh, then the bench's own packages from requirements-bench.txt into
# .venv), then runs playbooks/migrate.yml (check mode, then for real) against a real Synapse on a generated
# database of N users, MAS being the tests' stand-in, and measures the downtime window at each size.
#
#   scripts/bench-runbook.sh                  # 10,000 users
#   scripts/bench-runbook.sh 10000 100000     # chosen sizes
#   BENCH_ARGS=--no-alone scripts/bench-runbook.sh 100000   # without the import alone and the floor
#
# Figures are appended to bench/results/results.json (kind "runbook") and drawn in bench/results/bench.png.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-setup.sh
source scripts/bench-setup.sh
sizes=("$@")
if [ "${#sizes[@]}" = 0 ]; then
  sizes=(10000)
fi
# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
exec .venv/bin/python bench/runbook.py ${BENCH_ARGS:-} "${sizes[@]}"
