#!/usr/bin/env bash
# The main job on an embedded default: see scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Where PYTHONUNBUFFERED is set, Python reads each module ansible pipelines to the demo's host one byte at a
# time (scripts/test.sh says more): the demo's window would be measured slower than users' hosts run it.
unset PYTHONUNBUFFERED
exec .venv/bin/python scripts/demo.py "$@"
