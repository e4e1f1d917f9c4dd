"""The advisor's two front ends, run for real: the `syn2mas` command and the syn2mas_advisor module."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess

import pytest
import yaml

from tests.support.advisor_cases import CLEAN_MAS, CLEAN_SYNAPSE, clean_data
from tests.support.ansible_run import HARNESS_ENV
from tests.support.mas_stand_in import MasStandIn
from tests.support.net import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".venv", "bin")


def configure(env, **synapse_changes):
    synapse = copy.deepcopy(CLEAN_SYNAPSE)
    synapse.update(synapse_changes)
    env.write_configs(synapse, copy.deepcopy(CLEAN_MAS))


def syn2mas(*args):
    return subprocess.run([os.path.join(VENV, "syn2mas"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


# -- the command ------------------------------------------------------------------------------

def test_cli_exit_codes_human_and_json_output(env):
    clean_data(env)
    documented = ["--command=advisor", f"--synapseConfigFile={env.homeserver_yaml}",
                  f"--masConfigFile={env.mas_yaml}"]

    configure(env)
    run = syn2mas(*documented)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert run.stdout.endswith("\n") and len(lines) == 1  # INFO hidden: only the summary line
    assert lines[0].startswith("Summary: 0 errors, 0 warnings, 1 info (shown with --verbose)")

    verbose = syn2mas(*documented, "--verbose")
    assert verbose.returncode == 0
    assert verbose.stdout.splitlines()[0].startswith("INFO migration_counts: the import will carry over 3 users")

    configure(env, enable_registration=True)
    run = syn2mas(*documented)
    assert run.returncode == 11, run.stdout + run.stderr
    first = run.stdout.splitlines()[0]
    assert first.startswith("WARN registration_enabled: open registration is enabled")
    assert f"[{env.homeserver_yaml}: enable_registration] -> " in first

    configure(env, enable_registration=True, allow_guest_access=True)
    run = syn2mas("advisor", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml)
    assert run.returncode == 10, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("ERROR guest_access_enabled: ")
    assert lines[1].startswith("WARN registration_enabled: ")
    assert "1 error, 1 warning" in lines[-1] and "blocked" in lines[-1]

    run = syn2mas(*documented, "--output", "json")
    assert run.returncode == 10
    result = json.loads(run.stdout)
    assert set(result) == {"findings", "summary"}
    for finding in result["findings"]:
        assert set(finding) == {"severity", "check", "message", "where", "remedy", "remedied_by"}
    remedied_by = {f["check"]: f["remedied_by"] for f in result["findings"]}
    assert remedied_by["registration_enabled"] == "matrix.syn2mas.synapse_auth_delegation"
    assert remedied_by["guest_access_enabled"] is None  # MAS has no guests: nothing the run can change
    assert [f["check"] for f in result["findings"] if f["severity"] != "INFO"] == [
        "guest_access_enabled", "registration_enabled"]
    assert (result["summary"]["errors"], result["summary"]["warnings"], result["summary"]["users"]) == (1, 1, 3)


def test_cli_without_mas_config_reports_the_mas_checks_as_not_run(env):
    clean_data(env)
    configure(env)
    run = syn2mas("--command=advisor", f"--synapseConfigFile={env.homeserver_yaml}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checks not run (no MAS config given" in run.stdout


def test_cli_unreadable_config_is_a_finding_not_a_crash(tmp_path):
    run = syn2mas("--command=advisor", f"--synapseConfigFile={tmp_path / 'nope.yaml'}", "--output", "json")
    assert run.returncode == 10, run.stderr
    result = json.loads(run.stdout)
    assert result["findings"][0]["check"] == "synapse_config_invalid"
    assert "file not found" in result["findings"][0]["message"]
    assert "Traceback" not in run.stderr


# -- the module -------------------------------------------------------------------------------

PLAYBOOK = [{
    "hosts": "localhost", "gather_facts": False,
    "tasks": [
        {"name": f"advise, fail_on {fail_on}", "matrix.syn2mas.syn2mas_advisor": {
            "synapse_config": "{{ synapse_config }}", "mas_config": "{{ mas_config }}",
            "for_real_import": "{{ for_real_import | default(false) }}", "fail_on": fail_on,
            "mas_url": "{{ mas_url | default(omit) }}"},
         "register": f"r_{fail_on}", "ignore_errors": True}
        for fail_on in ("error", "warning", "never")
    ] + [
        {"name": "save", "save_result": {  # the harness's action (ansible_run.HARNESS_ENV): no module on the host
            "content": "{{ {'error': r_error, 'warning': r_warning, 'never': r_never} | to_json }}",
            "dest": "{{ result_file }}"}, "check_mode": False, "changed_when": False},
    ],
}]


def playbook(env, tmp_path, *extra, **variables):
    book = tmp_path / "advise.yml"
    book.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    result_file = tmp_path / "result.json"
    if result_file.exists():
        result_file.unlink()
    extra_vars = {"synapse_config": [env.homeserver_yaml], "mas_config": [env.mas_yaml],
                  "result_file": str(result_file), "ansible_python_interpreter": os.path.join(VENV, "python"),
                  **variables}
    cmd = [os.path.join(VENV, "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", json.dumps(extra_vars), str(book), *extra]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, ANSIBLE_NOCOLOR="1", **HARNESS_ENV), check=False)
    assert result_file.exists(), run.stdout + run.stderr
    return run, json.loads(result_file.read_text())


def test_module_clean_run_and_check_mode_change_nothing(env, tmp_path):
    clean_data(env)
    configure(env)
    before = env.synapse_dump(), env.mas_dump()
    for extra in ((), ("--check",)):
        with MasStandIn(issuer=CLEAN_MAS["http"]["issuer"]) as mas:  # MAS answering: every check runs
            run, results = playbook(env, tmp_path, *extra, mas_url=mas.url)
        assert run.returncode == 0, run.stdout + run.stderr
        for fail_on, result in results.items():
            assert result["changed"] is False and not result.get("failed"), (fail_on, result)
            assert result["errors"] == [] and result["warnings_found"] == []
            assert result["exit_code"] == 0
            assert [f["check"] for f in result["findings"]] == ["migration_counts"]
            assert result["summary"]["users"] == 3 and result["summary"]["not_run"] == []
    assert "changed=0" in run.stdout.replace(" ", "")
    assert (env.synapse_dump(), env.mas_dump()) == before


def test_module_fail_on_gates_errors_and_warnings(env, tmp_path):
    clean_data(env)
    configure(env, enable_registration=True)
    run, results = playbook(env, tmp_path, "--check")
    assert results["error"].get("failed") is not True
    assert results["warning"]["failed"] is True
    assert "1 error(s)" not in results["warning"]["msg"] and "0 error(s) and 1 warning(s)" in results["warning"]["msg"]
    assert "fail_on=warning" in results["warning"]["msg"]
    assert results["never"].get("failed") is not True
    for result in results.values():
        assert result["changed"] is False
        assert result["warnings_found"][0].startswith("registration_enabled: open registration is enabled")
        assert result["exit_code"] == 11
    assert "[WARNING]: registration_enabled: open registration" in run.stdout + run.stderr

    # A running Synapse is fine days before, an ERROR right before the real import.
    conn = env.pg.connect(env.synapse_db, application_name="synapse_main")
    try:
        configure(env)
        run, results = playbook(env, tmp_path, for_real_import=True)
    finally:
        conn.close()
    assert results["error"]["failed"] is True and results["warning"]["failed"] is True
    assert results["never"].get("failed") is not True
    assert "synapse_running" in results["error"]["msg"] and "synapse_main" in results["error"]["msg"]
    assert results["never"]["errors"][0].startswith("synapse_running: 1 other client connected")
    assert results["never"]["summary"]["for_real_import"] is True


# -- the playbook -----------------------------------------------------------------------------

def advisor_playbook(env, tmp_path, hosts: dict, *extra, mas_hosts=()):
    """playbooks/advisor.yml over an inventory of local hosts advising `env` (and `mas_hosts`, MAS's hosts,
    outside the advised group), with MAS (a stand-in) answering where the inventory says it is; returns the run
    and the fleet report it wrote (JSON and markdown)."""
    with MasStandIn(issuer=CLEAN_MAS["http"]["issuer"]) as mas:
        return _advisor_playbook(env, tmp_path, hosts, mas, *extra, mas_hosts=mas_hosts)


def _advisor_playbook(env, tmp_path, hosts: dict, mas, *extra, mas_hosts=()):
    report_dir = tmp_path / "reports"
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(VENV, "python"),
                 "syn2mas_report_dir": str(report_dir), "syn2mas_synapse_config": [env.homeserver_yaml],
                 "syn2mas_mas_config": [env.mas_yaml], "syn2mas_backup_dir": str(tmp_path / "backups"),
                 "syn2mas_mas_endpoint": f"{mas.url}/",
                 # MAS's public URL as the controller reaches it: the stand-in (the config's public_base is the
                 # https issuer, which resolves nowhere here).
                 "syn2mas_mas_public_url": f"{mas.url}/"},
        "children": {"synapse": {"hosts": {
            name: {"syn2mas_state_file": str(tmp_path / name / "state.json"), **host_vars}
            for name, host_vars in hosts.items()}},
            **({"mas": {"hosts": {name: {} for name in mas_hosts}}} if mas_hosts else {})},
    }}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    run = subprocess.run([os.path.join(VENV, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                          os.path.join(ROOT, "playbooks", "advisor.yml"), *extra], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, check=False,
                         env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0"))
    reports = sorted(report_dir.glob("*/advisor.json"))
    assert len(reports) == 1, run.stdout + run.stderr
    return run, json.loads(reports[0].read_text()), reports[0].with_suffix(".md").read_text()


def recap(stdout: str) -> dict:
    return {host: int(failed) for host, failed in re.findall(r"^(\S+)\s+: ok=\d+.*?failed=(\d+)", stdout, re.M)}


def test_playbook_fails_the_hosts_where_the_advisor_could_not_run_after_reporting_them(env, tmp_path):
    clean_data(env)
    configure(env)
    before = env.synapse_dump(), env.mas_dump()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "state.json").write_text('{"state": "half-done"}')
    # A Debian host's own Python, nothing added: no psycopg2 for the advisor anywhere on it.
    # The operator names Debian's bare Python for the database work: the runtime check refuses it.
    bare = {"ansible_python_interpreter": "/usr/bin/python3", "syn2mas_python": "/usr/bin/python3"}
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 (a Debian host's Python) here")
    run, report, markdown = advisor_playbook(env, tmp_path, {"ready": {}, "bare": bare, "corrupt": {}})
    output = run.stdout + run.stderr

    assert run.returncode != 0, output
    assert recap(run.stdout) == {"ready": 0, "bare": 1, "corrupt": 1}, output
    hosts = report["hosts"]
    assert hosts["ready"]["outcome"] == "ready" and hosts["ready"]["error"] is None
    assert hosts["ready"]["findings"]["count"] == 1  # advised for real: the migration counts
    for name in ("bare", "corrupt"):
        assert hosts[name]["outcome"] == "advisor failed", hosts[name]
        assert f"Failed: {hosts[name]['error']}" in markdown
        assert f"the advisor could not run on {name}: {hosts[name]['error']}" in output
    assert "psycopg2" in hosts["bare"]["error"] or "yaml" in hosts["bare"]["error"].lower(), hosts["bare"]
    assert "unknown state 'half-done'" in hosts["corrupt"]["error"]
    assert (env.synapse_dump(), env.mas_dump()) == before  # read-only, failed hosts included


def test_playbook_ends_zero_when_the_advisor_ran_everywhere(env, tmp_path):
    clean_data(env)
    configure(env, enable_registration=True)
    run, report = advisor_playbook(env, tmp_path, {"hs1": {}, "hs2": {}})[:2]
    assert run.returncode == 0, run.stdout + run.stderr
    assert {h: e["outcome"] for h, e in report["hosts"].items()} == {"hs1": "needs attention", "hs2": "needs attention"}
    # Ansible warns about nothing but the advisor's findings (run_once under the free strategy used to warn).
    warnings = re.findall(r"^\[WARNING\]: (.*)", run.stdout + run.stderr, re.M)
    assert warnings and all(w.startswith("registration_enabled: ") for w in warnings), warnings


def test_playbook_gate_blocks_on_what_the_run_cannot_remedy_and_lists_the_rest_as_remedied(env, tmp_path):
    """Findings carry the module that remedies them (remedied_by), and the gate reads that, not a list."""
    clean_data(env)
    pepper_file = tmp_path / "pepper"
    pepper_file.write_text(CLEAN_SYNAPSE["password_config"]["pepper"] + "\n")  # what `echo $PEPPER >` writes
    mas = copy.deepcopy(CLEAN_MAS)
    scheme = mas["passwords"]["schemes"][0]
    del scheme["secret"]
    scheme["secret_file"] = str(pepper_file)
    env.write_configs(copy.deepcopy(CLEAN_SYNAPSE), mas)
    remedied = {"syn2mas_synapse_config": [env.homeserver_yaml], "syn2mas_mas_config": [env.mas_yaml]}
    # Guest access is an ERROR no module of the run remedies: it blocks. A host of its own in the same run, over
    # the same databases, with config files of its own (the inventory's defaults).
    env.homeserver_yaml, env.mas_yaml = str(tmp_path / "guest-homeserver.yaml"), str(tmp_path / "guest-mas.yaml")
    env.write_configs({**copy.deepcopy(CLEAN_SYNAPSE), "allow_guest_access": "false"}, mas)  # on for Synapse
    run, report = advisor_playbook(env, tmp_path, {"remedied": remedied, "blocked": {}})[:2]
    assert run.returncode == 0, run.stdout + run.stderr
    findings = report["hosts"]["remedied"]["findings"]
    # mas_synapse_link writes the pepper inline in the run, so this ERROR does not block it.
    assert findings["remedied"] == ["mas_password_secret_file_newline"], findings
    assert findings["blocking"] == [] and findings["errors"] == []
    assert report["hosts"]["remedied"]["outcome"] == "ready"

    findings = report["hosts"]["blocked"]["findings"]
    assert report["hosts"]["blocked"]["outcome"] == "blocked", findings
    assert [line.split(":")[0] for line in findings["blocking"]] == ["guest_access_enabled"]
    assert findings["remedied"] == ["mas_password_secret_file_newline"]


def test_playbook_reads_mas_config_on_mas_host_and_fails_a_host_whose_mas_config_is_not_there(env, tmp_path):
    """MAS's config on an inventory host of its own (syn2mas_mas_host): read there, advised as on the Synapse
    host; a config that is not there is an ERROR naming that host and the path, and that host fails the run."""
    clean_data(env)
    configure(env)
    before = env.synapse_dump(), env.mas_dump()
    lost = str(tmp_path / "nowhere" / "config.yaml")
    # One host at a time (--forks 1): both advise the same databases, and at once each could see the other's
    # advisor connected to them (an INFO more, when the machine is loaded and their reads overlap).
    run, report, markdown = advisor_playbook(env, tmp_path, {
        "found": {"syn2mas_mas_host": "mas-vm"},
        "lost": {"syn2mas_mas_host": "mas-vm", "syn2mas_mas_config": [lost]},
    }, "--forks", "1", mas_hosts=["mas-vm"])
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert recap(run.stdout) == {"found": 0, "lost": 1}, output
    hosts = report["hosts"]
    assert hosts["found"]["outcome"] == "ready" and hosts["found"]["mas_host"] == "mas-vm", hosts["found"]
    assert hosts["found"]["findings"]["count"] == 1  # the migration counts: MAS's config and database were read
    assert hosts["lost"]["outcome"] == "blocked" and hosts["lost"]["mas_host"] == "mas-vm", hosts["lost"]
    message = f"{lost}: file not found on mas-vm"
    assert [line for line in hosts["lost"]["findings"]["blocking"] if line.startswith("mas_config_invalid: ")] == [
        f"mas_config_invalid: {message}"], hosts["lost"]["findings"]
    assert f"MAS's config could not be read on mas-vm: {lost}: file not found" in output
    assert "mas-vm" not in report["hosts"]  # MAS's host is not advised itself
    assert (env.synapse_dump(), env.mas_dump()) == before


def test_playbook_blocks_a_host_whose_mas_does_not_answer_at_its_public_url_from_the_controller(env, tmp_path):
    """MAS answers where Synapse reaches it, but not where clients reach it (its public URL, asked from the
    controller): the host is blocked, naming the URL. Skippable where the controller cannot reach it by design."""
    clean_data(env)
    configure(env)
    dead = f"http://127.0.0.1:{free_port()}/"
    skipped = {"syn2mas_mas_public_url": dead, "syn2mas_check_mas_public_url": False}
    run, report = advisor_playbook(env, tmp_path, {"dead": {"syn2mas_mas_public_url": dead}, "skipped": skipped})[:2]
    assert run.returncode == 0, run.stdout + run.stderr
    entry = report["hosts"]["dead"]
    assert entry["outcome"] == "blocked", entry
    assert [line.split(" (")[0] for line in entry["findings"]["blocking"]] == [
        f"mas_public_url: MAS does not answer at its public URL {dead}.well-known/openid-configuration from the "
        "controller"], entry["findings"]
    assert "syn2mas_check_mas_public_url: false" in entry["findings"]["blocking"][0]
    assert report["hosts"]["skipped"]["outcome"] == "ready", report["hosts"]["skipped"]
