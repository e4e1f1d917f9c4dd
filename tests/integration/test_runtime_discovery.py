"""Which Python does the database work on a host, on real parts: real Synapse homeservers (in their own venvs
under .venv-synapse) found through /proc, the syn2mas_runtime module and the preflight role run by
ansible-playbook on Debian's /usr/bin/python3 (no psycopg2), and the migrate playbook refusing, before
anything is stopped, a host that lacks something.

Stand-ins, named as such: systemd does not run here (its ExecStart parsing is unit-tested on systemctl's
output format), and no PostgreSQL client older than the server is installed, so "pg_dump older than the
server" is a script in a private bin directory that answers --version as pg_dump 13 does."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess

import pytest
import yaml

from _syn2mas.host import runtime as host_runtime, probe
from tests.support import homeservers
from tests.support.fleet import PLAYBOOK, ROOT, VENV_PYTHON, Fleet, running_fleet

pytestmark = pytest.mark.timeout(900)

DEBIAN_PYTHON = "/usr/bin/python3"
needs_debian_python = pytest.mark.skipif(
    not os.path.exists(DEBIAN_PYTHON)
    or subprocess.run([DEBIAN_PYTHON, "-c", "import psycopg2"], capture_output=True, check=False).returncode == 0,
    reason="needs Debian's /usr/bin/python3 without psycopg2, as a Synapse host has it")


@pytest.fixture(scope="module")
def fleet(pg):
    with running_fleet(pg, ("rt1",)) as fleet:
        yield fleet


def run_playbook(tmp_path, fleet: Fleet, tasks: list, host_vars: dict, *args: str, wrap=()):
    """A playbook of `tasks` on the fleet's host, with `host_vars` over the fleet's inventory; the variables
    named in `save` are written as JSON on the controller. Returns (process, saved variables)."""
    fleet.write_inventory({"rt1": host_vars})
    out = tmp_path / "saved.json"
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{
        "hosts": "synapse", "gather_facts": False,
        "tasks": [{"name": "The tasks under test", "block": tasks, "always": [{
            "name": "Save what the tasks registered",
            "ansible.builtin.copy": {"dest": str(out), "content": "{{ {'runtime': preflight_runtime | default(none), "
                                     "'probe': preflight_probe | default(none), 'after': after | default(none), "
                                     "'interpreter': ansible_python_interpreter | default(none)} | to_json }}"},
            "delegate_to": "localhost", "vars": {"ansible_python_interpreter": VENV_PYTHON}}]}],
    }], sort_keys=False))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
               PATH=os.path.dirname(VENV_PYTHON) + os.pathsep + os.environ.get("PATH", ""))
    try:
        proc = subprocess.run([*wrap, PLAYBOOK, "-i", fleet.inventory, str(book), *args], cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=600, check=False)
    finally:
        fleet.write_inventory()
    saved = json.loads(out.read_text()) if out.exists() else {}
    return proc, saved


# -- discovery on real processes ---------------------------------------------------------------------

def test_the_running_synapse_is_found_with_its_venv_python_and_config(fleet):
    hs = fleet.hosts["rt1"]
    found = host_runtime.discover(synapse_config=[hs.homeserver_yaml], module_python=DEBIAN_PYTHON, units=[])
    ours = found["synapse_processes"][0]  # the one reading our config comes first, whatever else runs here
    assert ours["pid"] == hs.pid()
    assert ours["role"] == "main" and ours["app"] == "synapse.app.homeserver"
    assert ours["config_paths"] == [hs.homeserver_yaml]
    # The venv's python as started, not /proc/PID/exe (the interpreter the venv's symlink points at).
    assert ours["interpreter"] == hs.python
    assert os.path.realpath(hs.python) != hs.python
    assert found["python"] == hs.python
    chosen = found["candidates"][0]
    assert chosen["source"] == f"Synapse process {hs.pid()} (main)"
    assert chosen["usable"] and chosen["libraries"]["psycopg2"] and chosen["libraries"]["yaml"]


def test_a_synapse_started_with_a_relative_python_and_config_is_resolved(fleet, tmp_path):
    """As a container or a hand-made unit starts it: `python` from PATH, config paths relative to its directory,
    a conf.d directory read whole."""
    main = fleet.hosts["rt1"]
    hs = homeservers.Homeserver(fleet.pg, "rt2", str(tmp_path))
    hs.create()
    conf_d = os.path.join(hs.confdir, "conf.d")
    os.makedirs(conf_d)
    with open(os.path.join(conf_d, "50-quiet.yaml"), "w") as handle:
        yaml.safe_dump({"suppress_key_server_warning": True}, handle)
    venv_bin = os.path.dirname(hs.python)
    proc = subprocess.Popen(
        ["python", "-m", "synapse.app.homeserver", "--config-path=homeserver.yaml", "-c", "conf.d"], cwd=hs.confdir,
        env=dict(os.environ, PATH=venv_bin + os.pathsep + os.environ["PATH"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hs.wait_healthy()
        found = host_runtime.discover(synapse_config=[os.path.join(conf_d, "50-quiet.yaml")], units=[])
        ours = found["synapse_processes"][0]
        assert ours["pid"] == proc.pid
        assert ours["interpreter_as_given"] == "python"
        assert ours["interpreter"] == os.path.join(venv_bin, "python")
        assert ours["cwd"] == hs.confdir
        assert ours["config_paths"] == [hs.homeserver_yaml, conf_d]
        assert found["python"] == os.path.join(venv_bin, "python")
        # The other Synapse on this host is listed too, after ours.
        assert main.pid() in [p["pid"] for p in found["synapse_processes"][1:]]
    finally:
        proc.terminate()
        proc.wait(30)
        fleet.pg.drop_database(hs.synapse_db)
        fleet.pg.drop_database(hs.mas_db)


def test_the_probe_reports_the_server_version_pg_dump_is_compared_with(fleet):
    hs = fleet.hosts["rt1"]
    info = probe.probe_database(probe.database_targets([hs.homeserver_yaml])["synapse"], "Synapse")
    num = int(fleet.pg.execute("SHOW server_version_num")[0][0])
    assert info["server_version_num"] == num
    assert info["server_major"] == host_runtime.postgres_major(num)
    # The server's own pg_dump is of the same major version.
    own = subprocess.run([fleet.pg.bin("pg_dump"), "--version"], capture_output=True, text=True, check=True).stdout
    assert host_runtime.parse_pg_version(own)[1] == info["server_major"]


# -- the module, through ansible-playbook on Debian's Python -------------------------------------------

@needs_debian_python
def test_the_module_on_debians_python_picks_synapses_venv(fleet, tmp_path):
    hs = fleet.hosts["rt1"]
    keep = tmp_path / "remote-tmp"
    keep.mkdir()
    proc, saved = run_playbook(
        tmp_path, fleet, [{"name": "Find the runtime", "matrix.syn2mas.syn2mas_runtime": {
            "synapse_config": [hs.homeserver_yaml]}, "register": "after"}],
        {"ansible_python_interpreter": DEBIAN_PYTHON, "ansible_remote_tmp": str(keep)},
        wrap=("env", "ANSIBLE_KEEP_REMOTE_FILES=1"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = saved["after"]
    assert result["changed"] is False
    assert result["interpreter"] == DEBIAN_PYTHON
    assert result["python"] == hs.python
    assert result["synapse_processes"][0]["pid"] == hs.pid()
    assert result["synapse_processes"][0]["config_paths"] == [hs.homeserver_yaml]
    assert result["pg_dump"]["major"] and result["pg_restore"]["major"]
    assert result["missing"] == []
    # What Ansible shipped to the host: of the collection, only the module and host_runtime, which import
    # neither psycopg2, nor PyYAML, nor ruamel.yaml.
    wrapper = glob.glob(str(keep / "*" / "AnsiballZ_syn2mas_runtime.py"))[0]
    subprocess.run([DEBIAN_PYTHON, wrapper, "explode"], cwd=os.path.dirname(wrapper), check=True,
                   capture_output=True)
    payload = os.path.join(os.path.dirname(wrapper), "debug_dir", "ansible_collections")
    shipped = sorted(os.path.relpath(p, payload) for p in glob.glob(os.path.join(payload, "**", "*.py"),
                                                                    recursive=True))
    assert [p for p in shipped if not p.endswith("__init__.py")] == [
        "matrix/syn2mas/plugins/module_utils/_syn2mas/host/runtime.py",
        "matrix/syn2mas/plugins/modules/syn2mas_runtime.py"]
    for path in shipped:
        tree = ast.parse(open(os.path.join(payload, path)).read())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"psycopg2", "yaml", "ruamel"}, path


@needs_debian_python
def test_without_any_python_having_psycopg2_the_module_names_what_it_tried(fleet, tmp_path):
    # A private process namespace: no Synapse runs in it, so nothing but the host's own interpreters is found.
    unshare = shutil.which("unshare")
    if not unshare:
        pytest.skip("no unshare")
    wrap = [unshare, "--pid", "--fork", "--mount-proc"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    if subprocess.run([*wrap, "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a process namespace here")
    proc, saved = run_playbook(
        tmp_path, fleet, [{"name": "Find the runtime", "matrix.syn2mas.syn2mas_runtime": {}, "register": "after"}],
        {"ansible_python_interpreter": DEBIAN_PYTHON}, wrap=wrap)
    assert proc.returncode != 0
    result = saved["after"]
    assert result["failed"] is True and result["python"] is None
    assert result["synapse_processes"] == []
    message = result["msg"]
    assert message.startswith("no Python 3.8+ with psycopg2 and PyYAML on this host: tried ")
    assert f"{DEBIAN_PYTHON} (this module's interpreter, Python " in message and "no psycopg2" in message
    assert "/opt/venvs/matrix-synapse/bin/python (Debian package layout: does not exist)" in message \
        or os.path.exists("/opt/venvs/matrix-synapse/bin/python")
    assert "Set syn2mas_python" in message and "apt-get install python3-psycopg2 python3-yaml" in message
    assert message in proc.stdout


# -- the preflight role ------------------------------------------------------------------------------

def preflight_tasks():
    return [
        {"name": "Preflight", "ansible.builtin.include_role": {"name": "matrix.syn2mas.preflight"}},
        {"name": "Which interpreter runs the modules now",
         "matrix.syn2mas.syn2mas_runtime": {"fail_on_missing": False}, "register": "after"},
    ]


@needs_debian_python
def test_preflight_runs_every_later_module_with_synapses_python(fleet, tmp_path):
    hs = fleet.hosts["rt1"]
    proc, saved = run_playbook(tmp_path, fleet, preflight_tasks(),
                               {"ansible_python_interpreter": DEBIAN_PYTHON, "syn2mas_python": ""})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert saved["runtime"]["interpreter"] == DEBIAN_PYTHON  # the discovery ran on the inventory's Python
    assert saved["runtime"]["python"] == hs.python
    assert saved["interpreter"] == hs.python
    # The probe needs psycopg2, which Debian's Python lacks: it answered, so it ran on Synapse's.
    assert saved["probe"]["synapse"]["reachable"] and saved["probe"]["mas"]["reachable"]
    assert saved["probe"]["synapse"]["server_version_num"] == int(fleet.pg.execute("SHOW server_version_num")[0][0])
    assert saved["after"]["interpreter"] == hs.python
    assert hs.healthy()


@needs_debian_python
def test_the_operators_python_wins_and_is_checked(fleet, tmp_path):
    proc, saved = run_playbook(tmp_path, fleet, preflight_tasks(),
                               {"ansible_python_interpreter": DEBIAN_PYTHON, "syn2mas_python": VENV_PYTHON})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert saved["runtime"]["python"] == VENV_PYTHON
    assert [c["source"] for c in saved["runtime"]["candidates"]] == ["given"]
    assert saved["after"]["interpreter"] == VENV_PYTHON

    proc, saved = run_playbook(tmp_path, fleet, preflight_tasks(),
                               {"ansible_python_interpreter": VENV_PYTHON, "syn2mas_python": DEBIAN_PYTHON})
    assert proc.returncode != 0
    assert "the given Python cannot do the database work" in proc.stdout
    assert f"{DEBIAN_PYTHON} (given, Python" in proc.stdout
    assert saved["probe"] is None  # nothing after the runtime check ran


@needs_debian_python
def test_libraries_asked_for_are_required_of_the_chosen_python(fleet, tmp_path):
    hs = fleet.hosts["rt1"]
    proc, saved = run_playbook(tmp_path, fleet, preflight_tasks(), {
        "ansible_python_interpreter": DEBIAN_PYTHON, "syn2mas_python": "",
        "preflight_python_libraries": ["psycopg2", "yaml", "ruamel.yaml"]})
    assert proc.returncode != 0
    assert saved["runtime"]["python"] is None
    message = saved["runtime"]["problems"]["python"]
    assert message.startswith("no Python 3.8+ with psycopg2, PyYAML and ruamel.yaml on this host")
    assert f"{hs.python} (Synapse process {hs.pid()} (main), Python " in message
    assert "no ruamel.yaml" in message
    assert "apt-get install python3-psycopg2 python3-yaml python3-ruamel.yaml" in message
    assert saved["probe"] is None


def migrate_refused(fleet, tmp_path, host_vars: dict, expected: list):
    """migrate.yml on the host fails in the preflight with `expected` in its output, Synapse untouched."""
    hs = fleet.hosts["rt1"]
    pid = hs.pid()
    fleet.write_inventory({"rt1": host_vars})
    try:
        run = fleet.playbook("migrate.yml")
    finally:
        fleet.write_inventory()
    assert run.returncode != 0
    for text in expected:
        assert text in run.stdout, run.stdout[-6000:]
    assert "preflight failed" in run.stdout
    assert "Stop Synapse and its workers" not in run.stdout
    assert hs.pid() == pid and hs.healthy()
    assert not os.path.exists(os.path.join(hs.dir, "backups"))
    assert not os.path.exists(os.path.join(hs.dir, "state", "state.json"))
    return run


@needs_debian_python
def test_a_host_without_a_fitting_python_fails_in_preflight_with_synapse_untouched(fleet, tmp_path):
    migrate_refused(fleet, tmp_path, {"ansible_python_interpreter": DEBIAN_PYTHON, "syn2mas_python": DEBIAN_PYTHON},
                    ["the given Python cannot do the database work", "no psycopg2"])


def stand_in_pg_bindir(tmp_path, major: str) -> str:
    """A bin directory whose pg_dump and pg_restore answer --version as PostgreSQL `major`'s do (a stand-in:
    no older PostgreSQL client can be installed here)."""
    bindir = tmp_path / f"pg{major}-stand-in"
    bindir.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        script = bindir / tool
        script.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) {major}.16 (stand-in)'\n")
        script.chmod(0o755)
    return str(bindir)


def test_pg_dump_older_than_the_server_fails_in_preflight_naming_both_versions(fleet, tmp_path):
    server_major = host_runtime.postgres_major(int(fleet.pg.execute("SHOW server_version_num")[0][0]))
    older = str(int(server_major.split(".", maxsplit=1)[0]) - 2)
    run = migrate_refused(fleet, tmp_path, {"syn2mas_pg_bindir": stand_in_pg_bindir(tmp_path, older)}, [
        f"pg_dump {older}.16 ({tmp_path}/pg{older}-stand-in/pg_dump)",
        f"pg_restore {older}.16",
        "must not be older than the PostgreSQL servers (Synapse's: ",
        f"install postgresql-client-{server_major}",
        "syn2mas_pg_bindir"])
    assert "Check that pg_dump and pg_restore are there and not older" in run.stdout


def test_a_missing_pg_dump_fails_in_preflight(fleet, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    migrate_refused(fleet, tmp_path, {"syn2mas_pg_bindir": str(empty)},
                    [f"pg_dump is not in pg_bindir {empty}", "postgresql-client"])


def test_a_client_as_new_as_the_server_passes(fleet, tmp_path):
    server_major = host_runtime.postgres_major(int(fleet.pg.execute("SHOW server_version_num")[0][0]))
    proc, saved = run_playbook(tmp_path, fleet, preflight_tasks(),
                               {"syn2mas_pg_bindir": stand_in_pg_bindir(tmp_path, server_major)})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert saved["runtime"]["pg_dump"]["major"] == server_major


@needs_debian_python
def test_the_rollback_finds_the_python_too(fleet, tmp_path):
    """rollback.yml runs no preflight: its role finds the interpreter itself. In check mode, with MAS's database
    to be emptied, its first database task (which needs psycopg2) runs on a host whose inventory says
    /usr/bin/python3."""
    hs = fleet.hosts["rt1"]
    fleet.write_inventory({"rt1": {"ansible_python_interpreter": DEBIAN_PYTHON, "syn2mas_python": ""}})
    try:
        # A backup named explicitly: a legacy host without one has nothing to roll back (no task runs).
        run = fleet.playbook("rollback.yml", "--check", "-e", "rollback_mas_database=empty", "-e",
                             f"rollback_backup_path={tmp_path}/no-such-run", "-v")
    finally:
        fleet.write_inventory()
    out = run.stdout
    assert "TASK [matrix.syn2mas.preflight : Run every later module of this host with that Python]" in out
    section = out.split("TASK [matrix.syn2mas.rollback : Check MAS's database before emptying it]")[1].split("TASK [")[0]
    assert section.lstrip(" *\n").startswith("ok: [rt1]"), section
    assert '"mas_activity"' in section
    assert hs.healthy()
