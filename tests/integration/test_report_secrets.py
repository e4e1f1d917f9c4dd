"""The fleet reports (roles/common's report.json and report.md) and the runbook's output never show a
password from a malformed database URI (issue 9), whichever playbook wrote them and wherever the URI
came from (the inventory's syn2mas_*_database_uri or MAS's config).

The hosts here are the test's databases and config files with no Synapse running: a malformed URI
stops the run in its preflight, before anything would talk to Synapse.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess

import pytest
import yaml

from tests.support.reliability import cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
SECRET = "Report-Secret-8812"
SECRET_WITH_AT = "Report@Secret-8812"
pytestmark = pytest.mark.timeout(900)


def malformed(user, secret):
    return f"postgresql://{user}:{secret}@[::1"  # libpq quotes this whole URI in its error


def run_playbook(env, tmp_path, playbook, host_vars):
    reports = tmp_path / "reports"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": VENV_PYTHON,
                 "syn2mas_report_dir": str(reports)},
        "children": {"synapse": {"hosts": {"hs1": {
            "syn2mas_synapse_config": [env.homeserver_yaml], "syn2mas_mas_config": [env.mas_yaml],
            "syn2mas_mas_secret": "mas-shared-secret-value",
            "syn2mas_mas_endpoint": "http://127.0.0.1:9/", "syn2mas_synapse_endpoint": "http://127.0.0.1:9/",
            "syn2mas_synapse_health_url": "http://127.0.0.1:9/health", "syn2mas_python": VENV_PYTHON,
            "syn2mas_state_file": str(tmp_path / "state.json"), "syn2mas_backup_dir": str(tmp_path / "backups"),
            "syn2mas_well_known_path": str(tmp_path / "well-known.json"),
            "synapse_service_manager": "command", "synapse_service_start_command": "true",
            "synapse_service_stop_command": "true", **host_vars}}}},
    }}))
    log = tmp_path / "ansible.log"
    proc = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(inventory),
         os.path.join(ROOT, "playbooks", playbook), "-vvv"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOG_PATH=str(log),
                 PATH=os.path.dirname(VENV_PYTHON) + os.pathsep + os.environ.get("PATH", "")))
    files = sorted(glob.glob(str(reports / "*" / "*")))
    return proc, files, log


SOURCES = {
    "inventory-mas-uri": lambda secret: ({"syn2mas_mas_database_uri": malformed("mas_user", secret)}, {}),
    "inventory-synapse-uri": lambda secret: ({"syn2mas_synapse_database_uri": malformed("synapse_user", secret)}, {}),
    "mas-config-uri": lambda secret: ({}, {"mas_extra": {"database": {"uri": malformed("mas_user", secret)}}}),
}


CASES = cases([pytest.param(playbook, source, secret, id=f"{playbook.split('.', maxsplit=1)[0]}-{source}-{sid}")
               for playbook in ("migrate.yml", "advisor.yml") for source in SOURCES
               for secret, sid in ((SECRET, "plain"), (SECRET_WITH_AT, "with-at"))],
              in_the_test_run={"migrate-inventory-mas-uri-plain", "advisor-inventory-mas-uri-plain"})


@pytest.mark.parametrize("playbook, source, secret", CASES)
def test_no_report_file_nor_output_shows_a_malformed_uris_password(env, tmp_path, playbook, source, secret):
    host_vars, configs = SOURCES[source](secret)
    if configs:
        env.write_configs(**configs)
    mas_before, synapse_before = env.mas_dump(), env.synapse_dump()
    proc, files, log = run_playbook(env, tmp_path, playbook, host_vars)
    name = playbook.split(".", maxsplit=1)[0]
    # migrate fails; the advisor fails a host it could not run on, and reports an unreachable one as blocked
    assert proc.returncode != 0 or name == "advisor", proc.stdout[-4000:]
    assert [os.path.basename(f) for f in files] == [f"{name}.json", f"{name}.md"], proc.stdout[-4000:]
    report = open(files[0]).read()
    # the report says why, without the password
    assert "invalid database URI" in report or "cannot connect to the" in report, report
    # the host stops at the advisor's gate (migrate) or is reported blocked (advisor): the URI is a finding
    expected_outcome = {"migrate": "preflight failed", "advisor": "blocked"}[name]
    assert json.loads(report)["hosts"]["hs1"]["outcome"] == expected_outcome, report
    outputs = {path: open(path).read() for path in files}
    outputs["ansible-playbook -vvv"] = proc.stdout + proc.stderr
    outputs["ansible.log"] = log.read_text()
    for where, text in outputs.items():
        for part in (secret, "Secret-8812"):
            assert part not in text, f"{part!r} shown in {where}"
    assert env.mas_dump() == mas_before and env.synapse_dump() == synapse_before
