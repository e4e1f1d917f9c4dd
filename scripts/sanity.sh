#!/usr/bin/env bash
# `ansible-test sanity` on this collection: ansible-test needs the collection at
# .../ansible_collections/matrix/syn2mas, so the files git knows are copied to such a tree first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# ansible-test bootstraps pip in its virtualenvs with a script it downloads from a host that may be
# unreachable: give it the stand-in that uses ensurepip and the package index.
pip_version=$(grep -ho "pip='[0-9.]*'" .venv/lib/python*/site-packages/ansible_test/_internal/python_requirements.py \
  | head -n1 | grep -o "[0-9.]*[0-9]")
mkdir -p "$HOME/.ansible/test/cache"
cp scripts/ansible-test-get-pip.py "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree="$work/ansible_collections/matrix/syn2mas"
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tree"
cd "$tree"
git init -q && git add -A  # ansible-test lists the files to test through git
"$ROOT/.venv/bin/ansible-test" sanity --local --python 3.11 "$@"
