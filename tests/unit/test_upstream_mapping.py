"""Synapse OIDC providers -> MAS upstream providers (config-reference section 4)."""

from __future__ import annotations

import copy

import pytest
import yaml

from _syn2mas.config import load_synapse_config, parse_provider_id
from _syn2mas.errors import ConfigError
from _syn2mas.config.mas_upstream_provider import (
    apply_providers, convert_provider, redirect_uri, remove_providers, select_providers,
)
from _syn2mas.config.yaml_edit import YamlDocument


def synapse(tmp_path, config: dict):
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({"server_name": "example.com", **config}))
    return load_synapse_config(str(path))


def convert_one(tmp_path, provider: dict, key="oidc_providers"):
    cfg = synapse(tmp_path, {key: [provider] if key == "oidc_providers" else provider})
    (only,) = cfg.oidc_providers()
    return convert_provider(only)


DEX = {
    "idp_id": "dex", "idp_name": "My Dex", "idp_brand": "dex", "issuer": "https://dex.example.com/",
    "client_id": "synapse", "client_secret": "dex-client-secret", "scopes": ["openid", "profile", "email"],
    "user_mapping_provider": {"config": {
        "localpart_template": "{{ user.preferred_username }}",
        "display_name_template": "{{ user.name }}",
        "email_template": "{{ user.email }}",
    }},
}


def test_documented_dex_example(tmp_path):
    converted = convert_one(tmp_path, DEX)
    assert converted.warnings == []
    assert converted.entry == {
        "synapse_idp_id": "oidc-dex",
        "human_name": "My Dex",
        "brand_name": "dex",
        "issuer": "https://dex.example.com/",
        "discovery_mode": "oidc",
        "client_id": "synapse",
        "client_secret": "dex-client-secret",
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "openid profile email",
        "pkce_method": "auto",
        "fetch_userinfo": False,
        "on_backchannel_logout": "do_nothing",
        "claims_imports": {
            "localpart": {"action": "require", "template": "{{ user.preferred_username }}"},
            "displayname": {"action": "force", "template": "{{ user.name }}"},
            "email": {"action": "force", "template": "{{ user.email }}"},
        },
    }


def test_synapse_idp_id_rules(tmp_path):
    cfg = synapse(tmp_path, {
        "oidc_providers": [dict(DEX), dict(DEX, idp_id="oidc")],
        "oidc_config": {"enabled": True, "idp_id": "custom", "issuer": "https://l/", "client_id": "c"},
    })
    ids = sorted(convert_provider(p).synapse_idp_id for p in cfg.oidc_providers())
    # A legacy oidc_config with a custom idp_id is prefixed too (Synapse's rule; mas-cli's differs).
    assert ids == ["oidc", "oidc-custom", "oidc-dex"]
    plain_legacy = synapse(tmp_path, {"oidc_config": {"enabled": True, "issuer": "https://l/", "client_id": "c"}})
    assert convert_provider(plain_legacy.oidc_providers()[0]).synapse_idp_id == "oidc"


@pytest.mark.parametrize("discover,skip,mode", [(True, False, "oidc"), (True, True, "insecure"), (False, False, "disabled")])
def test_discovery_mode(tmp_path, discover, skip, mode):
    provider = dict(DEX, discover=discover, skip_verification=skip,
                    authorization_endpoint="https://dex/auth", token_endpoint="https://dex/token",
                    jwks_uri="https://dex/keys", userinfo_endpoint="https://dex/userinfo")
    entry = convert_one(tmp_path, provider).entry
    assert entry["discovery_mode"] == mode
    assert entry["authorization_endpoint"] == "https://dex/auth" and entry["jwks_uri"] == "https://dex/keys"


@pytest.mark.parametrize("scopes,method,fetch", [
    (["openid", "profile"], "auto", False),          # ID token carries the claims
    (["profile", "email"], "auto", True),            # no openid: Synapse uses userinfo (mas-cli inverts this)
    (["openid"], "userinfo_endpoint", True),
])
def test_fetch_userinfo_follows_synapse_semantics(tmp_path, scopes, method, fetch):
    entry = convert_one(tmp_path, dict(DEX, scopes=scopes, user_profile_method=method)).entry
    assert entry["fetch_userinfo"] is fetch


@pytest.mark.parametrize("enabled,action", [(True, "logout_all"), (False, "do_nothing")])
def test_backchannel_logout_is_not_inverted(tmp_path, enabled, action):
    assert convert_one(tmp_path, dict(DEX, backchannel_logout_enabled=enabled)).entry["on_backchannel_logout"] == action


def test_secret_file_and_auth_methods(tmp_path):
    provider = {k: v for k, v in DEX.items() if k != "client_secret"}
    entry = convert_one(tmp_path, dict(provider, client_secret_path="/etc/synapse/dex.secret",
                                       client_auth_method="client_secret_post")).entry
    assert entry["client_secret_file"] == "/etc/synapse/dex.secret" and "client_secret" not in entry
    assert entry["token_endpoint_auth_method"] == "client_secret_post"
    public = convert_one(tmp_path, provider).entry
    assert public["token_endpoint_auth_method"] == "none" and "client_secret" not in public


def test_jwt_key_becomes_private_key_jwt_with_a_warning(tmp_path):
    provider = {k: v for k, v in DEX.items() if k != "client_secret"}
    converted = convert_one(tmp_path, dict(provider, client_secret_jwt_key={
        "key_file": "/k.pem", "jwt_header": {"alg": "ES256"}}))
    assert converted.entry["token_endpoint_auth_method"] == "private_key_jwt"
    assert converted.entry["token_endpoint_auth_signing_alg"] == "ES256"
    assert any("client_secret_jwt_key" in w for w in converted.warnings)


def test_mapping_options(tmp_path):
    ump = {"config": {"subject_claim": "uid", "localpart_template": "{{ user.login }}",
                      "display_name_template": "{{ user.name }}", "confirm_localpart": True}}
    entry = convert_one(tmp_path, dict(DEX, user_mapping_provider=ump)).entry
    assert entry["claims_imports"] == {
        "subject": {"template": "{{ user.uid }}"},
        "localpart": {"action": "suggest", "template": "{{ user.login }}"},
        "displayname": {"action": "suggest", "template": "{{ user.name }}"},
    }
    existing = convert_one(tmp_path, dict(DEX, allow_existing_users=True)).entry
    assert existing["claims_imports"]["localpart"] == {
        "action": "require", "template": "{{ user.preferred_username }}", "on_conflict": "add"}


def test_parameters_pkce_and_algorithms(tmp_path):
    entry = convert_one(tmp_path, dict(
        DEX, pkce_method="always", id_token_signing_alg_values_supported=["ES256"],
        additional_authorization_parameters={"acr_values": "2fa", "response_mode": "form_post"},
        forward_login_hint=True)).entry
    assert entry["pkce_method"] == "always"
    assert entry["id_token_signed_response_alg"] == "ES256"
    assert entry["additional_authorization_parameters"] == {"acr_values": "2fa"}
    assert entry["response_mode"] == "form_post"
    assert entry["forward_login_hint"] is True


def test_options_mas_lacks_are_warnings_not_silence(tmp_path):
    converted = convert_one(tmp_path, dict(
        DEX, idp_icon="mxc://example.com/icon", attribute_requirements=[{"attribute": "g", "value": "x"}],
        enable_registration=False, backchannel_logout_ignore_sub=True, passthrough_authorization_parameters=["p"],
        id_token_signing_alg_values_supported=["RS256", "ES256"], scopes=["openid", "bad scope"],
        redirect_uri="https://old/cb", some_future_option=1,
        user_mapping_provider={"config": {"picture_template": "{{ user.picture }}",
                                          "extra_attributes": {"x": "{{ user.x }}"}}},
    ))
    text = "\n".join(converted.warnings)
    for key in ("idp_icon", "attribute_requirements", "enable_registration", "backchannel_logout_ignore_sub",
                "passthrough_authorization_parameters", "id_token_signing_alg_values_supported", "scopes",
                "redirect_uri", "some_future_option", "picture_template", "extra_attributes"):
        assert f".{key}:" in text, key
    assert all(w.startswith(str(tmp_path / "homeserver.yaml") + ": oidc_providers[0].") for w in converted.warnings)
    assert converted.entry["scope"] == "openid"
    assert "id_token_signed_response_alg" not in converted.entry


def test_custom_mapping_module_is_reported(tmp_path):
    converted = convert_one(tmp_path, dict(DEX, user_mapping_provider={"module": "my.Mapper", "config": {}}))
    assert "claims_imports" not in converted.entry
    assert any("my.Mapper" in w for w in converted.warnings)


@pytest.mark.parametrize("change,message", [
    ({"issuer": None}, "oidc_providers[0]: issuer is missing"),
    ({"client_id": None}, "oidc_providers[0]: client_id is missing"),
    ({"client_secret_path": "/x"}, "both client_secret and client_secret_path"),
    ({"client_secret": None, "client_auth_method": "client_secret_post"}, "no client_secret"),
    ({"discover": False}, "authorization_endpoint is missing"),
    ({"idp_id": None}, "oidc_providers[0]: idp_id is missing"),
])
def test_bad_provider_config_is_a_clear_error(tmp_path, change, message):
    provider = {k: v for k, v in dict(DEX, **change).items() if v is not None}
    with pytest.raises(ConfigError) as err:
        convert_one(tmp_path, provider)
    assert message in str(err.value) and "homeserver.yaml" in str(err.value)


def test_select_providers(tmp_path):
    cfg = synapse(tmp_path, {"oidc_providers": [DEX, dict(DEX, idp_id="google")]})
    assert [p.auth_provider for p in select_providers(cfg, None)] == ["oidc-dex", "oidc-google"]
    assert [p.auth_provider for p in select_providers(cfg, "oidc-google")] == ["oidc-google"]
    assert [p.auth_provider for p in select_providers(cfg, "google")] == ["oidc-google"]
    with pytest.raises(ConfigError, match=r"no OIDC provider 'oidc-gitlab' \(known: oidc-dex, oidc-google\)"):
        select_providers(cfg, "oidc-gitlab")
    twice = synapse(tmp_path, {"oidc_providers": [DEX, DEX]})
    with pytest.raises(ConfigError, match="used twice"):
        select_providers(twice, None)


MAS = """\
# MAS configuration
http:
  public_base: https://auth.example.com/
upstream_oauth2:
  providers:
  # Dex, configured by hand earlier
  - id: 01JAYS74TCG3BTWKADN5Q4518C
    synapse_idp_id: oidc-dex
    human_name: Old name
    client_id: synapse
    token_endpoint_auth_method: client_secret_basic
    client_secret: old-secret
    response_mode: query   # managed: removed since Synapse has none
    # operator's own setting, kept
    brand_name: dex
    claims_imports:
      localpart:
        action: require
        template: "{{ user.preferred_username }}"
        on_backchannel_logout_note: kept
"""


def test_apply_keeps_existing_ids_and_gives_new_providers_a_stable_ulid(tmp_path):
    cfg = synapse(tmp_path, {"oidc_providers": [DEX, dict(DEX, idp_id="google", idp_name="Google")]})
    converted = [convert_provider(p) for p in cfg.oidc_providers()]
    doc = YamlDocument(MAS, "config.yaml")
    changes = apply_providers(doc.data, converted, "config.yaml", "example.com")
    assert [(c.synapse_idp_id, c.action) for c in changes] == [("oidc-dex", "updated"), ("oidc-google", "added")]
    assert changes[0].id == "01JAYS74TCG3BTWKADN5Q4518C"
    new_id = changes[1].id
    parse_provider_id(new_id)
    out = doc.render()
    assert "# Dex, configured by hand earlier\n" in out and "# operator's own setting, kept\n" in out
    reloaded = YamlDocument(out).data["upstream_oauth2"]["providers"]
    assert reloaded[0]["human_name"] == "My Dex" and reloaded[0]["brand_name"] == "dex"
    assert "response_mode" not in reloaded[0]
    assert reloaded[0]["claims_imports"]["localpart"]["on_backchannel_logout_note"] == "kept"
    # A second run changes nothing and keeps the new id.
    again = YamlDocument(out)
    changes2 = apply_providers(again.data, converted, "config.yaml", "example.com")
    assert [c.action for c in changes2] == ["unchanged", "unchanged"]
    assert changes2[1].id == new_id
    assert again.render() == out


def test_remove_and_duplicates(tmp_path):
    doc = YamlDocument(MAS, "config.yaml")
    assert [c.action for c in remove_providers(doc.data, ["oidc-dex", "oidc-none"], "config.yaml")] == [
        "removed", "absent"]
    assert doc.data["upstream_oauth2"]["providers"] == []
    dup = YamlDocument("upstream_oauth2:\n  providers:\n  - {id: 01JAYS74TCG3BTWKADN5Q4518C, synapse_idp_id: oidc}\n"
                       "  - {id: 01JAYS74TCG3BTWKADN5Q4518D, synapse_idp_id: oidc}\n")
    with pytest.raises(ConfigError, match=r"providers\[0\] and \[1\] both have synapse_idp_id 'oidc'"):
        remove_providers(dup.data, ["oidc"], "config.yaml")


def test_a_new_provider_s_id_is_the_same_on_every_run_and_differs_for_another_provider(tmp_path):
    """A run repeated after a rollback (MAS's config restored, the synced row kept) gives the provider
    the id of the row MAS's database already holds."""
    cfg = synapse(tmp_path, {"oidc_providers": [dict(DEX, idp_id="google", idp_name="Google")]})
    converted = [convert_provider(p) for p in cfg.oidc_providers()]
    ids = set()
    for _attempt in range(2):
        doc = YamlDocument("upstream_oauth2:\n  providers: []\n", "config.yaml")
        ids.add(apply_providers(doc.data, converted, "config.yaml", "example.com")[0].id)
    assert len(ids) == 1
    provider_id = ids.pop()
    assert len(provider_id) == 26
    parse_provider_id(provider_id)
    others = set()
    for server_name, change in (("other.example", {}), ("example.com", {"issuer": "https://other-idp.example/"}),
                                ("example.com", {"client_id": "another-client"})):
        other = copy.deepcopy(converted[0])
        other.entry.update(change)
        doc = YamlDocument("upstream_oauth2:\n  providers: []\n", "config.yaml")
        others.add(apply_providers(doc.data, [other], "config.yaml", server_name)[0].id)
    assert provider_id not in others and len(others) == 3


def test_redirect_uri():
    assert redirect_uri("https://auth.example.com/", "01X") == "https://auth.example.com/upstream/callback/01X"
    assert redirect_uri(None, "01X") is None
