#!/usr/bin/env bash
# Prepares a fresh Debian machine (or refreshes an existing checkout) for the demo, the tests
# and the benchmark: a virtualenv at .venv with the pinned packages, `syn2mas` and `ansible`
# on its PATH, this checkout usable as the collection matrix.syn2mas, the PostgreSQL server
# binaries, one virtualenv per Synapse release whose schema the tests use, and for the fleet
# over SSH: Debian's sshd, sudo and Redis, a controller virtualenv with only what a controller
# needs, and a Synapse virtualenv on Debian's own /usr/bin/python3 that an unprivileged user runs.
# Safe to re-run: every step is skipped when its result is already in place.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The Python of the virtualenvs: $PYTHON if given, else Debian's own /usr/bin/python3 where it is 3.11+ and
# can make virtualenvs (python3-venv), else python3 from PATH. Debian's is what a user's host runs, and
# Debian builds it with profile-guided optimisation: the suite's Python processes (ansible-playbook, every
# module run, Synapse, pytest) spent about a fifth less CPU on it than on a build without (pyenv's default).
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if /usr/bin/python3 -c 'import ensurepip, sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON=/usr/bin/python3
  fi
fi
# Each virtualenv records the interpreter it was made with; one made with another is made again.
INTERPRETER=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
# Synapse releases whose real schema the tests create: the newest we test and the oldest we support.
SYNAPSE_VERSIONS=${SYNAPSE_VERSIONS:-"1.163.2 1.136.0"}
# Pins a release needs beyond its own requirements: Synapse 1.136 fails to import with
# prometheus-client 0.24 and newer (element-hq/synapse#19375).
synapse_extra_pins() {
  case "$1" in
    1.136.*) echo "prometheus-client==0.23.1" ;;
  esac
}

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

stamp_ok() {  # stamp_ok FILE CONTENT: true when FILE already holds CONTENT
  [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

# 1. Debian packages: the PostgreSQL server binaries (initdb, pg_ctl, pg_dump) with the pg_trgm
#    extension MAS needs, and nginx, the real web server serving the test homeservers' .well-known
#    (the tests run it on loopback with their own config; only the binary is used). For the fleet
#    over SSH (tests/support/ssh_fleet.py): openssh-server (one sshd per test host on loopback),
#    sudo (the controller's admin user becomes root) and redis-server (Synapse workers replicate
#    through Redis, always). The tests run each of them themselves; none is started here.
packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql postgresql-contrib)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx)
[ -x /usr/sbin/sshd ] || packages+=(openssh-server)
[ -x /usr/bin/sudo ] || packages+=(sudo)
[ -x /usr/bin/redis-server ] || packages+=(redis-server)
if [ ${#packages[@]} -gt 0 ]; then
  log "installing ${packages[*]} from Debian's packages"
  # Keep the packages' services from starting (sshd on port 22, redis on 6379): the tests run
  # their own instances. Where a policy already exists (containers), it is left as it is.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d'
    policy_added=1
  fi
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
  [ -z "$policy_added" ] || as_root rm -f /usr/sbin/policy-rc.d
fi

# 2. The main virtualenv with the pinned packages.
if [ ! -x .venv/bin/python ] || ! stamp_ok .venv/.interpreter "$INTERPRETER"; then
  log "creating .venv on $INTERPRETER"
  rm -rf .venv
  "$PYTHON" -m venv .venv
  echo "$INTERPRETER" > .venv/.interpreter
fi
want="$(cat requirements.txt requirements-test.txt | sha256sum)"
if ! stamp_ok .venv/.requirements.stamp "$want"; then
  log "installing pinned packages into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
  echo "$want" > .venv/.requirements.stamp
fi

# 3. This checkout as the collection matrix.syn2mas (ansible.cfg points collections_path here).
mkdir -p .venv/collections/ansible_collections/matrix
ln -sfn "$ROOT" .venv/collections/ansible_collections/matrix/syn2mas

# 4. The syn2mas command on the venv's PATH, running the library of this checkout.
cat > .venv/bin/syn2mas <<WRAPPER
#!$ROOT/.venv/bin/python
import runpy
runpy.run_path("$ROOT/bin/syn2mas", run_name="__main__")
WRAPPER
chmod 0755 .venv/bin/syn2mas

# 5. One virtualenv per Synapse release: the tests create the real Synapse schema with it.
for v in $SYNAPSE_VERSIONS; do
  venv=".venv-synapse/$v"
  pins=$(synapse_extra_pins "$v")
  # The oidc extra, so that test homeservers can start with OIDC providers configured.
  if ! stamp_ok "$venv/.stamp" "$v oidc $pins $INTERPRETER"; then
    log "installing matrix-synapse $v into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    # shellcheck disable=SC2086 # $pins is a list of requirement specifiers
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "matrix-synapse[oidc]==$v" psycopg2-binary==2.9.13 $pins
    echo "$v oidc $pins $INTERPRETER" > "$venv/.stamp"
  fi
done
# 6. The controller's virtualenv: only what the README says a controller needs
#    (requirements-controller.txt), for the tests that run the built collection as a user would.
#    The versions are the tested ones (tests/constraints-controller.txt) within the file's ranges.
want="$(cat requirements-controller.txt tests/constraints-controller.txt | sha256sum) $INTERPRETER"
if ! stamp_ok .venv-controller/.requirements.stamp "$want"; then
  log "installing the controller's packages into .venv-controller"
  rm -rf .venv-controller
  "$PYTHON" -m venv .venv-controller
  .venv-controller/bin/python -m pip install -q --disable-pip-version-check -r requirements-controller.txt \
    -c tests/constraints-controller.txt
  echo "$want" > .venv-controller/.requirements.stamp
fi

# 7. Synapse on Debian's own Python, as a Debian host runs it from a virtualenv: the fleet over
#    SSH runs it as an unprivileged user, who cannot enter root's pyenv directory. Built with
#    Debian's venv module; where python3-venv (ensurepip) is missing, without pip, and then the
#    main venv's pip installs into it (pip --python), so nothing is added to the host's Python.
#    The redis extra: Synapse workers always replicate through Redis.
#    It lives outside the checkout, where a Debian host keeps such a venv: the checkout may sit in a
#    directory other users cannot enter (a CI clone in a 0700 temporary directory).
SYNAPSE_DEBIAN_VERSION=${SYNAPSE_DEBIAN_VERSION:-1.163.2}
venv="${SYN2MAS_SYNAPSE_DEBIAN_VENV:-/opt/syn2mas-tests/synapse-$SYNAPSE_DEBIAN_VERSION}"
as_root install -d -m 0755 -o "$(id -u)" "$(dirname "$venv")"
want="$SYNAPSE_DEBIAN_VERSION oidc,redis psycopg2-binary==2.9.13"
if [ -x /usr/bin/python3 ] && ! stamp_ok "$venv/.stamp" "$want"; then
  log "installing matrix-synapse $SYNAPSE_DEBIAN_VERSION on /usr/bin/python3 into $venv"
  rm -rf "$venv"
  if /usr/bin/python3 -m venv "$venv" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      "matrix-synapse[oidc,redis]==$SYNAPSE_DEBIAN_VERSION" psycopg2-binary==2.9.13
  else
    rm -rf "$venv"
    /usr/bin/python3 -m venv --without-pip "$venv"
    .venv/bin/python -m pip --python "$venv/bin/python" install -q --disable-pip-version-check \
      "matrix-synapse[oidc,redis]==$SYNAPSE_DEBIAN_VERSION" psycopg2-binary==2.9.13
  fi
  chmod -R a+rX "$venv"
  echo "$want" > "$venv/.stamp"
fi
log "ready: . .venv/bin/activate"
