"""The action syn2mas_report, run by ansible-playbook: it writes the fleet report's files byte for byte as the
role wrote them before it (ansible.builtin.file, then ansible.builtin.copy of `to_nice_json(indent=2)` and of the
fleet_report_markdown filter), with the same modes, in check mode too, and returns the paths only."""

from __future__ import annotations

import json
import os
import stat

from _syn2mas.runbook import fleet_report as fr
from tests.support.ansible_run import run_tasks

RUN_ID = "20261207T050000Z"


def a_report(check_mode):
    """A report the library builds, with what a JSON writer could get wrong: non-ASCII text, floats, None, nested
    lists, a host not reached and one with MAS on a host of its own."""
    marks = {"backup": 1000.0, "prepare": 1002.04, "synapse_stop": 1010.0, "mas_stop": 1015.55, "import": 1020.0,
             "rollback": 1026.5, "synapse_healthy": 1036.26, "end": 1040.0}
    finding = {"severity": "WARN", "check": "registration_enabled", "message": "Registrierung für alle offen",
               "where": "homeserver.yaml: enable_registration", "remedy": "décidez avant", "remedied_by": None}
    hosts = {
        "hs1.example.org": {
            "run": {"outcome": "failed", "error": "import: row 3 of «users» — naïve ‹value›\ttab", "rolled_back": True,
                    "failed_phase": "import", "marks": marks, "duration_seconds": 40.2, "mas_host": "mas1"},
            "state": "legacy", "backup": {"path": "/var/backups/syn2mas/ü", "verified": True},
            "preflight": {"state": "legacy", "blocking": [], "findings": [finding]}},
        "hs2": {},
    }
    return fr.build_report(hosts, RUN_ID, name="migrate", check_mode=check_mode, generated_at="2026-12-07T05:00:00")


def the_role_before_and_the_action(old_dir, new_dir, report_file):
    """The role's tasks as they were (file, then copy of both texts), and the action, on the same report."""
    report_vars = {"common_report_dir": "{{ report_dir }}", "common_run_id": RUN_ID, "common_report_name": "migrate"}
    return [
        {"name": "the report", "ansible.builtin.include_vars": {"file": str(report_file), "name": "common_report"}},
        {"name": "the role's directory before", "vars": {**report_vars, "report_dir": str(old_dir)},
         "ansible.builtin.file": {"path": "{{ common_report_dir }}/{{ common_run_id }}", "state": "directory",
                                  "mode": "0700"},
         "check_mode": False},
        {"name": "the role's files before", "vars": {**report_vars, "report_dir": str(old_dir)},
         "ansible.builtin.copy": {
             "content": "{{ item.content }}",
             "dest": "{{ common_report_dir }}/{{ common_run_id }}/{{ common_report_name }}.{{ item.ext }}",
             "mode": "0600"},
         "loop": [{"ext": "json", "content": "{{ common_report | to_nice_json(indent=2) }}\n"},
                  {"ext": "md", "content": "{{ common_report | matrix.syn2mas.fleet_report_markdown }}"}],
         "check_mode": False},
        {"name": "the action", "vars": {**report_vars, "report_dir": str(new_dir)},
         "matrix.syn2mas.syn2mas_report": {"report": "{{ common_report }}", "report_dir": "{{ common_report_dir }}",
                                           "run_id": "{{ common_run_id }}", "name": "{{ common_report_name }}"}},
    ]


def test_the_action_writes_the_files_the_role_wrote_before_in_check_mode_too(tmp_path):
    for check_mode in (False, True):
        report = a_report(check_mode)
        report_file = tmp_path / f"report-{check_mode}.json"
        report_file.write_text(json.dumps(report))
        old_dir, new_dir = tmp_path / f"old-{check_mode}", tmp_path / f"new-{check_mode}"
        run = run_tasks(tmp_path, the_role_before_and_the_action(old_dir, new_dir, report_file), check=check_mode)
        assert [r.get("failed", False) for r in run.results] == [False] * 4, run.stdout

        action = run.results[3]
        written = {"json": str(new_dir / RUN_ID / "migrate.json"), "md": str(new_dir / RUN_ID / "migrate.md")}
        assert action["changed"] is False and action["paths"] == written
        assert "common_report" not in json.dumps(action) and "naïve" not in json.dumps(action)  # paths only
        for ext in ("json", "md"):
            before = (old_dir / RUN_ID / f"migrate.{ext}").read_bytes()
            after = (new_dir / RUN_ID / f"migrate.{ext}").read_bytes()
            assert after == before, ext
            assert stat.S_IMODE(os.stat(written[ext]).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(new_dir / RUN_ID).st_mode) == 0o700
        assert json.loads((new_dir / RUN_ID / "migrate.json").read_text(encoding="utf-8")) == report
        assert "naïve ‹value›" in (new_dir / RUN_ID / "migrate.md").read_text(encoding="utf-8")
        assert sorted(os.listdir(new_dir / RUN_ID)) == ["migrate.json", "migrate.md"]


def test_what_is_not_a_report_fails_the_task_naming_it_and_writes_nothing(tmp_path):
    run = run_tasks(tmp_path, [{"name": "not a report", "matrix.syn2mas.syn2mas_report": {
        "report": {"run_id": RUN_ID, "hosts": {}}, "report_dir": str(tmp_path / "reports"), "run_id": RUN_ID}}])
    assert run.result["failed"] is True
    assert run.result["msg"].startswith("report is not a fleet report (from matrix.syn2mas.fleet_report)"), run.result
    assert not (tmp_path / "reports").exists()
