"""The three configuration modules run through ansible-playbook: conversions, check mode, diff,
idempotence, comments kept, secrets kept out of the output, and clear errors."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from tests.support.ansible_run import run_tasks
from tests.support.config_files import CLIENT_SECRET, HOMESERVER, MAS, PEPPER, SHARED, assert_no_secrets


def _files(folder):
    folder.mkdir(exist_ok=True)
    hs = folder / "homeserver.yaml"
    hs.write_text(HOMESERVER)
    os.chmod(hs, 0o640)
    mas = folder / "config.yaml"
    mas.write_text(MAS)
    os.chmod(mas, 0o600)
    return hs, mas


@pytest.fixture
def files(tmp_path):
    """homeserver.yaml (0640) and MAS's config.yaml (0600) as the tests' samples."""
    return _files(tmp_path)


# ------------------------------------------------------------------------------ mas_upstream_provider


def upstream_task(hs, mas, **extra):
    return {"matrix.syn2mas.mas_upstream_provider": {"path": str(mas), "synapse_config": [str(hs)], **extra}}


def test_upstream_provider_check_mode_diff_then_apply_then_idempotent(tmp_path, files):
    hs, mas = files
    check = run_tasks(tmp_path, [upstream_task(hs, mas)], check=True, diff=True)
    result = check.result
    assert result["changed"] is True and not result.get("failed")
    assert mas.read_text() == MAS
    assert "synapse_idp_id: oidc-dex" in result["diff"]["after"]
    assert "client_secret: <redacted>" in result["diff"]["after"]
    assert_no_secrets(check)

    applied = run_tasks(tmp_path, [upstream_task(hs, mas, backup=True)], diff=True)
    result = applied.result
    assert result["changed"] is True
    assert_no_secrets(applied)
    by_idp = {p["synapse_idp_id"]: p for p in result["providers"]}
    assert set(by_idp) == {"oidc-dex", "oidc-gitlab"}
    dex_id = by_idp["oidc-dex"]["id"]
    assert by_idp["oidc-dex"]["action"] == "added"
    assert by_idp["oidc-dex"]["redirect_uri"] == f"https://auth.example.com/upstream/callback/{dex_id}"
    assert result["redirect_uris"]["oidc-gitlab"] == by_idp["oidc-gitlab"]["redirect_uri"]
    # Options MAS lacks are warnings in the result, not dropped silently.
    assert any("oidc_providers[0].idp_icon" in w for w in result["warnings"])
    assert any("idp_icon" in w for w in by_idp["oidc-dex"]["warnings"])
    written = mas.read_text()
    assert written.startswith(MAS.split("passwords:", maxsplit=1)[0])  # untouched sections kept verbatim
    assert stat.S_IMODE(os.stat(mas).st_mode) == 0o600
    assert open(result["backup_file"]).read() == MAS
    providers = {p["synapse_idp_id"]: p for p in yaml.safe_load(written)["upstream_oauth2"]["providers"]}
    assert providers["oidc-dex"]["id"] == dex_id
    assert providers["oidc-dex"]["client_secret"] == CLIENT_SECRET
    assert providers["oidc-dex"]["on_backchannel_logout"] == "logout_all"
    assert providers["oidc-dex"]["claims_imports"]["localpart"] == {
        "action": "require", "template": "{{ user.preferred_username }}"}
    assert providers["oidc-gitlab"]["client_secret_file"] == "/etc/matrix-synapse/gitlab.secret"

    again = run_tasks(tmp_path, [upstream_task(hs, mas), upstream_task(hs, mas, synapse_idp_id="gitlab")],
                      check=False, diff=True)
    assert [r["changed"] for r in again.results] == [False, False]
    assert [p["action"] for p in again.results[0]["providers"]] == ["unchanged", "unchanged"]
    assert {p["synapse_idp_id"]: p["id"] for p in again.results[0]["providers"]}["oidc-dex"] == dex_id
    assert mas.read_text() == written


def test_upstream_provider_absent_removes_only_the_one(tmp_path, files):
    hs, mas = files
    run_tasks(tmp_path, [upstream_task(hs, mas)])
    removed = run_tasks(tmp_path, [
        {"matrix.syn2mas.mas_upstream_provider": {"path": str(mas), "synapse_idp_id": "oidc-gitlab",
                                                  "state": "absent"}}])
    assert removed.result["changed"] is True
    assert [(p["synapse_idp_id"], p["action"]) for p in removed.result["providers"]] == [("oidc-gitlab", "removed")]
    providers = yaml.safe_load(mas.read_text())["upstream_oauth2"]["providers"]
    assert [p["synapse_idp_id"] for p in providers] == ["oidc-dex"]


UPSTREAM_ERRORS = ["unknown_provider", "malformed_mas", "missing_issuer", "no_synapse_config"]


@pytest.fixture(scope="module")
def upstream_errors(tmp_path_factory):
    """Every case of test_upstream_provider_errors in one ansible-playbook run, a task each on files of its own:
    case -> (the task's result, the message expected, MAS's config and its text before)."""
    tmp_path = tmp_path_factory.mktemp("upstream-errors")
    cases, tasks = {}, []
    for case in UPSTREAM_ERRORS:
        hs, mas = _files(tmp_path / case)
        args = {}
        if case == "unknown_provider":
            args = {"synapse_idp_id": "oidc-google"}
            expected = "no OIDC provider 'oidc-google' (known: oidc-dex, oidc-gitlab)"
        elif case == "malformed_mas":
            mas.write_text("http:\n  public_base: [unclosed\nmatrix: {}\n")
            expected = f"{mas}: invalid YAML at line"
        elif case == "missing_issuer":
            hs.write_text(HOMESERVER.replace('    issuer: "https://gitlab.example.com/"\n', ""))
            expected = f"{hs}: oidc_providers[1]: issuer is missing"
        else:
            expected = "synapse_config is required"
        task = ({"matrix.syn2mas.mas_upstream_provider": {"path": str(mas)}} if case == "no_synapse_config"
                else upstream_task(hs, mas, **args))
        cases[case] = (expected, mas, mas.read_text())
        tasks.append(task)
    run = run_tasks(tmp_path, tasks)
    return {case: (result, *cases[case]) for case, result in zip(UPSTREAM_ERRORS, run.results)}


@pytest.mark.parametrize("case", UPSTREAM_ERRORS)
def test_upstream_provider_errors(upstream_errors, case):
    result, expected, mas, before = upstream_errors[case]
    assert result["failed"] is True
    assert expected in result["msg"]
    assert mas.read_text() == before


# ------------------------------------------------------------------------------ synapse_auth_delegation


def delegation_task(hs, **extra):
    args = {"path": str(hs), "endpoint": "http://127.0.0.1:9/", "secret_path": "/etc/matrix-synapse/mas.secret",
            "synapse_version": "1.163.2"}
    args.update(extra)
    return {"matrix.syn2mas.synapse_auth_delegation": {k: v for k, v in args.items() if v is not None}}


def test_delegation_check_diff_apply_idempotent(tmp_path, files):
    hs, _mas = files
    check = run_tasks(tmp_path, [delegation_task(hs)], check=True, diff=True)
    result = check.result
    assert result["changed"] is True and hs.read_text() == HOMESERVER
    assert {c["key"]: c["action"] for c in result["changes"]} == {
        "password_config.enabled": "disabled", "enable_registration": "disabled", "oidc_providers": "removed",
        "session_lifetime": "removed", "matrix_authentication_service": "set"}
    assert "pepper: <redacted>" in result["diff"]["before"]
    assert_no_secrets(check)

    applied = run_tasks(tmp_path, [delegation_task(hs, backup=True)])
    result = applied.result
    assert result["changed"] is True and result["edit_mode"] == "in_place"
    assert_no_secrets(applied)
    text = hs.read_text()
    assert stat.S_IMODE(os.stat(hs).st_mode) == 0o640
    assert open(result["backup_file"]).read() == HOMESERVER
    assert "# Synapse configuration (hand edited, keep the comments!)\n" in text
    assert "password_config:\n  enabled: false     # local passwords\n" in text
    assert "# Single sign-on\n# oidc_providers: removed by matrix.syn2mas" in text
    assert "# Media store\nmedia_store_path: /var/lib/matrix-synapse/media\n" in text
    data = yaml.safe_load(text)
    assert data["matrix_authentication_service"] == {
        "enabled": True, "endpoint": "http://127.0.0.1:9/", "secret_path": "/etc/matrix-synapse/mas.secret"}
    assert data["password_config"]["pepper"] == PEPPER

    again = run_tasks(tmp_path, [delegation_task(hs)], diff=True)
    assert again.result["changed"] is False and again.result["changes"] == []
    assert hs.read_text() == text


def test_delegation_override_mode_leaves_homeserver_yaml_alone(tmp_path, files):
    hs, _mas = files
    override = tmp_path / "conf.d" / "zz-mas.yaml"
    override.parent.mkdir()
    run = run_tasks(tmp_path, [delegation_task(hs, override_path=str(override), secret=SHARED,
                                               secret_path=None)], diff=True)
    result = run.result
    assert result["changed"] is True and result["edit_mode"] == "override" and result["path"] == str(override)
    assert_no_secrets(run)
    assert hs.read_text() == HOMESERVER
    # New: homeserver.yaml's owner and group, readable by that group only (Synapse's user reads it).
    assert stat.S_IMODE(os.stat(override).st_mode) == 0o640
    assert (os.stat(override).st_uid, os.stat(override).st_gid) == (os.stat(hs).st_uid, os.stat(hs).st_gid)
    data = yaml.safe_load(override.read_text())
    assert data["password_config"] == {"enabled": False, "pepper": PEPPER}  # whole section, pepper kept
    assert data["oidc_providers"] is None and data["session_lifetime"] is None
    assert data["matrix_authentication_service"]["secret"] == SHARED
    again = run_tasks(tmp_path, [delegation_task(hs, override_path=str(override), secret=SHARED, secret_path=None)])
    assert again.result["changed"] is False


def test_delegation_errors(tmp_path, files):
    hs, _mas = files
    hs.write_text("server_name: example.com\npassword_config: [not, a, mapping]\n")
    run = run_tasks(tmp_path, [delegation_task(hs),
                               delegation_task(tmp_path / "missing.yaml"),
                               delegation_task(hs, synapse_version="1.120.0")])
    assert run.results[0]["failed"] and f"{hs}: password_config: expected a mapping" in run.results[0]["msg"]
    assert run.results[1]["failed"] and "missing.yaml: file not found" in run.results[1]["msg"]
    assert run.results[2]["failed"] and "experimental_features.msc3861 needs issuer" in run.results[2]["msg"]


# ------------------------------------------------------------------------------ mas_synapse_link


def link_task(hs, mas, **extra):
    return {"matrix.syn2mas.mas_synapse_link": {"path": str(mas), "synapse_config": [str(hs)], **extra}}


def test_link_check_apply_idempotent(tmp_path, files):
    hs, mas = files
    check = run_tasks(tmp_path, [link_task(hs, mas, endpoint="http://127.0.0.1:8008/")], check=True, diff=True)
    assert check.result["changed"] is True and mas.read_text() == MAS
    assert "secret: <redacted>" in check.result["diff"]["after"]
    assert_no_secrets(check)

    applied = run_tasks(tmp_path, [link_task(hs, mas, endpoint="http://127.0.0.1:8008/")])
    result = applied.result
    assert_no_secrets(applied)
    assert result["matrix"] == {"homeserver": "example.com", "endpoint": "http://127.0.0.1:8008/",
                                "kind": "synapse", "secret_file": None, "has_secret": True}
    assert result["password_schemes"] == [
        {"version": 1, "algorithm": "bcrypt", "unicode_normalization": True, "has_secret": True},
        {"version": 2, "algorithm": "argon2id", "unicode_normalization": False, "has_secret": False}]
    text = mas.read_text()
    assert text.startswith("# MAS configuration, generated then edited\nhttp:\n  public_base: https://auth.example.com/\n"
                           "  listeners:\n  - name: web\n")
    assert "# Keep this secret\nmatrix:\n" in text
    schemes = yaml.safe_load(text)["passwords"]["schemes"]
    assert schemes[0] == {"version": 1, "algorithm": "bcrypt", "unicode_normalization": True, "secret": PEPPER}

    again = run_tasks(tmp_path, [link_task(hs, mas, endpoint="http://127.0.0.1:8008/")])
    assert again.result["changed"] is False and mas.read_text() == text


def test_link_errors(tmp_path, files):
    hs, mas = files
    hs.write_text("public_baseurl: https://m/\n")
    pepper_file = tmp_path / "pepper"
    pepper_file.write_text("x\n")
    run = run_tasks(tmp_path, [link_task(hs, mas), link_task(tmp_path / "nope.yaml", mas)])
    assert run.results[0]["failed"] and "server_name is missing" in run.results[0]["msg"]
    assert run.results[1]["failed"] and "nope.yaml: file not found" in run.results[1]["msg"]
    assert mas.read_text() == MAS
