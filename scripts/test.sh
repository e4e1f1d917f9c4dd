#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: prepares everything it needs (scripts/setup.sh),
# then runs pytest against real PostgreSQL clusters and real Synapse schemas it starts itself.
# The tests run on SYN2MAS_TEST_WORKERS pytest-xdist workers (default 2, one per core; 0 runs them in
# this process): a file's tests stay on one worker, and the longest files go first (LONGEST_FIRST in
# tests/support/tiers.py). Extra arguments go to
# pytest, e.g. scripts/test.sh -m "unit or database" (make test-fast), scripts/test.sh -k import -x.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
# With PYTHONUNBUFFERED set (some CI shells and sandboxes set it), Python reads a script from a pipe one byte at a
# time: every module ansible pipelines to a local test host spent about a third of its CPU in read(2) (263,514
# reads for a 263 kB module). Users' hosts run modules without it; so do the tests.
unset PYTHONUNBUFFERED
workers=${SYN2MAS_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != 0 ]; then
  # a file's tests on one worker (loadscope), taken in the order tests/conftest.py sorts them (longest first)
  parallel=(-n "$workers" --dist loadscope --no-loadscope-reorder)
fi
set +e
.venv/bin/python -m pytest tests "${parallel[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "no tests were collected: failing (exit 5)" >&2
fi
exit "$rc"
