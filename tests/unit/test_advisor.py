"""The advisor's output and exit codes, and its reading of flags, without databases."""

from __future__ import annotations

import pytest

from _syn2mas import advisor
from _syn2mas.config import synapse_settings
from _syn2mas.advisor import registry
from _syn2mas.advisor import AdvisorOptions, exit_code, format_human, run_advisor


def finding(severity, check="registration_enabled", where="homeserver.yaml: enable_registration"):
    return {"severity": severity, "check": check, "message": f"a {severity} thing", "where": where,
            "remedy": "fix it"}


def result(*severities, not_run=()):
    findings = [finding(s) for s in severities]
    return {"findings": findings, "summary": {
        "errors": severities.count("ERROR"), "warnings": severities.count("WARN"), "info": severities.count("INFO"),
        "not_run": [{"check": c, "reason": r} for c, r in not_run]}}


@pytest.mark.parametrize("severities, code", [
    ((), 0), (("INFO",), 0), (("WARN", "INFO"), 11), (("ERROR",), 10), (("ERROR", "WARN", "INFO"), 10),
])
def test_exit_codes_follow_mas_cli(severities, code):
    assert exit_code(result(*severities)) == code


def test_human_output_one_line_per_finding_info_only_when_verbose():
    res = result("ERROR", "WARN", "INFO", not_run=[("mas_schema", "no MAS config given"),
                                                   ("mas_not_empty", "no MAS config given")])
    text = format_human(res)
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[0] == "ERROR registration_enabled: a ERROR thing [homeserver.yaml: enable_registration] -> fix it"
    assert lines[1].startswith("WARN registration_enabled: a WARN thing")
    assert len(lines) == 3
    assert lines[2] == ("Summary: 1 error, 1 warning, 1 info (shown with --verbose); 2 checks not run "
                        "(no MAS config given); the migration is blocked until the errors are fixed")
    verbose = format_human(res, verbose=True).splitlines()
    assert len(verbose) == 4 and verbose[2].startswith("INFO registration_enabled: a INFO thing")


def test_human_output_of_a_clean_result():
    assert format_human(result()) == "Summary: 0 errors, 0 warnings, 0 info; nothing blocks the migration\n"


def test_a_missing_config_is_a_finding_naming_the_file_not_an_exception(tmp_path):
    missing = str(tmp_path / "homeserver.yaml")
    res = run_advisor(AdvisorOptions(synapse_config=[missing]))
    assert [f["check"] for f in res["findings"]] == ["synapse_config_invalid"]
    assert missing in res["findings"][0]["message"] and res["findings"][0]["where"] == missing
    not_run = {i["check"] for i in res["summary"]["not_run"]}
    assert {"registration_enabled", "synapse_running", "mas_schema"} <= not_run
    assert exit_code(res) == 10


def test_invalid_yaml_and_a_sqlite_homeserver_are_findings(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: [unclosed\n")
    res = run_advisor(AdvisorOptions(synapse_config=[str(bad)]))
    assert res["findings"][0]["check"] == "synapse_config_invalid"
    assert "invalid YAML at line" in res["findings"][0]["message"]

    sqlite = tmp_path / "homeserver.yaml"
    sqlite.write_text("server_name: example.test\ndatabase:\n  name: sqlite3\n  args: {database: /data/hs.db}\n")
    res = run_advisor(AdvisorOptions(synapse_config=[str(sqlite)]))
    checks = {f["check"]: f for f in res["findings"]}
    assert set(checks) == {"synapse_database_config"}
    assert "synapse_port_db" in checks["synapse_database_config"]["remedy"]
    assert checks["synapse_database_config"]["where"] == f"{sqlite}: database"


@pytest.mark.parametrize("value, expected", [
    (True, True), ("true", True), ("yes", True), (1, True), (False, False), ("false", False), (0, False), ("no", False),
])
def test_enable_registration_is_read_with_synapses_strtobool(value, expected):
    assert synapse_settings.flag({"enable_registration": value}, "enable_registration") is expected
    assert synapse_settings.flag({}, "enable_registration") is False


@pytest.mark.parametrize("value, expected", [
    (True, True), ("true", True), (1, True), (False, False), (None, False), (0, False), ("", False),
    ("false", True), ("no", True),  # Python's truthiness, as Synapse reads allow_guest_access
])
def test_other_switches_are_read_with_pythons_truthiness_as_synapse_does(value, expected):
    assert synapse_settings.flag({"allow_guest_access": value}, "allow_guest_access") is expected


def test_every_check_has_a_group_and_a_description():
    groups = {advisor.SYNAPSE_CONFIG, advisor.SYNAPSE_DB, advisor.MAS_CONFIG, advisor.MAS_DB}
    for check, (group, what) in advisor.CHECKS.items():
        assert group in groups and what, check
        assert check == check.lower() and " " not in check


def test_a_check_declared_twice_is_refused_when_the_library_loads():
    with pytest.raises(ValueError, match="declared twice"):
        registry.check("registration_enabled", advisor.SYNAPSE_CONFIG, "enable_registration")(lambda facts: None)


def test_the_remedied_checks_are_those_of_the_conflict_table_and_the_mas_link():
    remedied = {c.id: c.remedied_by for c in advisor.REGISTRY.values() if c.remedied_by}
    delegation = {c.check for c in synapse_settings.MAS_CONFLICTS if c.check} | {"synapse_mas_conflicts"}
    assert {c for c, by in remedied.items() if by == registry.SYNAPSE_AUTH_DELEGATION} == delegation
    assert remedied["mas_password_secret_file_newline"] == registry.MAS_SYNAPSE_LINK
    # SSO links of Synapse's own OIDC providers: the run adds those providers to MAS (and syncs them).
    assert remedied["sso_provider_unmapped"] == remedied["oidc_provider_not_in_mas"] == registry.MAS_UPSTREAM_PROVIDER
    # The findings whose users stay affected after the edit are not remedied by it.
    assert not {"cas_enabled", "saml2_enabled", "jwt_enabled", "password_providers", "guest_access_enabled"} & set(remedied)
