"""The collection reads Synapse's settings as Synapse does: compared with real Synapse's own config code.

Each case is handed to the config classes of the installed Synapse releases (the oldest supported
and the newest tested, tests/support/synapse_config_oracle.py) and to synapse_settings; both must
give the same answer for every spelling, and the delegation plan must leave a configuration that
Synapse accepts with MAS enabled.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from _syn2mas.config import synapse_settings
from _syn2mas.config import load_synapse_config
from _syn2mas.errors import ConfigError
from _syn2mas.config.synapse_auth_delegation import DelegationSettings, override_values, plan_delegation
from tests.support import synapse_schema

ORACLE = "tests/support/synapse_config_oracle.py"
MAS = {"matrix_authentication_service": {"enabled": True, "endpoint": "http://mas:8080/", "secret": "s"}}
# The spellings people write: YAML booleans, the words of Synapse's strtobool, numbers, and strings
# that look false but are not (for Python's truthiness).
SPELLINGS = [True, False, "true", "false", "True", "FALSE", "yes", "no", "on", "off", "y", "n", "t", "f", 1, 0,
             "1", "0", "", "only_for_reauth", "maybe", None]


def synapse_reads(version: str, fragments: list) -> list:
    """What Synapse `version` makes of each fragment (added to a minimal valid homeserver.yaml)."""
    proc = subprocess.run([synapse_schema.synapse_python(version), ORACLE], input=json.dumps(fragments),
                          capture_output=True, text=True, timeout=600, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# key in the oracle's output -> (how to place a value, how synapse_settings reads it)
SWITCHES = {
    "enable_registration": (lambda v: {"enable_registration": v},
                            lambda raw: synapse_settings.flag(raw, "enable_registration")),
    "enable_registration_captcha": (lambda v: {"enable_registration_captcha": v},
                                    lambda raw: synapse_settings.flag(raw, "enable_registration_captcha")),
    "allow_guest_access": (lambda v: {"allow_guest_access": v},
                           lambda raw: synapse_settings.flag(raw, "allow_guest_access")),
    "enable_3pid_changes": (lambda v: {"enable_3pid_changes": v},
                            lambda raw: synapse_settings.flag(raw, "enable_3pid_changes", True)),
    "cas_config": (lambda v: {"cas_config": {"server_url": "https://cas.example.test/", "enabled": v}},
                   lambda raw: synapse_settings.section_enabled(raw, "cas_config")),
    "login_via_existing_session": (lambda v: {"login_via_existing_session": {"enabled": v}},
                                   lambda raw: synapse_settings.section_enabled(raw, "login_via_existing_session")),
    "password_login": (lambda v: {"password_config": {"enabled": v}}, synapse_settings.password_login),
}


def ours(read, raw):
    try:
        return read(raw)
    except ConfigError as exc:
        return exc


@pytest.mark.parametrize("version", synapse_schema.VERSIONS)
def test_every_spelling_of_every_switch_reads_as_synapse_reads_it(version):
    cases = [(switch, value) for switch in SWITCHES for value in SPELLINGS]
    fragments = [SWITCHES[switch][0](value) for switch, value in cases]
    readings = synapse_reads(version, fragments)
    assert len(readings) == len(fragments) == len(SWITCHES) * len(SPELLINGS)  # one reading per case
    disagreements = []
    for (switch, value), fragment, theirs in zip(cases, fragments, readings, strict=True):
        mine = ours(SWITCHES[switch][1], fragment)
        if "refused" in theirs:  # Synapse does not start: neither may we call it on or off
            agree = isinstance(mine, ConfigError)
        else:
            agree = mine is theirs[switch]
        if not agree:
            disagreements.append(f"{switch}: {value!r}: Synapse {theirs.get(switch, theirs.get('refused'))}, "
                                 f"ours {mine}")
    assert disagreements == []


OIDC = {"issuer": "https://i.example.test/", "client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize("version", synapse_schema.VERSIONS)
def test_the_oidc_providers_synapse_runs_are_the_ones_read_as_enabled(version, tmp_path):
    # The legacy `oidc_config` is on only when its `enabled` is (Python's truthiness, off when absent);
    # a listed provider is on whatever `enabled` it carries (Synapse has no such key there).
    fragments = [{"oidc_config": {**OIDC, **({} if v is None else {"enabled": v})}} for v in SPELLINGS]
    fragments += [{"oidc_providers": [{**OIDC, "idp_id": "x", "idp_name": "X", **({} if v is None else {"enabled": v})}]}
                  for v in (True, False, "false", None)]
    compared, disagreements = 0, []
    readings = synapse_reads(version, fragments)
    assert len(readings) == len(fragments)  # one reading per fragment
    for index, (fragment, theirs) in enumerate(zip(fragments, readings, strict=True)):
        if "refused" in theirs:
            continue
        path = tmp_path / f"homeserver-{index}.yaml"
        path.write_text(yaml.safe_dump({"server_name": "example.test", **fragment}))
        mine = sorted(p.auth_provider for p in load_synapse_config([str(path)]).oidc_providers() if p.enabled)
        compared += 1
        if mine != theirs["oidc_idps"]:
            disagreements.append(f"{fragment}: Synapse runs {theirs['oidc_idps']}, ours {mine}")
    assert compared == len(fragments)
    assert disagreements == []


def test_enable_registration_false_as_a_string_is_off_everywhere():
    raw = {"server_name": "example.test", "enable_registration": "false", "allow_guest_access": "false"}
    assert synapse_settings.flag(raw, "enable_registration") is False
    # ... while Synapse reads most other switches with Python's truthiness: the string is on.
    assert synapse_settings.flag(raw, "allow_guest_access") is True
    plan = plan_delegation(raw, DelegationSettings(endpoint="http://mas:8080/", secret="s", synapse_version="1.163.2"))
    assert "enable_registration" not in [e.key for e in plan.edits]


# One setting that is on for each entry of MAS_CONFLICTS, spelled the way that catches a reader
# out; the entries whose Synapse code needs libraries not installed here are named (not skipped silently).
CONFLICT_ON = {
    "password_config.enabled": {"password_config": {"enabled": "false"}},
    "enable_registration": {"enable_registration": "yes"},
    "user_consent": {"user_consent": {"version": "1.0", "template_dir": "/tmp"}},
    "oidc_providers": {"oidc_providers": [{"idp_id": "x", "idp_name": "X", "issuer": "https://i.example.test/",
                                           "client_id": "c", "client_secret": "s"}]},
    "oidc_config.enabled": {"oidc_config": {"enabled": 1, "issuer": "https://i.example.test/", "client_id": "c",
                                            "client_secret": "s"}},
    "cas_config.enabled": {"cas_config": {"server_url": "https://cas.example.test/", "enabled": "false"}},
    "jwt_config.enabled": {"jwt_config": {"enabled": True, "secret": "s", "algorithm": "HS256"}},
    "enable_registration_captcha": {"enable_registration_captcha": "no"},
    "login_via_existing_session.enabled": {"login_via_existing_session": {"enabled": "off"}},
    "refresh_token_lifetime": {"refresh_token_lifetime": "1h"},
    "nonrefreshable_access_token_lifetime": {"nonrefreshable_access_token_lifetime": "1h"},
    "session_lifetime": {"session_lifetime": "1h"},
    "enable_3pid_changes": {"enable_3pid_changes": "false"},
}
NOT_LOADABLE_HERE = {"saml2_config.enabled": "pysaml2", "password_providers": "the provider's module",
                     "ldap_config.enabled": "ldap_auth_provider"}
CONFLICT_OFF = [
    {"password_config": {"enabled": False}}, {"enable_registration": "no"}, {"enable_registration_captcha": False},
    {"cas_config": {"server_url": "https://cas.example.test/", "enabled": False}}, {"enable_3pid_changes": 0},
    {"login_via_existing_session": {"enabled": False}}, {"oidc_config": {"issuer": "https://i.example.test/"}},
    {"jwt_config": {"secret": "s", "algorithm": "HS256"}},
]


def test_the_conflict_table_covers_every_entry():
    assert set(CONFLICT_ON) | set(NOT_LOADABLE_HERE) == {c.key for c in synapse_settings.MAS_CONFLICTS}


@pytest.mark.parametrize("version", synapse_schema.VERSIONS)
def test_synapse_refuses_mas_exactly_when_the_table_says_so_and_not_after_the_plan(version):
    settings = DelegationSettings(endpoint="http://mas:8080/", secret="s", synapse_version=version)
    on = [{**fragment, **MAS} for fragment in CONFLICT_ON.values()]
    off = [{**fragment, **MAS} for fragment in CONFLICT_OFF]
    planned = []
    for fragment in on + off:
        applied = dict(fragment)
        applied.update(override_values(fragment, plan_delegation(fragment, settings)))
        planned.append({k: v for k, v in applied.items() if v is not None})
    readings = synapse_reads(version, on + off + planned)
    assert len(readings) == 2 * len(on + off)
    for (key, fragment), theirs in zip(CONFLICT_ON.items(), readings[:len(on)], strict=True):
        assert "OAuth delegation is enabled" in theirs.get("refused", ""), (key, theirs)
        assert [c.key for c in synapse_settings.mas_conflicts(fragment)] == [key]
    for fragment, theirs in zip(off, readings[len(on):len(on + off)], strict=True):
        assert "refused" not in theirs, (fragment, theirs)
        assert synapse_settings.mas_conflicts(fragment) == []
    for fragment, theirs in zip(planned, readings[len(on + off):], strict=True):
        assert "refused" not in theirs, (fragment, theirs)
        assert synapse_settings.mas_conflicts(fragment) == []
