"""The runbook's record of a host's run (phase_record.record, applied by the action syn2mas_phase), read back by
the fleet report as it reads a real run's facts."""

from __future__ import annotations

import pytest

from _syn2mas.runbook import fleet_report as fr
from _syn2mas.runbook import phase as pr


def run(*steps, facts=None):
    """Apply steps (now, kwargs) one after the other, as the playbook's tasks do."""
    facts = dict(facts or {})
    for now, kwargs in steps:
        facts.update(pr.record(facts, now, **kwargs))
    return facts


def entry(facts, check_mode=False):
    return fr.host_entry("hs1", fr.results_of(facts), check_mode)


def test_a_migrated_run_reports_its_phases_window_and_duration():
    facts = run((1000.0, {"phase": "backup"}), (1002.0, {"phase": "prepare"}), (1010.0, {"phase": "synapse_stop"}),
                (1013.0, {"phase": "mas_stop"}), (1014.0, {"phase": "activate"}), (1015.0, {"phase": "import"}),
                (1030.0, {"phase": "mas_start"}), (1033.0, {"phase": "synapse_start"}),
                (1040.0, {"phase": "synapse_healthy"}), (1040.0, {"phase": "well_known"}),
                (1042.5, {"phase": "end", "outcome": "migrated"}))
    report = entry(facts)
    assert report["outcome"] == "migrated" and report["failed_phase"] is None and report["rolled_back"] is False
    assert report["downtime_seconds"] == 30.0 and report["duration_seconds"] == 42.5
    assert report["window_phases"] == ["synapse_stop", "mas_stop", "activate", "import", "mas_start",
                                       "synapse_start"]
    assert [p["seconds"] for p in report["phase_seconds"]] == [2.0, 8.0, 3.0, 1.0, 1.0, 15.0, 3.0, 7.0, 2.5]


def test_a_failure_names_the_last_phase_started_and_the_rollback_ends_the_downtime():
    facts = run((1000.0, {"phase": "backup"}), (1002.0, {"phase": "prepare"}), (1010.0, {"phase": "synapse_stop"}),
                (1015.0, {"phase": "import"}),
                (1020.0, {"phase": "rollback", "outcome": "failed", "error": "Import into MAS: boom"}),
                (1030.0, {"phase": "synapse_healthy", "rolled_back": True,
                          "error_notes": ["", "rolled back, but the proxy did not reload"]}),
                (1031.0, {"phase": "end"}))
    report = entry(facts)
    assert (report["outcome"], report["failed_phase"], report["rolled_back"]) == ("failed", "import", True)
    assert report["error"] == "Import into MAS: boom; rolled back, but the proxy did not reload"
    assert report["downtime_seconds"] == 20.0 and report["synapse_down"] is False
    assert "rollback" in [p["phase"] for p in report["phase_seconds"]]


def test_a_failure_before_the_stop_marks_no_rollback_and_no_downtime():
    facts = run((1000.0, {"phase": "backup"}), (1002.0, {"phase": "prepare"}),
                (1005.0, {"phase": "rollback", "outcome": "failed", "error": "prepare: no"}), (1006.0, {"phase": "end"}))
    assert facts[pr.STOPPED] is False and "rollback" not in facts["syn2mas_marks"]
    report = entry(facts)
    assert report["failed_phase"] == "prepare" and report["downtime_seconds"] is None
    assert [p["phase"] for p in report["phase_seconds"]] == ["backup", "prepare"]


def test_a_rollback_that_failed_too_leaves_synapse_down_in_the_report():
    facts = run((1000.0, {"phase": "backup"}), (1010.0, {"phase": "synapse_stop"}),
                (1020.0, {"phase": "rollback", "outcome": "failed", "error": "x: y"}),
                (1025.0, {"rolled_back": False, "error_notes": ["the rollback failed too (z)"]}))
    report = entry(facts)
    assert report["synapse_down"] is True and report["rolled_back"] is False
    assert report["error"] == "x: y; the rollback failed too (z)"


def test_the_first_phase_starts_the_run_afresh():
    facts = run((1.0, {"phase": "backup"}), (2.0, {"phase": "synapse_stop"}), (3.0, {"phase": "backup"}))
    assert facts["syn2mas_marks"] == {"backup": 3.0} and facts[pr.STOPPED] is False and facts[pr.STARTED] == 3.0


def test_a_failure_before_any_phase_is_the_first_phase():
    assert pr.record({}, 5.0, outcome="failed")["syn2mas_failed_phase"] == "backup"


def test_an_unknown_phase_is_refused_by_name():
    with pytest.raises(ValueError, match="'imports' is not one of"):
        pr.record({}, 1.0, phase="imports")


def test_the_facts_are_those_the_report_reads():
    assert set(fr.RUN_FACTS.values()) <= set(pr.FACTS)
    assert set(fr.PHASE_ORDER) < set(pr.MARKS)
