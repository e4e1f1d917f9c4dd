"""The `syn2mas` command's parsing and its progress line, without databases."""

from __future__ import annotations

import io

import pytest

from _syn2mas.cli import Progress, build_parser, format_import_summary, main


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("argv, dry", [
    ([], False), (["--dryRun"], True), (["--dryRun", "true"], True), (["--dryRun=false"], False),
    (["--dryRun", "no"], False),
])
def test_dry_run_flag_forms(argv, dry):
    args = build_parser().parse_args(["--command", "migrate", *argv])
    assert args.dryRun is dry


def test_repeatable_flags_and_positional_command():
    args = build_parser().parse_args(["migrate", "--synapseConfigFile", "a.yaml", "--synapseConfigFile=b.yaml",
                                      "--upstreamProviderMapping", "oidc:01H8PKNWKKRPCBW4YGH1RWV279",
                                      "--upstreamProviderMapping", "saml:01H8PKNWKKRPCBW4YGH1RWV27A"])
    assert args.command_positional == "migrate"
    assert args.synapseConfigFile == ["a.yaml", "b.yaml"]
    assert len(args.upstreamProviderMapping) == 2


def test_missing_command_and_bad_boolean_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["--command", "migrate", "--dryRun", "maybe"])
    assert "expected true or false" in capsys.readouterr().err


def test_progress_on_a_terminal_shows_rows_rate_and_eta():
    out = Terminal()
    progress = Progress(out)
    progress({"stage": "users", "rows": 500, "total": 1000, "elapsed": 1.0})
    progress({"stage": "users", "rows": 1000, "total": 1000, "elapsed": 2.0, "done": True})
    text = out.getvalue()
    assert "users: 500/1,000 rows (50%), 500 rows/s, ETA 1s" in text
    assert text.endswith("users: 1,000 rows in 2.0s (500 rows/s)\n")


def test_progress_off_a_terminal_prints_one_line_per_stage():
    out = io.StringIO()
    progress = Progress(out)
    progress({"stage": "users", "rows": 500, "total": 1000, "elapsed": 1.0})
    progress({"stage": "users", "rows": 1000, "total": 1000, "elapsed": 2.0, "done": True})
    assert out.getvalue() == "users: 1,000 rows in 2.0s (500 rows/s)\n"


def test_summary_lists_skips_with_reasons_and_fixes():
    text = format_import_summary({
        "server_name": "example.com", "dry_run": False, "mas_schema": {"release": "1.22.0"},
        "duration_seconds": 3.2, "warnings": ["something to know"],
        "counts": {"users": {"migrated": 10, "skipped": 1, "fixed": {},
                             "skipped_reasons": {"appservice user (not migrated)": {"count": 1, "examples": ["@b:x"]}}},
                   "device_sessions": {"migrated": 5, "skipped": 0, "skipped_reasons": {},
                                       "fixed": {"invalid IP address stored as unknown": 2}}},
    })
    assert text.splitlines()[0] == "Import committed: example.com into MAS 1.22.0 in 3.2s"
    assert "      skipped 1: appservice user (not migrated) (e.g. @b:x)" in text
    assert "      2: invalid IP address stored as unknown" in text
    assert text.endswith("WARN something to know")


def test_advisor_for_real_import_flag():
    assert build_parser().parse_args(["advisor", "--forRealImport"]).forRealImport is True
    assert build_parser().parse_args(["advisor"]).forRealImport is False


def test_progress_before_the_stage_total_is_known():
    out = Terminal()
    Progress(out)({"stage": "devices", "rows": 300, "total": None, "elapsed": 1.0})
    assert "devices: 300 rows, 300 rows/s" in out.getvalue()
