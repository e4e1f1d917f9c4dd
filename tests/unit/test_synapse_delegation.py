"""homeserver.yaml delegating to MAS: the plan, in place and as an override file."""

from __future__ import annotations

import os

import pytest
import yaml

from _syn2mas.config import load_synapse_config
from _syn2mas.errors import ConfigError
from _syn2mas.config.synapse_auth_delegation import (
    DelegationSettings, apply_as_override, apply_in_place, detect_synapse_version, new_override_document,
    override_values, parse_version, plan_delegation,
)
from _syn2mas.config.yaml_edit import YamlDocument

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EVERYTHING = {
    "server_name": "example.com",
    "password_config": {"enabled": True, "pepper": "pep"},
    "enable_registration": True,
    "user_consent": {"version": "1.0"},
    "oidc_providers": [{"idp_id": "dex", "idp_name": "Dex", "issuer": "https://d/", "client_id": "c"}],
    "oidc_config": {"enabled": True, "issuer": "https://l/", "client_id": "c"},
    "saml2_config": {"sp_config": {"metadata": {}}},
    "cas_config": {"enabled": True, "server_url": "https://cas/"},
    "jwt_config": {"enabled": True, "secret": "jwt", "algorithm": "HS256"},
    "password_providers": [{"module": "ldap_auth_provider.LdapAuthProvider"}],
    "enable_registration_captcha": True,
    "login_via_existing_session": {"enabled": True},
    "refresh_token_lifetime": "24h",
    "nonrefreshable_access_token_lifetime": "1h",
    "session_lifetime": "30d",
    "enable_3pid_changes": True,
    "experimental_features": {"msc3861": {"enabled": False}, "msc3266_enabled": True},
}


def settings(version="1.163.2", **kw):
    return DelegationSettings(endpoint="http://localhost:8080/", secret="shared", synapse_version=version, **kw)


def test_every_conflict_is_turned_off_or_removed_and_reported():
    plan = plan_delegation(EVERYTHING, settings())
    actions = {e.key: e.report()["action"] for e in plan.edits}
    assert actions == {
        "password_config.enabled": "disabled",
        "enable_registration": "disabled",
        "user_consent": "removed",
        "oidc_providers": "removed",
        "oidc_config.enabled": "disabled",
        "saml2_config.enabled": "disabled",
        "cas_config.enabled": "disabled",
        "jwt_config.enabled": "disabled",
        "password_providers": "removed",
        "enable_registration_captcha": "disabled",
        "login_via_existing_session.enabled": "disabled",
        "refresh_token_lifetime": "removed",
        "nonrefreshable_access_token_lifetime": "removed",
        "session_lifetime": "removed",
        "enable_3pid_changes": "disabled",
        "experimental_features.msc3861": "removed",
        "matrix_authentication_service": "set",
    }
    assert all(e.reason for e in plan.edits)
    assert plan.config_form == "matrix_authentication_service"


def test_a_clean_config_needs_only_the_mas_block_and_then_nothing():
    raw = {"server_name": "example.com", "password_config": {"pepper": "p"}, "enable_registration": False}
    plan = plan_delegation(raw, settings())
    assert [e.key for e in plan.edits] == ["matrix_authentication_service"]
    raw["matrix_authentication_service"] = {"enabled": True, "endpoint": "http://localhost:8080/", "secret": "shared"}
    assert plan_delegation(raw, settings()).edits == []
    # Switching to a secret file replaces the inline secret.
    plan = plan_delegation(raw, DelegationSettings(endpoint="http://localhost:8080/", secret_path="/s",
                                                   synapse_version="1.163.2"))
    assert plan.edits[0].value == {"enabled": True, "endpoint": "http://localhost:8080/", "secret_path": "/s"}


def test_old_synapse_gets_msc3861():
    raw = {"server_name": "example.com", "matrix_authentication_service": {"enabled": True}}
    plan = plan_delegation(raw, settings("1.135.0", issuer="https://auth.example.com/", client_secret="cs"))
    assert plan.config_form == "experimental_features.msc3861"
    edits = {e.key: e for e in plan.edits}
    assert edits["matrix_authentication_service"].action == "remove"
    assert edits["experimental_features.msc3861"].value == {
        "enabled": True, "issuer": "https://auth.example.com/", "client_id": "0000000000000000000SYNAPSE",
        "client_auth_method": "client_secret_basic", "client_secret": "cs", "admin_token": "shared"}
    # Older releases default these to on: they are written explicitly.
    assert edits["password_config.enabled"].value is False and edits["enable_3pid_changes"].value is False
    with pytest.raises(ConfigError, match="needs issuer"):
        plan_delegation(raw, settings("1.120.0"))


@pytest.mark.parametrize("kw,message", [
    ({"endpoint": "localhost:8080"}, "not an http"),
    ({"secret": None}, "exactly one of secret and secret_path"),
    ({"secret_path": "/x"}, "exactly one of secret and secret_path"),
])
def test_bad_settings(kw, message):
    base = dict(endpoint="http://localhost:8080/", secret="s", synapse_version="1.163.2")
    base.update(kw)
    with pytest.raises(ConfigError, match=message):
        plan_delegation({}, DelegationSettings(**base))


HOMESERVER = """\
# Homeserver, hand edited
server_name: "example.com"

# Passwords
password_config:
  enabled: true   # for now
  pepper: "pep"

# SSO
oidc_providers:
  - idp_id: dex
    idp_name: Dex
    issuer: https://dex/
    client_id: c

# Lifetimes
session_lifetime: 30d

# Media
media_store_path: /data/media
"""


def test_in_place_rewrite_keeps_comments_and_is_idempotent(tmp_path):
    path = tmp_path / "homeserver.yaml"
    path.write_text(HOMESERVER)
    cfg = load_synapse_config(str(path))
    doc = YamlDocument.load(str(path))
    apply_in_place(doc, plan_delegation(cfg.raw, settings(), cfg.where), cfg)
    out = doc.render()
    assert out.startswith("# Homeserver, hand edited\nserver_name: \"example.com\"\n\n# Passwords\n"
                          "password_config:\n  enabled: false  # for now\n  pepper: \"pep\"\n\n# SSO\n# oidc_providers: removed")
    assert "\n# Lifetimes\n# session_lifetime: removed" in out and "\n# Media\nmedia_store_path: /data/media\n" in out
    assert out.endswith("matrix_authentication_service:\n  enabled: true\n  endpoint: http://localhost:8080/\n"
                        "  secret: shared\n")
    path.write_text(out)
    cfg2 = load_synapse_config(str(path))
    assert plan_delegation(cfg2.raw, settings(), cfg2.where).edits == []


def test_in_place_refuses_keys_from_another_file(tmp_path):
    main = tmp_path / "homeserver.yaml"
    main.write_text("server_name: example.com\n")
    extra = tmp_path / "conf.d.yaml"
    extra.write_text("enable_registration: true\n")
    cfg = load_synapse_config([str(main), str(extra)])
    doc = YamlDocument.load(str(main))
    with pytest.raises(ConfigError) as err:
        apply_in_place(doc, plan_delegation(cfg.raw, settings(), cfg.where), cfg)
    assert f"{extra}: enable_registration: must change" in str(err.value) and "override_path" in str(err.value)


def test_override_copies_whole_sections_and_nulls_removed_ones(tmp_path):
    plan = plan_delegation(EVERYTHING, settings())
    values = override_values(EVERYTHING, plan)
    assert values["password_config"] == {"enabled": False, "pepper": "pep"}
    assert values["cas_config"] == {"enabled": False, "server_url": "https://cas/"}
    assert values["experimental_features"] == {"msc3266_enabled": True}
    assert values["user_consent"] is None and values["oidc_providers"] is None and values["session_lifetime"] is None
    doc = new_override_document(str(tmp_path / "zz-mas.yaml"))
    apply_as_override(doc, values)
    text = doc.render()
    assert text.startswith("# Managed by matrix.syn2mas.synapse_auth_delegation")
    # Merged the way Synapse merges (top-level keys), the result has no conflicts left.
    merged = dict(EVERYTHING)
    merged.update(yaml.safe_load(text))
    assert [e.key for e in plan_delegation(merged, settings()).edits] == []
    again = YamlDocument(text, str(tmp_path / "zz-mas.yaml"))
    apply_as_override(again, values)
    assert again.render() == text


def test_versions(tmp_path):
    assert parse_version("1.136.0") == (1, 136, 0) and parse_version("v1.99") == (1, 99, 0)
    with pytest.raises(ConfigError):
        parse_version("latest")
    python = os.path.join(ROOT, ".venv-synapse", "1.136.0", "bin", "python")
    if not os.path.exists(python):
        pytest.skip("run scripts/setup.sh to install the Synapse releases")
    assert detect_synapse_version(python) == "1.136.0"
    with pytest.raises(ConfigError, match="cannot detect Synapse's version"):
        detect_synapse_version(os.path.join(ROOT, ".venv", "bin", "python"))
