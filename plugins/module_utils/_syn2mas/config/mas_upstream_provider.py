# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Synapse's OIDC providers as MAS `upstream_oauth2.providers` entries.

`convert_provider` maps one Synapse provider (an `oidc_providers` entry or the legacy
`oidc_config`) to the MAS entry, with a warning for every Synapse option MAS has no
equivalent for. It avoids three mistakes of `mas-cli config generate`: `user_profile_method:
auto` means "userinfo only when `openid` is NOT requested", `backchannel_logout_enabled: true`
must log the sessions out (not do nothing), and `client_secret_path` and
`allow_existing_users` have MAS equivalents (`client_secret_file`, `on_conflict: add`).

`apply_providers` puts converted entries into a MAS config tree: an entry with the same
`synapse_idp_id` keeps its `id` (the provider's primary key in MAS's database) and the keys
this module does not manage; a new entry gets a stable id (`stable_provider_id`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field

from . import OidcProvider, SynapseConfig, format_ulid, parse_provider_id
from ..errors import ConfigError
from .yaml_edit import CommentedMap, CommentedSeq, delete_key, ensure_mapping, same, to_commented

DEFAULT_MAPPING_MODULES = (
    "synapse.handlers.oidc.JinjaOidcMappingProvider",
    "synapse.handlers.oidc_handler.JinjaOidcMappingProvider",
)

# Keys of a MAS provider entry this collection writes; others an operator added are kept.
MANAGED_KEYS = (
    "synapse_idp_id", "human_name", "brand_name", "issuer", "discovery_mode",
    "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
    "client_id", "client_secret", "client_secret_file", "token_endpoint_auth_method",
    "token_endpoint_auth_signing_alg", "scope", "pkce_method", "fetch_userinfo",
    "id_token_signed_response_alg", "response_mode", "additional_authorization_parameters",
    "forward_login_hint", "on_backchannel_logout", "claims_imports",
)
CLAIMS_KEYS = ("subject", "localpart", "displayname", "email")
CLAIM_FIELDS = ("action", "template", "on_conflict")

# Synapse provider options handled below (everything else is reported as not converted).
_KNOWN = {
    "idp_id", "idp_name", "idp_icon", "idp_brand", "enabled", "discover", "issuer", "client_id",
    "client_secret", "client_secret_path", "client_secret_jwt_key", "client_auth_method",
    "pkce_method", "id_token_signing_alg_values_supported", "scopes", "authorization_endpoint",
    "token_endpoint", "userinfo_endpoint", "jwks_uri", "skip_verification",
    "backchannel_logout_enabled", "backchannel_logout_ignore_sub", "user_profile_method",
    "redirect_uri", "allow_existing_users", "user_mapping_provider", "attribute_requirements",
    "enable_registration", "additional_authorization_parameters",
    "passthrough_authorization_parameters", "forward_login_hint",
}
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 scope-token


@dataclass
class ConvertedProvider:
    synapse_idp_id: str
    idp_id: str
    entry: dict  # MAS provider entry without `id`
    warnings: list = field(default_factory=list)
    source: str = ""
    synapse_enabled: bool = True


def stable_provider_id(server_name: str, provider: "ConvertedProvider") -> str:
    """The id a provider new to MAS's config gets: a ULID-shaped value derived from the homeserver and
    what names the provider at its IdP (synapse_idp_id, issuer, client_id), never random.

    MAS's `config sync` never prunes, and a rolled-back run leaves the rows it synced: a run after the
    rollback then gives the provider the id of the row already there instead of adding a second one. The
    config modules run on the controller, without MAS's database, so the id is computed, not looked up;
    check mode shows the id the run writes. Another issuer or client is another provider, with another id."""
    entry = provider.entry
    key = "\0".join(("matrix.syn2mas upstream provider", server_name, provider.synapse_idp_id,
                     str(entry.get("issuer") or ""), str(entry.get("client_id") or "")))
    return format_ulid(uuid.UUID(bytes=hashlib.sha256(key.encode("utf-8")).digest()[:16]))


# Longer than a screen on purpose: a field-by-field translation of one Synapse OIDC provider into
# MAS's format, in the order of MAS's documentation, so it can be checked against it line by line.
def convert_provider(provider: OidcProvider) -> ConvertedProvider:
    """One Synapse OIDC provider as a MAS upstream provider entry (without `id`)."""
    cfg = provider.config
    where = provider.source
    warnings: list = []

    def warn(key: str, text: str):
        warnings.append(f"{where}.{key}: {text}")

    def string(key: str, required: bool = False):
        value = cfg.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{where}: {key} is missing (Synapse requires it)")
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise ConfigError(f"{where}.{key}: expected a non-empty string, found {value!r}")
        return value

    entry: dict = {"synapse_idp_id": provider.auth_provider}
    if cfg.get("idp_name") is not None:
        entry["human_name"] = str(cfg["idp_name"])
    if cfg.get("idp_brand") is not None:
        entry["brand_name"] = str(cfg["idp_brand"])
    if cfg.get("idp_icon") is not None:
        warn("idp_icon", "not converted: MAS has no per-provider icon (brand_name picks a built-in one)")

    discover = cfg.get("discover", True)
    skip_verification = cfg.get("skip_verification", False)
    if not isinstance(discover, bool):
        raise ConfigError(f"{where}.discover: expected true or false, found {discover!r}")
    issuer = string("issuer", required=True)
    entry["issuer"] = issuer
    entry["discovery_mode"] = ("insecure" if skip_verification else "oidc") if discover else "disabled"
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        value = string(key)
        if value is not None:
            entry[key] = value
    if not discover:
        for key in ("authorization_endpoint", "token_endpoint"):
            if key not in entry:
                raise ConfigError(f"{where}: {key} is missing; it is required when `discover: false`")

    entry["client_id"] = string("client_id", required=True)
    secret = string("client_secret")
    secret_path = string("client_secret_path")
    jwt_key = cfg.get("client_secret_jwt_key")
    if secret is not None and secret_path is not None:
        raise ConfigError(f"{where}: both client_secret and client_secret_path are set; Synapse refuses that, keep one")
    if secret is not None:
        entry["client_secret"] = secret
    elif secret_path is not None:
        entry["client_secret_file"] = secret_path
    method = cfg.get("client_auth_method")
    has_secret = secret is not None or secret_path is not None
    if jwt_key is not None and not has_secret:
        alg = (jwt_key.get("jwt_header") or {}).get("alg") if isinstance(jwt_key, dict) else None
        method = "private_key_jwt"
        if alg:
            entry["token_endpoint_auth_signing_alg"] = str(alg)
        warn("client_secret_jwt_key",
             "not converted: MAS signs private_key_jwt assertions with its own `secrets.keys`; the "
             "provider is set to private_key_jwt, register MAS's public key (its JWKS) at the IdP")
    elif method is None:
        method = "client_secret_basic" if has_secret else "none"
    if method not in ("client_secret_basic", "client_secret_post", "none", "private_key_jwt"):
        raise ConfigError(f"{where}.client_auth_method: unknown value {method!r} (expected client_secret_basic, "
                          "client_secret_post or none)")
    if method.startswith("client_secret") and not has_secret:
        raise ConfigError(f"{where}: client_auth_method is {method} but no client_secret or client_secret_path is set")
    if method in ("none", "private_key_jwt") and has_secret:
        warn("client_secret", f"ignored by MAS with token_endpoint_auth_method {method}; removed")
        entry.pop("client_secret", None)
        entry.pop("client_secret_file", None)
    entry["token_endpoint_auth_method"] = method

    scopes = cfg.get("scopes", ["openid"])
    if not isinstance(scopes, list):
        raise ConfigError(f"{where}.scopes: expected a list of scopes, found {type(scopes).__name__}")
    kept = []
    for scope in scopes:
        if isinstance(scope, str) and _SCOPE_TOKEN.match(scope):
            if scope not in kept:
                kept.append(scope)
        else:
            warn("scopes", f"invalid scope {scope!r} dropped")
    entry["scope"] = " ".join(kept) if kept else "openid"

    pkce = cfg.get("pkce_method", "auto")
    if pkce not in ("auto", "always", "never"):
        warn("pkce_method", f"unknown value {pkce!r}; MAS uses auto")
        pkce = "auto"
    entry["pkce_method"] = pkce

    # Synapse (handlers/oidc.py `_uses_userinfo`): the userinfo endpoint is used when asked to,
    # or when the `openid` scope is not requested (then there is no ID token to read claims from).
    profile_method = cfg.get("user_profile_method", "auto")
    if profile_method not in ("auto", "userinfo_endpoint"):
        raise ConfigError(f"{where}.user_profile_method: unknown value {profile_method!r} (auto or userinfo_endpoint)")
    entry["fetch_userinfo"] = profile_method == "userinfo_endpoint" or "openid" not in kept

    algs = cfg.get("id_token_signing_alg_values_supported")
    if algs:
        if isinstance(algs, list) and len(algs) == 1 and isinstance(algs[0], str):
            entry["id_token_signed_response_alg"] = algs[0]
        else:
            warn("id_token_signing_alg_values_supported",
                 f"MAS takes the one algorithm the IdP signs ID tokens with (id_token_signed_response_alg, "
                 f"default RS256), not a list; {algs!r} not converted, set it by hand")

    params = cfg.get("additional_authorization_parameters")
    if params:
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.additional_authorization_parameters: expected a mapping")
        params = {str(k): str(v) for k, v in params.items()}
        response_mode = params.pop("response_mode", None)
        if response_mode is not None:
            if response_mode in ("query", "form_post"):
                entry["response_mode"] = response_mode
            else:
                warn("additional_authorization_parameters.response_mode",
                     f"{response_mode!r} not supported by MAS (query or form_post); dropped")
        for key, value in params.items():
            if "{{" in value or "{%" in value:
                warn(f"additional_authorization_parameters.{key}",
                     "MAS reads these values as templates: the literal `{{`/`{%` in it will be interpreted")
        if params:
            entry["additional_authorization_parameters"] = params
    passthrough = cfg.get("passthrough_authorization_parameters")
    if passthrough:
        warn("passthrough_authorization_parameters",
             f"not converted ({passthrough!r}); in MAS write additional_authorization_parameters templates "
             "such as `name: \"{{ params.name }}\"` by hand")
    if cfg.get("forward_login_hint"):
        entry["forward_login_hint"] = True

    # Synapse's back-channel logout ends the Matrix sessions started through that IdP session.
    entry["on_backchannel_logout"] = "logout_all" if cfg.get("backchannel_logout_enabled") else "do_nothing"
    if cfg.get("backchannel_logout_ignore_sub"):
        warn("backchannel_logout_ignore_sub", "not supported by MAS; dropped")
    if cfg.get("attribute_requirements"):
        warn("attribute_requirements", "not supported by MAS upstream providers; enforce it with a MAS policy")
    if cfg.get("enable_registration") is False:
        warn("enable_registration", "`false` (no new accounts through this IdP) is not supported per provider "
             "by MAS; use a MAS policy or registration settings")
    if cfg.get("redirect_uri") is not None:
        warn("redirect_uri", "ignored: MAS uses its own callback URL (see redirect_uri in the result)")

    claims = _claims_imports(cfg, where, warn)
    if cfg.get("allow_existing_users"):
        localpart = claims.get("localpart")
        if localpart and localpart.get("action") in ("force", "require"):
            localpart["on_conflict"] = "add"
        else:
            warn("allow_existing_users",
                 "not converted: MAS links to existing users (localpart on_conflict: add) only when the "
                 "localpart is imported with action force or require (no confirm_localpart)")
    if claims:
        entry["claims_imports"] = claims

    for key in cfg:
        if key not in _KNOWN:
            warn(str(key), "unknown Synapse option, not converted")

    return ConvertedProvider(
        synapse_idp_id=provider.auth_provider, idp_id=provider.idp_id, entry=entry, warnings=warnings,
        source=where, synapse_enabled=provider.enabled,
    )


def _claims_imports(cfg: dict, where: str, warn) -> dict:
    ump = cfg.get("user_mapping_provider") or {}
    if not isinstance(ump, dict):
        raise ConfigError(f"{where}.user_mapping_provider: expected a mapping")
    module = ump.get("module")
    if module is not None and module not in DEFAULT_MAPPING_MODULES:
        warn("user_mapping_provider.module",
             f"custom mapping module {module!r} cannot be converted; MAS imports claims with templates "
             "(claims_imports), write them by hand")
        return {}
    config = ump.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{where}.user_mapping_provider.config: expected a mapping")
    confirm = bool(config.get("confirm_localpart", False))
    claims: dict = {}
    subject = config.get("subject_template")
    if not subject and config.get("subject_claim"):
        subject = "{{ user.%s }}" % config["subject_claim"]
    if subject:
        claims["subject"] = {"template": str(subject)}
    if config.get("localpart_template"):
        claims["localpart"] = {"action": "suggest" if confirm else "require",
                               "template": str(config["localpart_template"])}
    if config.get("display_name_template"):
        claims["displayname"] = {"action": "suggest" if confirm else "force",
                                 "template": str(config["display_name_template"])}
    if config.get("email_template"):
        claims["email"] = {"action": "suggest" if confirm else "force",
                           "template": str(config["email_template"])}
    if config.get("picture_template") or config.get("picture_claim"):
        warn("user_mapping_provider.config.picture_template", "MAS does not import avatars; not converted")
    if config.get("extra_attributes"):
        warn("user_mapping_provider.config.extra_attributes", "MAS has no equivalent; not converted")
    for key in config:
        if key not in ("subject_template", "subject_claim", "localpart_template", "display_name_template",
                       "email_template", "confirm_localpart", "picture_template", "picture_claim",
                       "extra_attributes"):
            warn(f"user_mapping_provider.config.{key}", "unknown option, not converted")
    return claims


# --------------------------------------------------------------------------------------------
# Selecting Synapse providers


def select_providers(synapse: SynapseConfig, wanted: str | None) -> list:
    """All of Synapse's OIDC providers, or the one whose synapse_idp_id (or idp_id) is `wanted`."""
    providers = synapse.oidc_providers()
    seen: dict = {}
    for provider in providers:
        if provider.auth_provider in seen:
            raise ConfigError(f"{provider.source}: idp_id {provider.idp_id!r} is used twice (also at "
                              f"{seen[provider.auth_provider]}); Synapse refuses that")
        seen[provider.auth_provider] = provider.source
    if wanted is None:
        return providers
    for provider in providers:
        if provider.auth_provider == wanted:
            return [provider]
    for provider in providers:
        if provider.idp_id == wanted:
            return [provider]
    known = ", ".join(p.auth_provider for p in providers) or "none"
    raise ConfigError(f"{', '.join(synapse.files)}: no OIDC provider {wanted!r} (known: {known})")


# --------------------------------------------------------------------------------------------
# Applying entries to MAS's config tree


@dataclass
class ProviderChange:
    synapse_idp_id: str
    id: str
    action: str  # added, updated, unchanged, removed, absent
    entry: dict | None = None


def _providers_list(data, where: str, create: bool):
    section = data.get("upstream_oauth2")
    if section is None:
        if not create:
            return None
        section = ensure_mapping(data, "upstream_oauth2", f"{where}: upstream_oauth2")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: upstream_oauth2: expected a mapping, found {type(section).__name__}")
    providers = section.get("providers")
    if providers is None:
        if not create:
            return None
        providers = CommentedSeq()
        section["providers"] = providers
    if not isinstance(providers, list):
        raise ConfigError(f"{where}: upstream_oauth2.providers: expected a list, found {type(providers).__name__}")
    for index, item in enumerate(providers):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: upstream_oauth2.providers[{index}]: expected a mapping")
    return providers


def _find(providers, synapse_idp_id: str, where: str):
    found = None
    for index, item in enumerate(providers):
        if item.get("synapse_idp_id") is not None and str(item.get("synapse_idp_id")) == synapse_idp_id:
            if found is not None:
                raise ConfigError(f"{where}: upstream_oauth2.providers[{found}] and [{index}] both have "
                                  f"synapse_idp_id {synapse_idp_id!r}; keep one")
            found = index
    return found


def _merge_entry(existing, new: dict) -> bool:
    changed = False
    for key in MANAGED_KEYS:
        if key not in new:
            if key in existing:
                delete_key(existing, key)
                changed = True
            continue
        value = new[key]
        if key == "claims_imports" and isinstance(existing.get(key), dict):
            changed |= _merge_claims(existing[key], value)
        elif key not in existing or not same(existing[key], value):
            existing[key] = to_commented(value)
            changed = True
    return changed


def _merge_claims(existing, new: dict) -> bool:
    changed = False
    for claim in CLAIMS_KEYS:
        if claim not in new:
            if claim in existing:
                delete_key(existing, claim)
                changed = True
            continue
        if not isinstance(existing.get(claim), dict):
            existing[claim] = to_commented(new[claim])
            changed = True
            continue
        for name in CLAIM_FIELDS:
            if name in new[claim]:
                if name not in existing[claim] or not same(existing[claim][name], new[claim][name]):
                    existing[claim][name] = new[claim][name]
                    changed = True
            elif name in existing[claim]:
                delete_key(existing[claim], name)
                changed = True
    return changed


def apply_providers(data, converted: list, where: str, server_name: str) -> list:
    """Adds or updates each converted provider in MAS's config tree (a new one with the stable id of
    `server_name`'s provider); returns ProviderChanges."""
    changes = []
    providers = _providers_list(data, where, create=bool(converted))
    for item in converted:
        index = _find(providers, item.synapse_idp_id, where)
        if index is None:
            entry = CommentedMap()
            entry["id"] = stable_provider_id(server_name, item)
            for key, value in item.entry.items():
                entry[key] = to_commented(value)
            providers.append(entry)
            changes.append(ProviderChange(item.synapse_idp_id, entry["id"], "added", entry))
            continue
        existing = providers[index]
        if "id" not in existing or existing.get("id") in (None, ""):
            existing.insert(0, "id", stable_provider_id(server_name, item))
            changed = True
        else:
            try:
                parse_provider_id(str(existing["id"]))
            except ValueError as exc:
                raise ConfigError(f"{where}: upstream_oauth2.providers[{index}].id: {exc}") from None
            changed = False
        changed |= _merge_entry(existing, item.entry)
        changes.append(ProviderChange(item.synapse_idp_id, str(existing["id"]),
                                      "updated" if changed else "unchanged", existing))
    return changes


def remove_providers(data, synapse_idp_ids: list, where: str) -> list:
    """Removes the MAS providers with these synapse_idp_ids; returns ProviderChanges."""
    changes = []
    providers = _providers_list(data, where, create=False)
    for synapse_idp_id in synapse_idp_ids:
        index = _find(providers, synapse_idp_id, where) if providers is not None else None
        if index is None:
            changes.append(ProviderChange(synapse_idp_id, "", "absent"))
            continue
        provider_id = str(providers[index].get("id", ""))
        _delete_item(providers, index)
        changes.append(ProviderChange(synapse_idp_id, provider_id, "removed"))
    return changes


def _delete_item(seq, index: int):
    """Deletes seq[index], keeping the comment lines that followed it."""
    from .yaml_edit import _append_trailing_comment, _take_trailing_comment

    token = _take_trailing_comment(seq, index) if isinstance(seq, CommentedSeq) else None
    del seq[index]
    if token is not None and index > 0:
        _append_trailing_comment(seq, index - 1, token)


def redirect_uri(public_base: str | None, provider_id: str) -> str | None:
    """MAS's callback URL for a provider: what must be registered at the IdP."""
    if not public_base:
        return None
    return public_base.rstrip("/") + "/upstream/callback/" + provider_id
