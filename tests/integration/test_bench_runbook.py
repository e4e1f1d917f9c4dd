"""The runbook benchmark's machinery at a tiny size (bench/runbook.py): migrate.yml in check mode, then for
real, against a real Synapse on the bench's generated database, MAS being the tests' stand-in.

No timing is asserted: only that the summary line's figures are the ones the runs reported (the fleet
report's window and import seconds, verify's and the check-mode import's results as ansible registered
them, read back here from the files the runs wrote), and that the phases were followed on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import runbook  # noqa: E402

N_USERS = 200
LINE = re.compile(r"^runbook (?P<n>\d+) users: window (?P<window>[\d.]+) s, import/floor (?P<floor>[\d.]+), "
                  r"verify share (?P<verify>[\d.]+), peak rss (?P<rss>\d+) MB, predicted (?P<predicted>[\d.]+) s$")


def _jsonl(path: str) -> list:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_the_runbook_bench_reports_what_the_runs_reported(pg, tmp_path, capsys):
    record = runbook.run_runbook_size(pg, N_USERS, seed=5, workdir=str(tmp_path), service_seconds=12.5,
                                      service_source="the test")
    line = runbook.summary_line(record)
    fields = LINE.match(line)
    assert fields, line
    assert int(fields["n"]) == N_USERS

    with open(record["real_run"]["report_path"]) as handle:
        report = json.load(handle)["hosts"][runbook.HOST]
    with open(record["check_run"]["report_path"]) as handle:
        check_report = json.load(handle)["hosts"][runbook.HOST]
    assert report["outcome"] == "migrated" and check_report["outcome"] == "would migrate (check mode)"
    verify = [r["result"]["data"] for r in _jsonl(record["real_run"]["results_path"])
              if r["action"] == "syn2mas_verify" and "data" in r["result"]]
    dry = [r["result"] for r in _jsonl(record["check_run"]["results_path"]) if r["action"] == "syn2mas_import"]
    assert len(verify) == 1 and len(dry) == 1 and dry[0]["dry_run"] is True

    # Each figure of the line, as the runs reported it.
    assert float(fields["window"]) == round(report["downtime_seconds"], 1)
    assert set(report["window_phases"]) >= {"synapse_stop", "import", "synapse_start"}
    assert float(fields["floor"]) == round(report["import_seconds"] / record["floor"]["total_seconds"], 2)
    assert float(fields["verify"]) == round(verify[0]["duration_seconds"] / report["import_seconds"], 2)
    predicted = check_report.get("predicted_window_seconds", dry[0]["predicted_window_seconds"])
    assert float(fields["predicted"]) == round(predicted, 1)
    # The check run added the service seconds the inventory gave it to what it measured: its own window (the
    # dry-run import in it) and verify's reads (measured by the dry run).
    parts = check_report["predicted_window"]
    assert parts["service_seconds"] == 12.5 == dry[0]["predicted_window"]["service_seconds"]
    assert parts["verify_seconds"] == dry[0]["predicted_window"]["verify_seconds"] > 0
    assert parts["check_window_seconds"] > dry[0]["predicted_window"]["import_seconds"] > 0
    # The prediction is its parts' sum, given to one decimal (the parts to three).
    assert abs(predicted - sum(parts.values())) <= 0.05 + 0.002

    # Peak RSS: the host's processes of the run, the import's among them; Synapse and the stand-in apart.
    rss = record["real_run"]["rss"]
    assert int(fields["rss"]) == round(rss["host_peak_mb"])
    assert 0 < rss["import_mb"] <= rss["host_peak_mb"]
    assert rss["synapse_mb"] and rss["mas_stand_in_mb"]

    # The import alone and the floor, beside the window.
    assert record["import_alone"]["migrated"]["users"] == report["counts"]["users"] > 0
    assert "raw-copy floor" in runbook.format_runbook_table(record)

    err = capsys.readouterr().err
    for phase in ("synapse_service", "mas_service", "import"):
        assert re.search(rf"real run: phase {phase}: ", err), phase
