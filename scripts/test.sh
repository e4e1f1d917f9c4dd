#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: prepares everything it needs (scripts/setup.sh),
# then runs pytest against real PostgreSQL clusters and real Synapse schemas it starts itself.
# Extra arguments go to pytest (e.g. scripts/test.sh -k import -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
set +e
.venv/bin/python -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "no tests were collected" >&2
fi
exit "$rc"
