"""The fleet report built from each host's phase results (fleet_report), as an operator reads it: JSON and markdown."""

from __future__ import annotations

import json
import os

import pytest

from _syn2mas.runbook import fleet_report as fr
from _syn2mas.advisor import REGISTRY
from _syn2mas.advisor.remedied import MADE_BY_THE_RUN, split_findings

# A real run's marks (epoch seconds): backup, preparation, then the window until Synapse is healthy again.
MARKS = {"backup": 1000.0, "prepare": 1002.04, "synapse_stop": 1010.0, "mas_stop": 1015.55, "activate": 1018.0,
         "import": 1020.0, "mas_start": 1026.5, "synapse_start": 1030.0, "synapse_healthy": 1036.26,
         "well_known": 1036.26, "end": 1040.0}


def finding(severity, check, remedied_by=None, message=None):
    return {"severity": severity, "check": check, "message": message or f"{check} found", "where": "here",
            "remedy": "fix it", "remedied_by": remedied_by}


def migrated(**over):
    """The phase results of a host migrated by a real run, as the roles publish them."""
    results = {
        "run": {"outcome": "migrated", "error": None, "failed_phase": None, "rolled_back": False, "marks": MARKS,
                "duration_seconds": 40.2, "mas_host": "hs1"},
        "state": "delegated",
        "preflight": {"state": "legacy", "blocking": [], "findings": [
            finding("ERROR", "mas_password_scheme_missing", remedied_by="matrix.syn2mas.mas_synapse_link"),
            finding("WARN", "registration_enabled"), finding("INFO", "server_name")]},
        "backup": {"path": "/var/backups/syn2mas/20261207T050000Z", "verified": True},
        "import": {
            "import": {"dry_run": False, "already_imported": False, "duration_seconds": 6.5,
                       "counts": {"users": {"migrated": 5}, "device_sessions": {"migrated": 3},
                                  "access_tokens": {"migrated": 0}}},
            "verify": {"ok": True, "verdict": "verified: 31 rows in 9 entities, 0 missing", "damaged": [],
                       "entities": list("abcdefghi"), "totals": {"found": 31, "missing": 0, "different": 0,
                                                                 "unexpected": 0, "changed_in_synapse": 0}},
            "live": {"ok": True, "verdict": "live checks passed: 6 of 7", "passed": 6, "errors": 0, "warnings": 1, "checks": [
                {"level": "OK", "check": "synapse_health", "message": "answers"},
                {"level": "WARN", "check": "well_known_issuer", "message": "not published", "remedy": "publish it"}]},
            "post_advice": {"findings": [finding("WARN", "registration_enabled"),
                                         finding("WARN", "mas_already_imported"), finding("INFO", "server_name")]},
        },
        "reverse_proxy": None,
    }
    for key, value in over.items():
        results[key] = value
    return results


def report(hosts, **kw):
    kw.setdefault("generated_at", "2026-12-07T05:00:00")
    return fr.build_report(hosts, "20261207T050000Z", **kw)


def test_phases_and_downtime_come_from_the_marks():
    entry = report({"hs1": migrated()})["hosts"]["hs1"]
    assert entry["phase_seconds"] == [
        {"phase": "backup", "seconds": 2.0}, {"phase": "prepare", "seconds": 8.0},
        {"phase": "synapse_stop", "seconds": 5.5}, {"phase": "mas_stop", "seconds": 2.5},
        {"phase": "activate", "seconds": 2.0}, {"phase": "import", "seconds": 6.5},
        {"phase": "mas_start", "seconds": 3.5}, {"phase": "synapse_start", "seconds": 6.3},
        {"phase": "well_known", "seconds": 3.7}]
    assert entry["window_phases"] == ["synapse_stop", "mas_stop", "activate", "import", "mas_start", "synapse_start"]
    # Synapse stopped at 1010.0, healthy at 1036.26: the window, the preparation before it left out.
    assert entry["downtime_seconds"] == 26.3
    assert entry["synapse_down"] is False
    assert entry["counts"] == {"users": 5, "device_sessions": 3, "access_tokens": 0}
    assert (entry["import_seconds"], entry["duration_seconds"]) == (6.5, 40.2)
    assert entry["backup_path"] == "/var/backups/syn2mas/20261207T050000Z" and entry["backup_verified"] is True
    assert (entry["state_before"], entry["state"], entry["outcome"]) == ("legacy", "delegated", "migrated")


def test_check_mode_reports_no_downtime_and_no_backup_path():
    results = migrated(run=dict(migrated()["run"], outcome="would migrate (check mode)"))
    results["import"]["import"].update(dry_run=True, predicted_window_seconds=31.5)
    full = report({"hs1": results}, check_mode=True)
    entry = full["hosts"]["hs1"]
    assert full["check_mode"] is True and entry["check_mode"] is True
    assert entry["downtime_seconds"] is None and entry["synapse_down"] is False
    assert entry["backup_path"] is None and entry["backup_verified"] is None
    assert entry["import_dry_run"] is True
    assert entry["predicted_window_seconds"] == 31.5  # the dry run's own prediction
    md = fr.render_markdown(full)
    assert md.startswith("# syn2mas migrate report, run 20261207T050000Z (check mode: nothing changed)\n")
    assert "/var/backups" not in md
    assert "- remedied by the run (would be): mas_password_scheme_missing\n" in md


def test_the_check_run_predicts_the_window_from_its_own_window_and_the_dry_runs_parts():
    results = migrated(run=dict(migrated()["run"], outcome="would migrate (check mode)"))
    # The dry run's parts: its import (already inside the check run's window), verify's reads, the service seconds.
    results["import"]["import"].update(dry_run=True, predicted_window_seconds=99.9, predicted_window={
        "import_seconds": 6.0, "verify_seconds": 1.25, "service_seconds": 4.5})
    entry = report({"hs1": results}, check_mode=True)["hosts"]["hs1"]
    # The check run's own window (synapse_stop 1010.0 -> synapse_healthy 1036.26), not the dry run's import again.
    assert entry["predicted_window"] == {"check_window_seconds": 26.3, "verify_seconds": 1.25, "service_seconds": 4.5}
    assert entry["predicted_window_seconds"] == 32.0
    assert entry["downtime_seconds"] is None and entry["window_service_seconds"] is None
    # Marked otherwise, predicted otherwise: the figure follows the run's own marks.
    later = dict(MARKS, synapse_healthy=MARKS["synapse_healthy"] + 10)
    results["run"] = dict(results["run"], marks=later)
    assert report({"hs1": results}, check_mode=True)["hosts"]["hs1"]["predicted_window_seconds"] == 42.0
    # The dry run's wait for its cross-check against Synapse is in the check run's window, not in the real one.
    results["import"]["import"]["predicted_window"]["cross_check_wait_seconds"] = 8.0
    entry = report({"hs1": results}, check_mode=True)["hosts"]["hs1"]
    assert entry["predicted_window"]["check_window_seconds"] == 28.3 and entry["predicted_window_seconds"] == 34.0


def test_a_check_run_that_did_not_go_through_the_window_predicts_only_what_its_dry_run_said():
    marks = {k: MARKS[k] for k in ("backup", "prepare", "synapse_stop", "mas_stop")}
    results = migrated(run=dict(migrated()["run"], outcome="failed", marks=marks))
    results["import"]["import"].update(dry_run=True, predicted_window_seconds=12.0, predicted_window={
        "import_seconds": 6.0, "verify_seconds": 1.5, "service_seconds": 4.5})
    entry = report({"hs1": results}, check_mode=True)["hosts"]["hs1"]
    assert entry["predicted_window_seconds"] == 12.0 and entry["predicted_window"] is None


def test_a_real_run_measures_what_its_check_run_could_not(tmp_path):
    d = str(tmp_path)
    write_report(d, "20261205T000000Z", True, {"hs1": {"predicted_window_seconds": 20.0, "predicted_window": {
        "check_window_seconds": 14.0, "verify_seconds": 1.5, "service_seconds": 4.5}}})
    entry = report({"hs1": migrated()}, report_dir=d)["hosts"]["hs1"]
    assert entry["predicted_window_seconds"] == 20.0
    assert entry["predicted_window"]["check_window_seconds"] == 14.0
    # 26.3 s measured, of which the check run measured 14.0 + 1.5: the rest is only a real run's.
    assert entry["window_service_seconds"] == 10.8
    # A rolled-back run's downtime holds its rollback: no such figure from it.
    marks = dict(MARKS, rollback=1030.0)
    del marks["mas_start"], marks["synapse_start"]
    failed = migrated(run=dict(migrated()["run"], outcome="failed", rolled_back=True, marks=marks))
    entry = report({"hs1": failed}, report_dir=d)["hosts"]["hs1"]
    assert entry["predicted_window_seconds"] == 20.0 and entry["window_service_seconds"] is None


def test_a_failed_host_rolled_back_names_its_phase_and_error():
    marks = {k: MARKS[k] for k in ("backup", "prepare", "synapse_stop", "mas_stop", "activate", "import")}
    marks.update(rollback=1023.3, synapse_healthy=1040.0, end=1041.0)
    run = {"outcome": "failed", "error": "Import into MAS: cannot connect to the MAS database",
           "failed_phase": "import", "rolled_back": True, "marks": marks, "duration_seconds": 41, "mas_host": "hs2"}
    results = migrated(run=run, state="legacy")
    results["import"] = {"import": {"dry_run": None, "already_imported": None, "duration_seconds": None,
                                    "counts": {}}}
    full = report({"hs2": results})
    entry = full["hosts"]["hs2"]
    assert (entry["outcome"], entry["failed_phase"], entry["rolled_back"]) == ("failed", "import", True)
    assert entry["phase_seconds"][-2:] == [{"phase": "import", "seconds": 3.3}, {"phase": "rollback", "seconds": 17.7}]
    assert entry["downtime_seconds"] == 30.0 and entry["synapse_down"] is False
    md = fr.render_markdown(full)
    assert "Failed in the import phase: Import into MAS: cannot connect to the MAS database (rolled back)\n" in md
    assert "| hs2 | failed | legacy → legacy |" in md


def test_a_host_left_down_is_still_down_in_both_reports():
    run = {"outcome": "failed", "error": "Stop Synapse: timeout", "failed_phase": "synapse_stop",
           "rolled_back": True, "marks": {"backup": 1000.0, "synapse_stop": 1010.0, "rollback": 1050.0,
                                          "end": 1051.0}, "mas_host": "hs3"}
    full = report({"hs3": migrated(run=run, state="legacy")})
    entry = full["hosts"]["hs3"]
    assert entry["synapse_down"] is True and entry["downtime_seconds"] is None
    row = next(line for line in fr.render_markdown(full).splitlines() if line.startswith("| hs3 |"))
    assert "| still down |" in row


def test_a_host_not_reached_is_reported_not_run():
    full = report({"hs4": {}})
    entry = full["hosts"]["hs4"]
    assert (entry["outcome"], entry["state"], entry["state_before"], entry["error"]) == ("not run", None, None, None)
    assert "| hs4 | not run | ? → ? |" in fr.render_markdown(full)


def test_before_the_second_pass_a_finding_is_remedied_by_its_own_remedied_by():
    before = [finding("ERROR", "sso_provider_unmapped", remedied_by="matrix.syn2mas.mas_upstream_provider"),
              finding("ERROR", "sso_provider_unmapped", message="another"),  # one the run cannot remedy
              finding("WARN", "registration_enabled"), finding("INFO", "server_name")]
    split = split_findings(before)
    assert split == {"errors": ["sso_provider_unmapped: another"], "warnings": ["registration_enabled: registration_enabled found"],
                     "remedied": ["sso_provider_unmapped"], "count": 4}


def test_after_the_second_pass_what_is_gone_was_remedied_and_what_is_left_is_listed():
    entry = report({"hs1": migrated()})["hosts"]["hs1"]
    findings = entry["findings"]
    assert findings["remedied"] == ["mas_password_scheme_missing"]
    assert findings["warnings"] == ["registration_enabled: registration_enabled found"]
    assert findings["errors"] == []
    # The run's own import is no finding after it; INFO counts but is no line.
    assert findings["count"] == 2
    listed = {line.split(":")[0] for line in findings["errors"] + findings["warnings"]}
    assert not listed & set(findings["remedied"])  # each finding remedied or listed, never both


def test_the_run_own_import_is_a_declared_check():
    assert MADE_BY_THE_RUN <= set(REGISTRY)


def test_verified_live_and_compat_columns():
    results = migrated(reverse_proxy={"reach_mas": False, "findings": [
        {"route": "login", "reached": "mas", "severity": "INFO", "check": "compat_routes_reach_mas", "message": "ok"},
        {"route": "refresh", "reached": "synapse", "severity": "ERROR", "check": "compat_routes_reach_mas",
         "message": "refresh reaches Synapse", "remedy": "route it to MAS"}]})
    full = report({"hs1": results})
    entry = full["hosts"]["hs1"]
    assert entry["verified"] == {"ok": True, "rows": 31, "entities": 9, "missing": 0, "different": 0, "unexpected": 0,
                                 "changed_in_synapse": 0, "verdict": "verified: 31 rows in 9 entities, 0 missing",
                                 "damaged": []}
    assert entry["live_checks"]["ok"] is True
    assert [c["check"] for c in entry["live_checks"]["findings"]] == ["well_known_issuer"]
    assert entry["compat_routes"]["routes"] == {"login": "mas", "refresh": "synapse"}
    assert [f["severity"] for f in entry["compat_routes"]["findings"]] == ["ERROR"]
    md = fr.render_markdown(full)
    assert "| Verified | Live checks |" in md
    assert "| verified: 31 rows in 9 entities, 0 missing | live checks passed: 6 of 7 |" in md
    assert "Legacy clients' routes through the public URL do not all reach MAS: login mas, refresh synapse\n" in md
    assert "- ERROR compat_routes_reach_mas: refresh reaches Synapse -> route it to MAS\n" in md
    assert "- WARN well_known_issuer: not published -> publish it\n" in md


def test_no_verification_columns_when_nothing_was_verified():
    results = migrated()
    results["import"] = {"import": results["import"]["import"]}
    assert "Verified" not in fr.render_markdown(report({"hs1": results}))


@pytest.mark.parametrize("phase, field", [(p, f) for p, fields in fr.REQUIRED.items() for f in fields])
def test_a_result_missing_a_field_is_refused_naming_the_field(phase, field):
    results = migrated(rollback={"state": "migrated"},
                       reverse_proxy={"reach_mas": True, "findings": []})
    holder = results["import"] if phase in ("import", "verify", "live", "post_advice") else results
    holder[phase] = {k: v for k, v in holder[phase].items() if k != field}
    holder[phase]["renamed_" + field] = "?"
    with pytest.raises(fr.ReportInputError) as exc:
        report({"hs1": results})
    assert f"hs1: the {phase} result has no field {field!r}" in str(exc.value)


def test_mas_host_shown_in_markdown_only_when_it_differs():
    same = report({"hs1": migrated()})
    assert "MAS host" not in fr.render_markdown(same)
    apart = migrated(run=dict(migrated()["run"], mas_host="mas1.example.org"))
    full = report({"hs1": apart, "hs2": migrated(run=dict(migrated()["run"], mas_host="hs2"))})
    md = fr.render_markdown(full)
    assert md.splitlines()[4].startswith("| Host | MAS host | Outcome |")
    assert "| hs1 | mas1.example.org | migrated |" in md
    assert "| hs2 | hs2 | migrated |" in md
    assert full["hosts"]["hs1"]["mas_host"] == "mas1.example.org"


def write_report(report_dir, run_id, check_mode, hosts, name="migrate"):
    os.makedirs(os.path.join(report_dir, run_id))
    with open(os.path.join(report_dir, run_id, f"{name}.json"), "w") as handle:
        json.dump({"run_id": run_id, "check_mode": check_mode, "hosts": hosts}, handle)


def test_a_real_run_shows_the_latest_check_mode_prediction_beside_the_measured_window(tmp_path):
    d = str(tmp_path)
    write_report(d, "20261201T000000Z", True, {"hs1": {"predicted_window_seconds": 50.0},
                                               "hs2": {"predicted_window_seconds": 44.0}})
    write_report(d, "20261205T000000Z", True, {"hs1": {"predicted_window_seconds": 25.0},
                                               "hs2": {"predicted_window_seconds": None}})
    write_report(d, "20261206T000000Z", False, {"hs1": {"predicted_window_seconds": 99.0}})  # a real run's
    write_report(d, "20261206T010000Z", True, {"hs1": {"predicted_window_seconds": 77.0}}, name="advisor")
    full = report({"hs1": migrated(), "hs2": migrated(), "hs3": migrated()}, report_dir=d)
    predicted = {h: e["predicted_window_seconds"] for h, e in full["hosts"].items()}
    assert predicted == {"hs1": 25.0, "hs2": 44.0, "hs3": None}
    md = fr.render_markdown(full)
    assert "| Downtime (s) | Predicted (s) | Duration (s) |" in md
    assert "| 26.3 | 25.0 | 40.2 |" in md


def test_no_prediction_column_without_a_prediction(tmp_path):
    md = fr.render_markdown(report({"hs1": migrated()}, report_dir=str(tmp_path)))
    assert "Predicted" not in md


def test_check_mode_ignores_earlier_reports(tmp_path):
    write_report(str(tmp_path), "20261201T000000Z", True, {"hs1": {"predicted_window_seconds": 50.0}})
    entry = report({"hs1": migrated()}, check_mode=True, report_dir=str(tmp_path))["hosts"]["hs1"]
    assert entry["predicted_window_seconds"] is None  # this dry run predicted nothing (an older import module)


def test_the_results_are_read_from_the_facts_the_roles_publish():
    host_vars = {"preflight_result": {"state": "legacy", "findings": [], "blocking": []},
                 "backup_result": {"path": "/b", "verified": True}, "common_result": {"state": "delegated"},
                 "syn2mas_outcome": "migrated", "syn2mas_marks": {"backup": 1.0}, "syn2mas_mas_host": "mas1",
                 "backup_made": {"path": "/not/this"}}  # a register of the role's own: never read
    results = fr.results_of(host_vars)
    assert results["backup"] == {"path": "/b", "verified": True}
    assert results["state"] == "delegated" and results["import"] is None
    assert results["run"]["outcome"] == "migrated" and results["run"]["mas_host"] == "mas1"
    entry = fr.host_entry("hs1", results, False)
    assert (entry["backup_path"], entry["state_before"], entry["mas_host"]) == ("/b", "legacy", "mas1")


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where each role publishes its result: (tasks file, the fact, the key under it or None).
PUBLISHERS = [
    ("preflight/tasks/main.yml", "preflight_result", None, "preflight"),
    ("backup/tasks/main.yml", "backup_result", None, "backup"),
    ("rollback/tasks/main.yml", "rollback_result", None, "rollback"),
    ("reverse_proxy/tasks/verify.yml", "reverse_proxy_result", None, "reverse_proxy"),
    ("import/tasks/main.yml", "import_result", "import", "import"),
]


def _set_facts(path, fact):
    import yaml

    def walk(tasks):
        for task in tasks or []:
            for key in ("block", "rescue", "always"):
                yield from walk(task.get(key))
            args = task.get("ansible.builtin.set_fact") or {}
            if fact in args:
                yield args[fact]
    with open(os.path.join(ROOT, "roles", path)) as handle:
        return list(walk(yaml.safe_load(handle)))


@pytest.mark.parametrize("path, fact, key, phase", PUBLISHERS)
def test_each_role_publishes_every_field_the_report_reads(path, fact, key, phase):
    published = _set_facts(path, fact)
    assert published, f"roles/{path} publishes no {fact}"
    # The set_fact that publishes the phase's own part (the import's result also gets verify, live, post_advice).
    last = next(p for p in reversed(published) if key is None or f"'{key}':" in str(p))
    for field in fr.REQUIRED[phase]:
        if isinstance(last, dict):  # a mapping written out
            assert field in last, f"roles/{path}: {fact} has no {field!r}"
        else:  # a combine() of a mapping written in Jinja
            assert f"'{field}':" in last and f"'{key}':" in last, f"roles/{path}: {fact}.{key} has no {field!r}"
