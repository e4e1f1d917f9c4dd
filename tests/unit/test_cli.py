"""The `syn2mas` command's parsing and its progress line, without databases."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import yaml

import _syn2mas
from _syn2mas import cli
from _syn2mas.cli import Progress, build_parser, format_import_summary, main
from _syn2mas.errors import remember_secret

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def run_main(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_missing_command_and_bad_boolean_are_usage_errors():
    code, out, err = run_main()
    assert (code, out) == (2, "")
    assert err.startswith("usage: syn2mas ") and err.endswith("syn2mas: error: --command advisor|migrate|verify is required\n")
    code, out, err = run_main("--command", "migrate", "--dryRun", "maybe")
    assert (code, out) == (2, "")
    assert err.endswith("syn2mas: error: argument --dryRun: expected true or false, got 'maybe'\n")


def test_version_is_the_collections_from_galaxy_yml():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        version = yaml.safe_load(handle)["version"]
    assert _syn2mas.__version__ == version
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "syn2mas"), "--version"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"syn2mas {version}\n", "")


@pytest.mark.parametrize("argv, command, error", [
    ([], None, "--command advisor|migrate|verify is required"),
    (["migrate", "--dryRun", "maybe"], None, "argument --dryRun: expected true or false, got 'maybe'"),
    (["--command", "advisor", "--output=json", "--bogus"], None, "unrecognized arguments: --bogus"),
    (["--command", "advisor"], "advisor", "--synapseConfigFile is required"),
    (["--command", "migrate", "--synapseConfigFile", "hs.yaml"], "migrate", "--masConfigFile is required for migrate"),
])
def test_with_output_json_a_failure_is_json_on_stdout_too(argv, command, error):
    code, out, err = run_main(*argv, "--output", "json")
    result = json.loads(out)
    assert result == {"ok": False, "command": command, "error": error, "exit_code": code}
    # A wrong or incomplete command line, whichever part finds it: exit code 2, as the README says.
    assert code == 2
    assert err.endswith(f"syn2mas: error: {error}\n")  # the human line stays on stderr


def test_a_failure_as_json_never_shows_a_password(tmp_path):
    homeserver = tmp_path / "homeserver.yaml"
    homeserver.write_text(yaml.safe_dump({"server_name": "example.test", "database": {
        "name": "psycopg2", "args": {"host": str(tmp_path), "dbname": "synapse", "password": "hs-s3cret"}}}))
    # libpq quotes an unparsable URI whole in its error
    code, out, err = run_main("migrate", "--synapseConfigFile", str(homeserver),
                              "--masDatabaseUri", "postgresql://mas:m4s-s3cret@[::1/mas", "--output", "json")
    result = json.loads(out)
    assert code == 1 and result["exit_code"] == 1 and result["ok"] is False
    # libpq's reason only, naming which URI: never the URI, whose password may hold anything
    assert result["error"] == ('the given MAS database URI: invalid database URI: end of string reached when '
                               'looking for matching "]" in IPv6 host address')
    for text in (out, err):
        assert "s3cret" not in text


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


def test_progress_off_a_terminal_says_the_rows_so_far_of_a_long_stage():
    out, now = io.StringIO(), [100.0]
    progress = Progress(out, every=10.0, clock=lambda: now[0])
    for second, rows in ((0, 0), (4, 40_000), (11, 110_000), (15, 150_000), (22, 220_000)):
        now[0] = 100.0 + second
        progress({"stage": "access_tokens", "rows": rows, "total": 250_000, "elapsed": float(second)})
    now[0] = 125.0
    progress({"stage": "access_tokens", "rows": 250_000, "total": 250_000, "elapsed": 25.0, "done": True})
    for step in range(3):  # the rebuild's steps: one line once 10 s passed
        now[0] = 125.0 + 6 * step
        progress({"stage": "rebuild", "message": f"index_{step}", "rows": step, "total": 3, "elapsed": 6.0 * step})
    assert out.getvalue().splitlines() == [
        "access_tokens: 110,000 rows in 11.0s so far (44% of ~250,000), 10,000 rows/s",
        "access_tokens: 220,000 rows in 22.0s so far (88% of ~250,000), 10,000 rows/s",
        "access_tokens: 250,000 rows in 25.0s (10,000 rows/s)",
        "rebuilding indexes and constraints: index_2 (3/3)",
    ]


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


def test_advisor_checks_the_compat_layer_and_the_nginx_file(tmp_path):
    homeserver, mas, site = tmp_path / "homeserver.yaml", tmp_path / "mas.yaml", tmp_path / "matrix.conf"
    homeserver.write_text(yaml.safe_dump({"server_name": "example.test", "public_baseurl": "https://matrix.example.test/",
                                          "database": {"name": "psycopg2", "args": {
                                              "host": str(tmp_path / "no-socket"), "dbname": "synapse"}}}))
    mas.write_text(yaml.safe_dump({"matrix": {"homeserver": "example.test"}, "http": {
        "public_base": "https://auth.example.test/",
        "listeners": [{"name": "web", "resources": [{"name": "human"}, {"name": "oauth"}],
                       "binds": [{"address": "[::]:8080"}]}]}}))
    site.write_text("server {\n    server_name matrix.example.test;\n"
                    "    location ~ ^(/_matrix|/_synapse/client) { proxy_pass http://127.0.0.1:8008; }\n}\n")
    code, out, _err = run_main("advisor", "--synapseConfigFile", str(homeserver), "--masConfigFile", str(mas),
                               "--reverseProxyConfig", str(site), "--output", "json")
    result = json.loads(out)
    severities = {f["check"]: f["severity"] for f in result["findings"]}
    assert severities["mas_compat_resource"] == "ERROR" and severities["compat_routes_reach_mas"] == "WARN"
    assert code == 10
    assert result["summary"]["reverse_proxy"]["homeserver_public_baseurl"] == "https://matrix.example.test/"
    assert result["summary"]["reverse_proxy"]["mas_public_base"] == "https://auth.example.test/"


def test_json_output_masks_a_secret_that_json_escapes():
    # A password holding `"` or `\` reads differently once JSON-encoded: masked before encoding.
    remember_secret('pa"ss\\word')
    text = cli._as_json({"warnings": ['cannot log in with pa"ss\\word'], "counts": {"users": 2}})
    assert json.loads(text) == {"warnings": ["cannot log in with ********"], "counts": {"users": 2}}
    assert "ss\\\\word" not in text and "pa\\\"ss" not in text
