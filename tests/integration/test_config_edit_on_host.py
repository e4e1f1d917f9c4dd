"""The configuration modules against a host shaped like a real Synapse host: Debian's bare
/usr/bin/python3 (no ruamel.yaml, no psycopg2), files owned by Synapse's unprivileged user and
group, a conf.d directory. The edits run on the controller (action plugins); the host only runs
Ansible's builtin modules. Run through ansible-playbook for real."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess

import pytest
import yaml

from tests.support import accounts
from tests.support.config_files import CLIENT_SECRET, HOMESERVER, MAS, PEPPER, SHARED, assert_no_secrets
from tests.support.ansible_run import run_tasks
from tests.support.synapse_schema import LATEST, synapse_python

DEBIAN_PYTHON = "/usr/bin/python3"
SYNAPSE_USER = "syn2mas-cfgedit"    # stands for Debian's matrix-synapse
SYNAPSE_GROUP = "syn2mas-cfgread"   # the group Synapse's user reads its configuration by


@pytest.fixture(scope="module")
def synapse_account():
    """(uid, gid) of a real unprivileged user and group, created once (as the PostgreSQL tests do)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and to give files away")
    try:
        grp.getgrnam(SYNAPSE_GROUP)
    except KeyError:
        accounts.run(["groupadd", "--system", SYNAPSE_GROUP], check=True)
    try:
        pwd.getpwnam(SYNAPSE_USER)
    except KeyError:
        accounts.run(["useradd", "--system", "--no-create-home", "--gid", SYNAPSE_GROUP, SYNAPSE_USER], check=True)
    return pwd.getpwnam(SYNAPSE_USER).pw_uid, grp.getgrnam(SYNAPSE_GROUP).gr_gid


@pytest.fixture
def host(tmp_path, synapse_account):
    """/etc-style files: homeserver.yaml and conf.d/ owned by Synapse's user and group (0640), MAS's
    config.yaml as a link to a root-only 0600 file."""
    uid, gid = synapse_account
    etc = tmp_path / "etc"
    etc.mkdir()
    hs = etc / "homeserver.yaml"
    # The OIDC providers live in conf.d, as many deployments keep them.
    main, oidc = HOMESERVER.split("# Single sign-on\n")
    oidc, rest = oidc.split("# Sessions\n")
    hs.write_text(main + "# Sessions\n" + rest)
    confd = etc / "conf.d"
    confd.mkdir()
    (confd / "50-oidc.yaml").write_text("# Single sign-on\n" + oidc)
    (confd / "README").write_text("Synapse reads *.yaml here.\n")
    for path in (hs, confd / "50-oidc.yaml"):
        os.chown(path, uid, gid)
        os.chmod(path, 0o640)
    real_mas = tmp_path / "mas-config.yaml"
    real_mas.write_text(MAS)
    os.chmod(real_mas, 0o600)
    mas = etc / "config.yaml"
    mas.symlink_to(real_mas)
    return {"hs": hs, "confd": confd, "mas": mas, "real_mas": real_mas, "override": confd / "zz-mas.yaml",
            "uid": uid, "gid": gid}


def owner_and_mode(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_debian_python_has_no_ruamel_yaml():
    # The point of this file: the host's Python cannot run the edit itself.
    proc = subprocess.run([DEBIAN_PYTHON, "-c", "import ruamel.yaml"], capture_output=True, check=False)
    assert proc.returncode != 0, f"{DEBIAN_PYTHON} has ruamel.yaml: these tests would prove nothing"


def runbook_tasks(h, **delegation):
    """MAS first, then Synapse in the override mode, its config given as homeserver.yaml + conf.d/."""
    synapse_config = [str(h["hs"]), str(h["confd"])]
    return [
        {"matrix.syn2mas.mas_synapse_link": {"path": str(h["mas"]), "synapse_config": synapse_config,
                                             "endpoint": "http://127.0.0.1:8008/", "backup": True}},
        {"matrix.syn2mas.mas_upstream_provider": {"path": str(h["mas"]), "synapse_config": synapse_config}},
        {"matrix.syn2mas.synapse_auth_delegation": {
            "path": str(h["hs"]), "extra_config_paths": [str(h["confd"])], "override_path": str(h["override"]),
            "endpoint": "http://127.0.0.1:8080/", "secret": SHARED, "synapse_version": LATEST, **delegation}},
    ]


def test_bare_debian_host_check_then_apply_then_nothing(tmp_path, host):
    h = host
    before = {p: p.read_text() for p in (h["hs"], h["confd"] / "50-oidc.yaml", h["real_mas"])}

    check = run_tasks(tmp_path, runbook_tasks(h), check=True, diff=True, interpreter=DEBIAN_PYTHON)
    assert [r.get("failed", False) for r in check.results] == [False] * 3, check.stdout
    assert [r["changed"] for r in check.results] == [True] * 3
    assert {p: p.read_text() for p in before} == before and not h["override"].exists()
    link, providers, delegation = check.results
    assert "secret: <redacted>" in link["diff"]["after"]
    assert "client_secret: <redacted>" in providers["diff"]["after"]
    assert delegation["diff"]["before_header"] == "(absent)"
    assert "pepper: <redacted>" in delegation["diff"]["after"] and "secret: <redacted>" in delegation["diff"]["after"]
    assert_no_secrets(check)

    applied = run_tasks(tmp_path, runbook_tasks(h), diff=True, interpreter=DEBIAN_PYTHON)
    assert [r["changed"] for r in applied.results] == [True] * 3, applied.stdout
    assert_no_secrets(applied)
    link, providers, delegation = applied.results
    # MAS: the link was followed, the file behind it keeps root and 0600; the backup is Ansible's.
    assert h["mas"].is_symlink() and owner_and_mode(h["real_mas"]) == (0, 0, 0o600)
    assert open(link["backup_file"]).read() == MAS
    mas = yaml.safe_load(h["real_mas"].read_text())
    assert mas["matrix"]["homeserver"] == "example.com"
    assert mas["passwords"]["schemes"][0]["secret"] == PEPPER
    # The provider came from conf.d/50-oidc.yaml: the directory was read.
    assert [p["synapse_idp_id"] for p in providers["providers"]] == ["oidc-dex", "oidc-gitlab"]
    assert providers["providers"][0]["source"] == f"{h['confd']}/50-oidc.yaml: oidc_providers[0]"
    assert {p["synapse_idp_id"]: p["client_secret"] for p in mas["upstream_oauth2"]["providers"]
            if "client_secret" in p} == {"oidc-dex": CLIENT_SECRET}
    # Synapse: a new override with homeserver.yaml's owner and group, not world-readable.
    assert delegation["path"] == str(h["override"]) and delegation["edit_mode"] == "override"
    assert owner_and_mode(h["override"]) == (h["uid"], h["gid"], 0o640)
    assert (delegation["owner"], delegation["group"], delegation["mode"]) == (SYNAPSE_USER, SYNAPSE_GROUP, "0640")
    override = yaml.safe_load(h["override"].read_text())
    assert override["oidc_providers"] is None and override["password_config"]["enabled"] is False
    assert override["matrix_authentication_service"]["secret"] == SHARED
    assert h["hs"].read_text() == before[h["hs"]]
    written = {p: p.read_text() for p in (h["real_mas"], h["override"])}

    # Again: nothing to do. The override in conf.d is not read as part of Synapse's configuration,
    # or the plan would now be empty and the override rewritten.
    again = run_tasks(tmp_path, runbook_tasks(h), diff=True, interpreter=DEBIAN_PYTHON)
    assert [r["changed"] for r in again.results] == [False] * 3, again.stdout
    assert {p: p.read_text() for p in written} == written
    assert owner_and_mode(h["override"]) == (h["uid"], h["gid"], 0o640)


def test_existing_file_keeps_owner_and_mode_unless_given(tmp_path, host):
    h = host
    os.chmod(h["hs"], 0o604)
    task = {"matrix.syn2mas.synapse_auth_delegation": {
        "path": str(h["hs"]), "endpoint": "http://127.0.0.1:8080/", "secret_path": "/etc/matrix-synapse/mas.secret",
        "synapse_version": LATEST}}
    explicit = {"matrix.syn2mas.mas_synapse_link": {
        "path": str(h["mas"]), "synapse_config": [str(h["hs"])], "endpoint": "http://127.0.0.1:8008/",
        "group": SYNAPSE_GROUP, "mode": "0640"}}
    run = run_tasks(tmp_path, [task, explicit], interpreter=DEBIAN_PYTHON)
    assert [r["changed"] for r in run.results] == [True, True], run.stdout
    assert "matrix_authentication_service" in yaml.safe_load(h["hs"].read_text())
    assert owner_and_mode(h["hs"]) == (h["uid"], h["gid"], 0o604)
    assert owner_and_mode(h["real_mas"]) == (0, h["gid"], 0o640)

    # Only the mode differs: check mode predicts the change and makes none; then it is made once.
    tighter = {"matrix.syn2mas.mas_synapse_link": dict(explicit["matrix.syn2mas.mas_synapse_link"], mode="0600")}
    predicted = run_tasks(tmp_path, [tighter], check=True, interpreter=DEBIAN_PYTHON)
    assert predicted.result["changed"] is True and owner_and_mode(h["real_mas"]) == (0, h["gid"], 0o640)
    run = run_tasks(tmp_path, [tighter, tighter, task], interpreter=DEBIAN_PYTHON)
    assert [r["changed"] for r in run.results] == [True, False, False]
    assert owner_and_mode(h["real_mas"]) == (0, h["gid"], 0o600)


def test_synapse_version_is_asked_on_the_host_even_in_check_mode(tmp_path, host):
    h = host
    args = {"path": str(h["hs"]), "endpoint": "http://127.0.0.1:8080/", "secret": SHARED}
    run = run_tasks(tmp_path, [
        {"matrix.syn2mas.synapse_auth_delegation": dict(args, synapse_python=synapse_python(LATEST))},
        {"matrix.syn2mas.synapse_auth_delegation": dict(args, synapse_python="/nonexistent/bin/python")},
        {"matrix.syn2mas.synapse_auth_delegation": dict(args, synapse_python=DEBIAN_PYTHON)},
    ], check=True, interpreter=DEBIAN_PYTHON)
    detected, missing, no_synapse = run.results
    assert detected["synapse_version"] == LATEST and detected["config_form"] == "matrix_authentication_service"
    assert missing["failed"] and "cannot run /nonexistent/bin/python on the host" in missing["msg"]
    assert no_synapse["failed"] and f"cannot detect Synapse's version with {DEBIAN_PYTHON}" in no_synapse["msg"]
    assert "set synapse_version" in no_synapse["msg"]


def test_errors_name_the_hosts_paths(tmp_path, host):
    h = host
    (h["confd"] / "60-broken.yaml").write_text("listeners: [unclosed\n")
    run = run_tasks(tmp_path, runbook_tasks(h)[:1], interpreter=DEBIAN_PYTHON)
    assert run.result["failed"] and f"{h['confd']}/60-broken.yaml: invalid YAML at line" in run.result["msg"]
    assert h["real_mas"].read_text() == MAS


def test_mas_on_its_own_host_is_edited_from_synapses_config_read_on_synapses_host(tmp_path, host):
    # MAS's host does not have Synapse's files: they are read where they are (syn2mas_read_config,
    # as the runbook reads them on the Synapse host), then moved away before the edits run.
    h = host
    synapse_config = [str(h["hs"]), str(h["confd"])]
    elsewhere = tmp_path / "synapse-host-only"
    from_synapse = {"synapse_host": "synapse-vm", "synapse_config_files": "{{ result_0.files }}",
                    "synapse_config_dirs": "{{ result_0.dirs }}", "synapse_config_errors": "{{ result_0.errors }}"}
    tasks = [
        {"matrix.syn2mas.syn2mas_read_config": {"paths": synapse_config}, "no_log": True},
        {"ansible.builtin.command": {"argv": ["mv", str(h["hs"].parent), str(elsewhere)],
                                     "creates": str(elsewhere)}, "check_mode": False},
        {"matrix.syn2mas.mas_synapse_link": {"path": str(h["mas"]), "synapse_config": synapse_config,
                                             "endpoint": "http://127.0.0.1:8008/", **from_synapse}},
        {"matrix.syn2mas.mas_upstream_provider": {"path": str(h["mas"]), "synapse_config": synapse_config,
                                                  **from_synapse}},
    ]
    # MAS's file itself, not the fixture's link to it (the link is in the directory that moves away).
    for task in tasks[2:]:
        next(iter(task.values()))["path"] = str(h["real_mas"])

    check = run_tasks(tmp_path, tasks, check=True, diff=True, interpreter=DEBIAN_PYTHON)
    assert [r.get("failed", False) for r in check.results] == [False] * 4, check.stdout
    assert [r["changed"] for r in check.results[2:]] == [True, True] and h["real_mas"].read_text() == MAS
    subprocess.run(["mv", str(elsewhere), str(h["hs"].parent)], check=True)

    applied = run_tasks(tmp_path, tasks, diff=True, interpreter=DEBIAN_PYTHON)
    assert [r.get("failed", False) for r in applied.results] == [False] * 4, applied.stdout
    assert not h["hs"].exists() and elsewhere.joinpath("homeserver.yaml").exists()
    link, providers = applied.results[2:]
    assert link["changed"] and providers["changed"]
    mas = yaml.safe_load(h["real_mas"].read_text())
    assert mas["matrix"]["homeserver"] == "example.com"
    assert mas["passwords"]["schemes"][0]["secret"] == PEPPER
    # conf.d was listed on the Synapse host, and the provider's source is named by the Synapse host's path.
    assert [p["synapse_idp_id"] for p in providers["providers"]] == ["oidc-dex", "oidc-gitlab"]
    assert providers["providers"][0]["source"] == f"{h['confd']}/50-oidc.yaml: oidc_providers[0]"
    # The texts read are secrets: in no output, nor in the edits' results.
    shown = applied.stdout + check.stdout + json.dumps(applied.results[1:] + check.results[1:])
    assert all(secret not in shown for secret in (CLIENT_SECRET, PEPPER, SHARED))
    assert f"{h['confd']}/50-oidc.yaml: oidc_providers[0]" in applied.stdout  # paths stay readable in messages

    subprocess.run(["mv", str(elsewhere), str(h["hs"].parent)], check=True)
    again = run_tasks(tmp_path, tasks, diff=True, interpreter=DEBIAN_PYTHON)
    assert [r["changed"] for r in again.results[2:]] == [False, False], again.stdout

    # A file the Synapse host could not read is named with that host, and MAS's file is left as it was.
    written = h["real_mas"].read_text()
    missing = [{"matrix.syn2mas.mas_synapse_link": {
        "path": str(h["real_mas"]), "synapse_config": [str(tmp_path / "etc" / "nowhere.yaml")],
        "synapse_host": "synapse-vm", "synapse_config_files": {}, "synapse_config_errors": {
            str(tmp_path / "etc" / "nowhere.yaml"): "file not found"}}}]
    refused = run_tasks(tmp_path, missing, interpreter=DEBIAN_PYTHON)
    assert refused.result["failed"]
    assert refused.result["msg"] == f"{tmp_path}/etc/nowhere.yaml: file not found on synapse-vm"
    assert h["real_mas"].read_text() == written


def test_missing_ruamel_yaml_on_the_controller_is_named(tmp_path, host):
    # A controller Python without ruamel.yaml: a regular package `ruamel` first on the path hides the
    # installed namespace package, so `import ruamel.yaml` fails there as it would if never installed.
    stub = tmp_path / "controller-without-ruamel"
    (stub / "ruamel").mkdir(parents=True)
    (stub / "ruamel" / "__init__.py").write_text("")
    run = run_tasks(tmp_path, runbook_tasks(host)[:1], interpreter=DEBIAN_PYTHON,
                    env={"PYTHONPATH": str(stub)})
    assert run.result["failed"] is True
    message = run.result["msg"]
    assert "ruamel.yaml" in message and "on the Ansible controller" in message
    assert "install it in the controller's Python (pip install ruamel.yaml)" in message
    assert host["real_mas"].read_text() == MAS
    assert json.dumps(run.results).count(SHARED) == 0


def test_module_still_runs_on_its_own_where_the_libraries_are(tmp_path, host):
    # Bypassing the action plugin (as ansible-test and ansible-doc load it), the module edits the files
    # of the machine it runs on, with the same results and the same defaults for a new file.
    h = host
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "path": str(h["hs"]), "extra_config_paths": [str(h["confd"])], "override_path": str(h["override"]),
        "endpoint": "http://127.0.0.1:8080/", "secret": SHARED, "synapse_python": synapse_python(LATEST),
        "_ansible_diff": True}}))
    module = os.path.join(root, "plugins", "modules", "synapse_auth_delegation.py")
    env = dict(os.environ, PYTHONPATH=os.path.join(root, ".venv", "collections"))
    command = [os.path.join(root, ".venv", "bin", "python"), module, str(args)]
    runs = [json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=120).stdout)
            for _run in range(2)]
    assert [r["changed"] for r in runs] == [True, False]
    assert runs[0]["synapse_version"] == LATEST and "secret: <redacted>" in runs[0]["diff"]["after"]
    assert SHARED not in json.dumps(runs) and PEPPER not in json.dumps(runs)
    assert owner_and_mode(h["override"]) == (h["uid"], h["gid"], 0o640)
    assert yaml.safe_load(h["override"].read_text())["oidc_providers"] is None


def test_mas_s_config_is_read_on_its_host_with_the_files_it_names(tmp_path):
    """On MAS's host (its bare Python, no YAML library there): MAS's config, then the files it names that the
    modules on the Synapse host need (its database password_file), parsed on the controller and read there.
    A named file that host lacks is in `errors`; the texts appear in no output."""
    etc = tmp_path / "mas-host-etc"
    etc.mkdir()
    password_file = etc / "database-password"
    password_file.write_text("pw-only-on-the-mas-host\n")
    os.chmod(password_file, 0o600)
    config = etc / "config.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"host": "db.internal", "username": "mas", "database": "mas", "password_file": str(password_file)},
        "passwords": {"schemes": [{"version": 1, "algorithm": "bcrypt", "secret_file": str(etc / "pepper")}]}}))
    task = {"matrix.syn2mas.syn2mas_read_config": {"paths": [str(config)], "mas_secret_files": True}, "no_log": True}
    run = run_tasks(tmp_path, [task], interpreter=DEBIAN_PYTHON)
    result = run.result
    assert not result.get("failed"), run.stdout[-2000:]
    assert result["files"][str(password_file)] == "pw-only-on-the-mas-host\n"
    assert result["secret_files"] == [str(password_file), str(etc / "pepper")]
    assert result["errors"] == {str(etc / "pepper"): "file not found"}
    assert "pw-only-on-the-mas-host" not in run.stdout
    # Without the option, only the config is read.
    plain = run_tasks(tmp_path, [dict(task, **{"matrix.syn2mas.syn2mas_read_config": {"paths": [str(config)]}})],
                      interpreter=DEBIAN_PYTHON).result
    assert list(plain["files"]) == [str(config)] and "secret_files" not in plain


def test_each_edit_reads_the_configuration_it_needs_in_one_round_trip(tmp_path, host):
    """Over SSH every module run is a round trip: each edit reads its files (MAS's config, homeserver.yaml, conf.d/
    and its *.yaml files, the override if there is one) with one run of syn2mas_read_config, not a slurp per file
    and a find per directory. The edit's result is the same either way (the test above)."""
    run = run_tasks(tmp_path, runbook_tasks(host), check=True, interpreter=DEBIAN_PYTHON,
                    env={"ANSIBLE_VERBOSITY": "3", "ANSIBLE_PIPELINING": "1"})
    assert [r.get("failed", False) for r in run.results] == [False] * 3, run.stdout
    tasks = run.stdout.split("\nTASK [")[1:]
    for name in ("mas_synapse_link", "mas_upstream_provider", "synapse_auth_delegation"):
        task = next(t for t in tasks if t.startswith(f"matrix.syn2mas.{name}]"))
        used = [os.path.basename(line.split("Using module file ")[1].strip())
                for line in task.splitlines() if "Using module file " in line]
        assert used.count("syn2mas_read_config.py") == 1 and "slurp.py" not in used and "find.py" not in used, \
            (name, used)
