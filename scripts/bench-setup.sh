# shellcheck shell=bash
# The benchmarks' preparation, sourced from the repository root by scripts/bench.sh and scripts/bench-runbook.sh,
# so that each works on a fresh machine too: scripts/setup.sh, then the bench's own packages from
# requirements-bench.txt into .venv (again whenever a requirements file changed).
bash scripts/setup.sh
want="$(cat requirements.txt requirements-test.txt requirements-bench.txt | sha256sum)"
if [ ! -f .venv/.bench.stamp ] || [ "$(cat .venv/.bench.stamp)" != "$want" ]; then
  echo "[bench] installing the bench's packages into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-bench.txt
  echo "$want" > .venv/.bench.stamp
fi
export PYTHONDONTWRITEBYTECODE=1
