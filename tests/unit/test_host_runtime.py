"""host_runtime's readings of what a host offers: command lines as the kernel and systemd give them, real
interpreters run for real, and pg_dump's own --version output."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

from _syn2mas.host import runtime as host_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
DEBIAN_PYTHON = "/usr/bin/python3"


# -- which processes are Synapse, and what they read ----------------------------------------------

@pytest.mark.parametrize("argv, app, config", [
    # Debian's matrix-synapse.service
    (["/opt/venvs/matrix-synapse/bin/python", "-m", "synapse.app.homeserver",
      "--config-path=/etc/matrix-synapse/homeserver.yaml", "--config-path=/etc/matrix-synapse/conf.d/"],
     "synapse.app.homeserver", ["/etc/matrix-synapse/homeserver.yaml", "/etc/matrix-synapse/conf.d/"]),
    # synctl, and the docs' worker units
    (["/venv/bin/python3", "-u", "-m", "synapse.app.generic_worker", "-c", "/etc/hs.yaml", "-c", "/etc/w1.yaml"],
     "synapse.app.generic_worker", ["/etc/hs.yaml", "/etc/w1.yaml"]),
    (["python", "-X", "dev", "-msynapse.app.homeserver", "--config-path", "hs.yaml", "-cconf.d"],
     "synapse.app.homeserver", ["hs.yaml", "conf.d"]),
    # an old worker app name, still an alias of generic_worker
    (["python3", "-m", "synapse.app.federation_sender", "--config-path=/etc/hs.yaml"],
     "synapse.app.federation_sender", ["/etc/hs.yaml"]),
    # the console scripts, run through their #! line (the kernel puts the interpreter first)
    (["/opt/venvs/matrix-synapse/bin/python", "/opt/venvs/matrix-synapse/bin/synapse_homeserver", "-c", "/etc/a.yaml"],
     "synapse.app.homeserver", ["/etc/a.yaml"]),
    (["/venv/bin/python", "/venv/bin/synapse_worker", "--config-path=/etc/w.yaml"],
     "synapse.app.generic_worker", ["/etc/w.yaml"]),
])
def test_synapse_command_lines_are_recognised_with_their_config_paths(argv, app, config):
    found = host_runtime.synapse_app(argv)
    assert found is not None and found[0] == app
    assert host_runtime.config_args(argv[found[1]:]) == config
    assert host_runtime.role_of(found[0]) == ("main" if app == "synapse.app.homeserver" else "worker")


@pytest.mark.parametrize("argv", [
    ["grep", "synapse.app.homeserver"],
    ["python3", "-c", "import synapse.app.homeserver", "-m", "synapse.app.homeserver"],
    ["python3", "-m", "synapse.app.admin_cmd", "-c", "/etc/hs.yaml", "export-data", "@a:b"],
    ["python3", "-m", "synapse._scripts.synapse_port_db", "--sqlite-database", "x"],
    ["sh", "-c", "cd /srv && python -m synapse.app.homeserver -c hs.yaml"],
    ["python3", "/usr/bin/ansible-playbook", "-m", "synapse.app.homeserver"],
    ["python3"],
])
def test_other_command_lines_are_not_synapse(argv):
    assert host_runtime.synapse_app(argv) is None


def test_relative_interpreters_resolve_against_the_process_not_through_symlinks(tmp_path):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    assert host_runtime.resolve_executable("python", "/", f"/nonexistent:{venv_bin}:/usr/bin") == str(venv_bin / "python")
    assert host_runtime.resolve_executable("venv/bin/python", str(tmp_path), "/usr/bin") == str(venv_bin / "python")
    assert host_runtime.resolve_executable("bin/python", str(tmp_path / "venv"), None) == str(venv_bin / "python")
    # A relative PATH entry is relative to the process's directory.
    assert host_runtime.resolve_executable("python", str(tmp_path / "venv"), "bin") == str(venv_bin / "python")
    # What cannot be read is not guessed.
    assert host_runtime.resolve_executable("python", None, None) is None
    assert host_runtime.resolve_executable("./python", None, "/usr/bin") is None
    assert host_runtime.resolve_executable("/abs/python", None, None) == "/abs/python"


def test_ranking_puts_the_synapse_reading_the_given_config_first(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "10-db.yaml").write_text("{}\n")
    processes = [
        {"pid": 10, "role": "main", "config_paths": ["/srv/other/homeserver.yaml"]},
        {"pid": 30, "role": "worker", "config_paths": [str(tmp_path / "homeserver.yaml"), str(conf_d)]},
        {"pid": 20, "role": "main", "config_paths": [str(tmp_path / "homeserver.yaml"), str(conf_d) + "/"]},
    ]
    ranked = host_runtime.rank_processes(processes, [str(conf_d / "10-db.yaml")])
    assert [p["pid"] for p in ranked] == [20, 30, 10]
    assert [p["pid"] for p in host_runtime.rank_processes(processes)] == [10, 20, 30]


# -- systemd units ----------------------------------------------------------------------------------
# No systemd runs here: `systemctl show -p ExecStart --value` output is given as systemd prints it.

DEBIAN_EXEC_START = (
    "{ path=/opt/venvs/matrix-synapse/bin/python ; argv[]=/opt/venvs/matrix-synapse/bin/python -m "
    "synapse.app.homeserver --config-path=/etc/matrix-synapse/homeserver.yaml "
    "--config-path=/etc/matrix-synapse/conf.d/ ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; "
    "pid=0 ; code=(null) ; status=0/0 }\n")


def test_exec_start_is_parsed_as_systemctl_prints_it():
    assert host_runtime.parse_exec_start(DEBIAN_EXEC_START) == [[
        "/opt/venvs/matrix-synapse/bin/python", "-m", "synapse.app.homeserver",
        "--config-path=/etc/matrix-synapse/homeserver.yaml", "--config-path=/etc/matrix-synapse/conf.d/"]]
    assert host_runtime.parse_exec_start("") == []


def test_a_console_script_names_its_interpreter_on_its_first_line(tmp_path):
    script = tmp_path / "synapse_homeserver"
    script.write_text("#!/opt/venvs/matrix-synapse/bin/python\nimport sys\n")
    assert host_runtime.shebang_interpreter(str(script)) == "/opt/venvs/matrix-synapse/bin/python"
    script.write_text("#!/usr/bin/env python3\n")
    assert host_runtime.shebang_interpreter(str(script)) == "python3"
    assert host_runtime.shebang_interpreter(sys.executable) is None  # a binary
    assert host_runtime.shebang_interpreter(str(tmp_path / "missing")) is None


def test_without_systemd_a_unit_reports_why(tmp_path):
    systemctl = shutil.which("systemctl")
    if not systemctl:
        pytest.skip("no systemctl on this machine")
    info = host_runtime.unit_runtime("matrix-synapse.service", systemctl)
    assert info["interpreter"] is None
    assert info["error"]


# -- interpreters, run for real ---------------------------------------------------------------------

def test_the_lab_venv_has_every_library():
    info = host_runtime.probe_interpreter(VENV_PYTHON)
    assert info["usable"] and not info["problems"]
    assert info["version"] == ".".join(map(str, sys.version_info[:3]))
    import psycopg2
    import yaml
    assert info["libraries"]["psycopg2"] == psycopg2.__version__.split(" ")[0]
    assert info["libraries"]["yaml"] == yaml.__version__


def test_the_synapse_each_interpreter_has_installed_is_reported_and_the_chosen_ones_is_the_result():
    """The version decides how Synapse delegates to MAS (matrix_authentication_service from 1.136.0): each of the
    setup's Synapse virtualenvs reports its own release, the lab venv (no Synapse) none."""
    releases = sorted(os.listdir(os.path.join(ROOT, ".venv-synapse")))
    assert releases, "setup.sh makes one virtualenv per tested Synapse release"
    for release in releases:
        python = os.path.join(ROOT, ".venv-synapse", release, "bin", "python")
        assert host_runtime.probe_interpreter(python)["synapse_version"] == release
    assert host_runtime.probe_interpreter(VENV_PYTHON)["synapse_version"] is None
    found = host_runtime.discover(python=[os.path.join(ROOT, ".venv-synapse", releases[0], "bin", "python")],
                                  discover_more=False, units=())
    assert found["synapse_version"] == releases[0]
    # The operator's Python for the database work has no Synapse: the one given as Synapse's own is asked.
    found = host_runtime.discover(python=[VENV_PYTHON], discover_more=False, units=(),
                                  synapse_python=os.path.join(ROOT, ".venv-synapse", releases[-1], "bin", "python"))
    assert found["python"] == VENV_PYTHON and found["synapse_version"] == releases[-1]
    # Synapse's own Python is the chosen one: its probe answers.
    synapse_python = os.path.join(ROOT, ".venv-synapse", releases[0], "bin", "python")
    found = host_runtime.discover(python=[synapse_python], discover_more=False, units=(), synapse_python=synapse_python)
    assert found["synapse_version"] == releases[0]


@pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason="no /usr/bin/python3")
def test_debians_python_is_judged_by_what_really_imports():
    proc = subprocess.run([DEBIAN_PYTHON, "-c", "import psycopg2"], capture_output=True, check=False)
    has_psycopg2 = proc.returncode == 0
    info = host_runtime.probe_interpreter(DEBIAN_PYTHON)
    assert info["exists"] and info["version"]
    assert (info["libraries"]["psycopg2"] is not None) == has_psycopg2
    assert ("no psycopg2" in info["problems"]) == (not has_psycopg2)
    assert info["usable"] == (has_psycopg2 and info["libraries"]["yaml"] is not None)
    # Asking for ruamel.yaml too is judged the same way.
    strict = host_runtime.probe_interpreter(DEBIAN_PYTHON, ["psycopg2", "yaml", "ruamel.yaml"])
    assert ("no ruamel.yaml" in strict["problems"]) == (strict["libraries"]["ruamel.yaml"] is None)


def test_what_is_not_a_python_says_so(tmp_path):
    assert host_runtime.probe_interpreter(str(tmp_path / "nope"))["problems"] == ["does not exist"]
    assert host_runtime.probe_interpreter("no-such-python-here")["problems"] == ["not found on PATH"]
    true = shutil.which("true")
    info = host_runtime.probe_interpreter(true)
    assert info["exists"] and not info["usable"]
    assert info["problems"][0].startswith("not a working Python")
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert host_runtime.probe_interpreter(str(plain))["problems"] == ["not executable"]


def test_no_fitting_python_names_each_try_and_the_ways_out(tmp_path):
    missing = str(tmp_path / "venv" / "bin" / "python")
    found = host_runtime.discover(python=[missing, shutil.which("true")], discover_more=False, units=[])
    assert found["python"] is None
    message = found["problems"]["python"]
    assert found["missing"][0] == message
    assert f"{missing} (given: does not exist)" in message
    assert "not a working Python" in message
    assert "syn2mas_python" in message and "/opt/venvs/matrix-synapse/bin/python" in message
    assert "apt-get install python3-psycopg2 python3-yaml" in message


def test_the_first_fitting_python_is_chosen_and_later_ones_still_reported():
    found = host_runtime.discover(python=["/nonexistent/python", VENV_PYTHON], discover_more=False, units=[])
    assert found["python"] == VENV_PYTHON
    assert [c["path"] for c in found["candidates"]] == ["/nonexistent/python", VENV_PYTHON]
    assert found["problems"]["python"] is None


def test_the_library_file_imports_nothing_but_the_standard_library():
    # Run it on Debian's interpreter (or this one) in isolation and list what it pulled in.
    python = DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else sys.executable
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from _syn2mas.host import runtime as host_runtime; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('psycopg2', 'yaml', 'ruamel', 'ansible'))))")
    proc = subprocess.run([python, "-c", code, os.path.join(ROOT, "plugins", "module_utils")], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == ""


# -- pg_dump and pg_restore -------------------------------------------------------------------------

@pytest.mark.parametrize("text, version, major", [
    ("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n", "15.14", "15"),
    ("pg_restore (PostgreSQL) 13.16 (Debian 13.16-0+deb11u1)\n", "13.16", "13"),
    ("pg_dump (PostgreSQL) 9.6.24\n", "9.6.24", "9.6"),
    ("pg_dump (PostgreSQL) 17beta1\n", "17beta1", "17"),
    ("pg_dump (PostgreSQL) 18devel\n", "18devel", "18"),
    ("pg_dump: command not found", None, None),
])
def test_pg_versions_are_read_from_their_version_output(text, version, major):
    assert host_runtime.parse_pg_version(text) == (version, major)


@pytest.mark.parametrize("num, major", [(150014, "15"), (130016, "13"), (100000, "10"), (90624, "9.6"),
                                        (90500, "9.5")])
def test_server_version_num_gives_the_major(num, major):
    assert host_runtime.postgres_major(num) == major


def test_the_installed_pg_dump_is_found_with_its_real_version():
    path = shutil.which("pg_dump")
    if not path:
        pytest.skip("no pg_dump on PATH")
    real = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    info = host_runtime.find_pg_tool("pg_dump")
    assert info["path"] == path and info["found_in"] == "PATH" and info["error"] is None
    assert info["version"] in real and real.split()[2].startswith(info["major"])
    assert host_runtime.find_pg_tool("pg_restore", os.path.dirname(path))["found_in"] == "pg_bindir"


def test_without_pg_dump_on_path_the_newest_postgresql_bin_is_used(tmp_path, monkeypatch):
    # Two real PostgreSQL layouts under a private root: the newest major version wins, not the last listed.
    installed = sorted(os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    if not installed:
        pytest.skip("no /usr/lib/postgresql/*/bin/pg_dump")
    real_bin = installed[-1]
    for name in ("9.6", "15", "100"):
        (tmp_path / name).mkdir()
        if name != "100":  # a directory without pg_dump is passed over
            (tmp_path / name / "bin").symlink_to(real_bin)
        else:
            (tmp_path / name / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    info = host_runtime.find_pg_tool("pg_dump", libdir_glob=str(tmp_path / "*" / "bin"))
    assert info["path"] == str(tmp_path / "15" / "bin" / "pg_dump")
    assert info["major"] is not None and info["error"] is None
    gone = host_runtime.find_pg_tool("pg_dump", libdir_glob=str(tmp_path / "none" / "*" / "bin"))
    assert gone["path"] is None and "neither on PATH nor in" in gone["error"]
    assert "postgresql-client" in host_runtime.pg_tool_problem("pg_dump", gone)
    assert host_runtime.find_pg_tool("pg_dump", str(tmp_path / "100" / "bin"))["error"].startswith(
        "pg_dump is not in pg_bindir")
