"""The fleet report's files on the controller (report_files, what the action syn2mas_report writes): where they
go, their modes, their text, and that a write cut short leaves the previous report whole."""

from __future__ import annotations

import json
import os
import stat

import pytest

from _syn2mas.runbook import fleet_report as fr
from _syn2mas.runbook import report_files

RUN_ID = "20261207T050000Z"


def a_report(check_mode=False, error=None):
    """A report built by the library from a host that failed with `error` and a host not reached."""
    hosts = {
        "hs1": {"run": {"outcome": "failed", "error": error, "failed_phase": "import", "rolled_back": True,
                        "marks": {"backup": 1000.0, "prepare": 1002.04, "synapse_stop": 1010.0, "import": 1020.0,
                                  "rollback": 1026.5, "synapse_healthy": 1036.26, "end": 1040.0},
                        "duration_seconds": 40.2, "mas_host": "mas1"},
                "state": "legacy", "backup": {"path": "/var/backups/syn2mas/x", "verified": True}},
        "hs2": {},
    }
    return fr.build_report(hosts, RUN_ID, check_mode=check_mode, generated_at="2026-12-07T05:00:00")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_files_are_the_reports_json_and_markdown_in_the_run_directory(tmp_path):
    report = a_report(error="import: row 3 of «users» — naïve value")
    paths = report_files.write_report(report, str(tmp_path / "reports"), RUN_ID, "migrate")

    run_dir = tmp_path / "reports" / RUN_ID
    assert paths == {"json": str(run_dir / "migrate.json"), "md": str(run_dir / "migrate.md")}
    assert sorted(os.listdir(run_dir)) == ["migrate.json", "migrate.md"]  # no temporary file left
    text = (run_dir / "migrate.json").read_text(encoding="utf-8")
    assert json.loads(text) == report
    # As to_nice_json(indent=2) wrote it: sorted keys, two spaces, non-ASCII escaped, then a newline.
    assert text.startswith('{\n  "check_mode": false,\n  "generated_at": "2026-12-07T05:00:00",\n  "hosts": {\n')
    assert "\\u00abusers\\u00bb \\u2014 na\\u00efve" in text and text.endswith("}\n") and not text.endswith("\n\n")
    markdown = (run_dir / "migrate.md").read_text(encoding="utf-8")
    assert markdown == fr.render_markdown(report)
    assert markdown.startswith(f"# syn2mas migrate report, run {RUN_ID}\n")
    assert "«users» — naïve value" in markdown


def test_the_directories_made_are_0700_and_the_files_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "reports").mkdir(mode=0o755)
        report_files.write_report(a_report(), str(tmp_path / "reports" / "deeper"), RUN_ID, "advisor")
        # A run directory that exists with a looser mode is tightened, and a file rewritten is 0600 again.
        os.chmod(tmp_path / "reports" / "deeper" / RUN_ID, 0o755)
        os.chmod(tmp_path / "reports" / "deeper" / RUN_ID / "advisor.md", 0o644)
        report_files.write_report(a_report(), str(tmp_path / "reports" / "deeper"), RUN_ID, "advisor")
    finally:
        os.umask(old)
    assert mode(tmp_path / "reports") == 0o755  # the operator's own directory is left as it was
    assert mode(tmp_path / "reports" / "deeper") == 0o700
    assert mode(tmp_path / "reports" / "deeper" / RUN_ID) == 0o700
    for ext in ("json", "md"):
        assert mode(tmp_path / "reports" / "deeper" / RUN_ID / f"advisor.{ext}") == 0o600


def test_a_second_write_replaces_the_report_whole(tmp_path):
    report_files.write_report(a_report(error="first"), str(tmp_path), RUN_ID)
    report_files.write_report(a_report(error="second"), str(tmp_path), RUN_ID)
    written = json.loads((tmp_path / RUN_ID / "migrate.json").read_text())
    assert written["hosts"]["hs1"]["error"] == "second"
    assert "second" in (tmp_path / RUN_ID / "migrate.md").read_text()
    assert sorted(os.listdir(tmp_path / RUN_ID)) == ["migrate.json", "migrate.md"]


def test_a_write_cut_short_before_the_rename_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    """The run killed after the new text is written but before it replaces the old file (an interrupt that no
    clean-up sees): the old report is still whole, and the next real run still reads its prediction."""
    report_files.write_report(a_report(check_mode=True, error="earlier"), str(tmp_path), RUN_ID)
    before = {ext: (tmp_path / RUN_ID / f"migrate.{ext}").read_bytes() for ext in ("json", "md")}

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        report_files.write_report(a_report(check_mode=True, error="x" * 100000), str(tmp_path), RUN_ID)
    monkeypatch.undo()

    assert {ext: (tmp_path / RUN_ID / f"migrate.{ext}").read_bytes() for ext in ("json", "md")} == before
    left = [name for name in os.listdir(tmp_path / RUN_ID) if name not in ("migrate.json", "migrate.md")]
    assert len(left) == 1 and left[0].startswith(".migrate.json.") and left[0].endswith(".tmp")
    assert mode(tmp_path / RUN_ID / left[0]) == 0o600  # private from its first byte
    assert fr.latest_predicted(str(tmp_path)) == {}  # read the old report (no prediction), not the leftover


def test_a_failed_write_removes_its_temporary_file_and_names_the_path(tmp_path, monkeypatch):
    report_files.write_report(a_report(error="earlier"), str(tmp_path), RUN_ID)
    before = (tmp_path / RUN_ID / "migrate.json").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_files.os, "fsync", disk_full)
    with pytest.raises(report_files.ReportWriteError) as caught:
        report_files.write_report(a_report(error="later"), str(tmp_path), RUN_ID)
    monkeypatch.undo()
    assert str(caught.value) == f"{tmp_path / RUN_ID / 'migrate.json'}: cannot write the report: No space left on device"
    assert (tmp_path / RUN_ID / "migrate.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path / RUN_ID)) == ["migrate.json", "migrate.md"]


def test_a_report_directory_that_is_a_file_is_named(tmp_path):
    (tmp_path / "reports").write_text("not a directory")
    with pytest.raises(report_files.ReportWriteError) as caught:
        report_files.write_report(a_report(), str(tmp_path / "reports"), RUN_ID)
    assert str(tmp_path / "reports") in str(caught.value)
    assert (tmp_path / "reports").read_text() == "not a directory"


def test_what_is_not_a_report_writes_nothing(tmp_path):
    with pytest.raises(KeyError):
        report_files.write_report({"run_id": RUN_ID, "report": "migrate"}, str(tmp_path), RUN_ID)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="the run id is empty"):
        report_files.write_report(a_report(), str(tmp_path), "")
    assert os.listdir(tmp_path) == []
