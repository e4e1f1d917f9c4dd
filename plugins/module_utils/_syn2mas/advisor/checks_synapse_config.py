# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of Synapse's configuration: one function each, reading Synapse's settings as Synapse does.

Whether a setting is on comes from synapse_settings (one reading for the whole collection); the
settings Synapse refuses next to MAS come from its MAS_CONFLICTS table, which the delegation plan
also uses to turn them off.
"""

from __future__ import annotations

import re

from ..config import synapse_settings as s
from ..errors import ConfigError
from .registry import (
    ERROR, INFO, MAS_CONFIG, SYNAPSE_AUTH_DELEGATION, SYNAPSE_CONFIG, WARN, check, finding, plural,
)

# Module names of Synapse password providers that MAS cannot run (LDAP, shared secret, REST...).
_AUTH_MODULE_RE = re.compile(r"ldap|auth_?provider|authenticator|rest_auth|shared_secret|password", re.IGNORECASE)
_REFUSES = "(Synapse refuses to start with MAS while it is {})"


def _delegation_remedies(check_id: str) -> str | None:
    return SYNAPSE_AUTH_DELEGATION if check_id in s.checks_remedied_by_delegation() else None


def conflict_check(check_id: str, looks_at: str):
    """A check of a setting in MAS_CONFLICTS: remedied by the delegation edit that turns it off."""
    return check(check_id, SYNAPSE_CONFIG, looks_at, remedied_by=_delegation_remedies(check_id))


@check("synapse_database_config", SYNAPSE_CONFIG, "Synapse's database section names a PostgreSQL database")
def synapse_database_config(f):
    if f.options.synapse_database_uri:
        return None
    try:
        f.synapse.database_conninfo()
    except ConfigError as exc:
        return finding(ERROR, str(exc), f.synapse_where("database"),
                       "The migration reads Synapse's PostgreSQL database: port a SQLite homeserver with "
                       "synapse_port_db first, fix the database section, or pass a PostgreSQL URI "
                       "(--synapseDatabaseUri / synapse_database_uri)")
    return None


@conflict_check("registration_enabled", "enable_registration")
def registration_enabled(f):
    if s.flag(f.settings, "enable_registration"):
        return finding(WARN, "open registration is enabled (enable_registration: true)",
                       f.synapse_where("enable_registration"),
                       "At the switch to MAS, remove enable_registration from homeserver.yaml "
                       + _REFUSES.format("true") + " and open registration in MAS instead "
                       "(account.password_registration_enabled, or an upstream provider)")
    return None


@conflict_check("registration_captcha", "enable_registration_captcha (and MAS captcha)")
def registration_captcha(f):
    if not s.flag(f.settings, "enable_registration_captcha"):
        return None
    mas_captcha = None
    if f.mas is not None:
        captcha = f.mas.raw.get("captcha")
        mas_captcha = captcha.get("service") if isinstance(captcha, dict) else None
    remedy = "At the switch to MAS, remove enable_registration_captcha from homeserver.yaml " + _REFUSES.format("true")
    if not mas_captcha:
        remedy += ("; and configure MAS's captcha section (service: recaptcha_v2 with site_key = recaptcha_public_key "
                   "and secret_key = recaptcha_private_key) so registrations stay protected")
    message = "registration CAPTCHA is enabled in Synapse"
    message += " and MAS has no captcha.service" if f.mas is not None and not mas_captcha else ""
    return finding(WARN, message, f.synapse_where("enable_registration_captcha"), remedy)


@conflict_check("user_consent", "user_consent")
def user_consent(f):
    if f.settings.get("user_consent") is None:
        return None
    return finding(WARN, "user_consent is configured (Synapse's terms acceptance)", f.synapse_where("user_consent"),
                   "At the switch to MAS, remove the user_consent section " + _REFUSES.format("present")
                   + "; MAS shows terms through branding.tos_uri")


@check("mas_tos_uri_missing", MAS_CONFIG, "branding.tos_uri", needs=(MAS_CONFIG, SYNAPSE_CONFIG))
def mas_tos_uri_missing(f):
    branding = f.mas.raw.get("branding")
    if f.settings.get("user_consent") is None or (isinstance(branding, dict) and branding.get("tos_uri")):
        return None
    return finding(WARN, "Synapse asks users to accept terms (user_consent) but MAS has no branding.tos_uri",
                   f.mas_where("branding.tos_uri"),
                   "Set branding.tos_uri in MAS's config to the terms' URL so new users still see them")


@check("cas_enabled", SYNAPSE_CONFIG, "cas_config")
def cas_enabled(f):
    if not s.section_enabled(f.settings, "cas_config"):
        return None
    return finding(WARN, "CAS login is enabled; MAS has no CAS support", f.synapse_where("cas_config"),
                   "Bridge the CAS server through an OpenID Connect adapter (e.g. Dex), add it to MAS's "
                   "upstream_oauth2.providers with synapse_idp_id: cas so existing CAS links carry over, then "
                   "remove cas_config at the switch (Synapse refuses SSO together with MAS)")


@check("saml2_enabled", SYNAPSE_CONFIG, "saml2_config")
def saml2_enabled(f):
    if not s.section_enabled(f.settings, "saml2_config"):
        return None
    return finding(WARN, "SAML2 login is enabled; MAS has no SAML support", f.synapse_where("saml2_config"),
                   "Bridge the SAML IdP through an OpenID Connect adapter (e.g. Dex), add it to MAS's "
                   "upstream_oauth2.providers with synapse_idp_id: saml so existing SAML links carry over, then "
                   "remove saml2_config at the switch")


@check("jwt_enabled", SYNAPSE_CONFIG, "jwt_config")
def jwt_enabled(f):
    if not s.section_enabled(f.settings, "jwt_config"):
        return None
    return finding(WARN, "JWT login is enabled; MAS has no JWT login", f.synapse_where("jwt_config.enabled"),
                   "Move the clients that log in with JWTs to an OpenID Connect provider configured in MAS, "
                   "then remove jwt_config at the switch")


@check("password_localdb_disabled", SYNAPSE_CONFIG, "password_config.localdb_enabled")
def password_localdb_disabled(f):
    if not s.password_login(f.settings) or s.flag(f.settings, "password_config.localdb_enabled", True):
        return None
    return finding(WARN, "password_config.localdb_enabled is false: passwords are checked by a password provider, "
                   "not by Synapse's own hashes, and MAS has no password providers",
                   f.synapse_where("password_config.localdb_enabled"),
                   "Users of that provider (LDAP, ...) lose password login after the switch: connect the "
                   "directory to MAS as an upstream OpenID Connect provider (e.g. through Dex) first")


@check("password_providers", SYNAPSE_CONFIG, "password_providers, ldap_config, auth modules")
def password_providers(f):
    raw = f.settings
    providers = []
    entries = raw.get("password_providers")
    if isinstance(entries, list):
        providers += [str((e or {}).get("module", "?")) if isinstance(e, dict) else str(e) for e in entries]
    if s.section_enabled(raw, "ldap_config"):
        providers.append("ldap_config")
    modules = raw.get("modules")
    if isinstance(modules, list):
        providers += [str(m.get("module")) for m in modules
                      if isinstance(m, dict) and _AUTH_MODULE_RE.search(str(m.get("module", "")))]
    if not providers:
        return None
    key = "password_providers" if isinstance(entries, list) and entries else (
        "ldap_config" if "ldap_config" in providers else "modules")
    return finding(WARN, f"{plural(len(providers), 'password/auth provider')} configured ({', '.join(providers)}): "
                   "MAS runs no Synapse auth modules", f.synapse_where(key),
                   "Their users lose that way of logging in after the switch: connect the directory to MAS as an "
                   "upstream OpenID Connect provider (e.g. LDAP through Dex) before migrating, then remove the "
                   "providers from homeserver.yaml (Synapse refuses password providers together with MAS)")


@conflict_check("threepid_changes_enabled", "enable_3pid_changes")
def threepid_changes_enabled(f):
    if not s.flag(f.settings, "enable_3pid_changes"):
        return None
    return finding(ERROR, "enable_3pid_changes is explicitly true", f.synapse_where("enable_3pid_changes"),
                   "Remove it (with MAS, email addresses are managed by MAS). ERROR, not WARN as the old TypeScript "
                   "advisor had it: Synapse refuses to start with MAS while it is true, which would lock every user "
                   "out after the switch")


@conflict_check("login_via_existing_session", "login_via_existing_session.enabled")
def login_via_existing_session(f):
    if not s.section_enabled(f.settings, "login_via_existing_session"):
        return None
    return finding(ERROR, "login_via_existing_session.enabled is true",
                   f.synapse_where("login_via_existing_session.enabled"),
                   "Set it to false or remove the section (MAS's QR code login replaces it). ERROR, not WARN as the "
                   "old TypeScript advisor had it: Synapse refuses to start with MAS while it is enabled")


@check("guest_access_enabled", SYNAPSE_CONFIG, "allow_guest_access")
def guest_access_enabled(f):
    if not s.flag(f.settings, "allow_guest_access"):
        return None
    return finding(ERROR, "guest access is enabled (allow_guest_access: true)", f.synapse_where("allow_guest_access"),
                   "Set allow_guest_access: false: MAS has no guest accounts (matrix-authentication-service#1445), "
                   "so guests could not use the homeserver after the switch")


@conflict_check("token_lifetimes_set", ", ".join(s.TOKEN_LIFETIMES))
def token_lifetimes_set(f):
    lifetimes = [key for key in s.TOKEN_LIFETIMES if f.settings.get(key) is not None]
    if not lifetimes:
        return None
    return finding(WARN, f"token lifetimes are set: {', '.join(lifetimes)}", f.synapse_where(lifetimes[0]),
                   "Remove them at the switch (Synapse refuses to start with MAS while they are set); MAS decides "
                   "session lifetimes. Migrated tokens keep their expiry")


@check("msc3861_present", SYNAPSE_CONFIG, "experimental_features.msc3861")
def msc3861_present(f):
    msc3861 = s.section(f.settings, "experimental_features").get("msc3861")
    if not msc3861:  # a non-empty block, as Synapse tests it
        return None
    active = isinstance(msc3861, dict) and bool(msc3861.get("enabled"))
    message = "experimental_features.msc3861 is still present"
    if active:
        message += (" and enabled: this homeserver already delegates auth to MAS the old way, so its users already "
                    "live in MAS")
    return finding(ERROR, message, f.synapse_where("experimental_features.msc3861"),
                   "Delete experimental_features.msc3861: Synapse 1.157 and newer refuse to start while it is there. "
                   "Use the matrix_authentication_service section (enabled: true, endpoint, secret = the old "
                   "admin_token) instead" + ("; do not import again into a MAS that is already in use" if active
                                             else ""))


@check("pepper_empty", SYNAPSE_CONFIG, "password_config.pepper")
def pepper_empty(f):
    password_config = s.section(f.settings, "password_config")
    if "pepper" not in password_config or password_config.get("pepper") not in ("", None):
        return None
    return finding(INFO, "password_config.pepper is set but empty: that is the same as no pepper",
                   f.synapse_where("password_config.pepper"),
                   "Nothing to do; leave MAS's version-1 scheme without secret. (mas-cli syn2mas check reports a "
                   "mismatch here; there is none)")


@check("synapse_auth_delegated", SYNAPSE_CONFIG, "matrix_authentication_service.enabled")
def synapse_auth_delegated(f):
    if not s.delegates_to_mas(f.settings):
        return None
    return finding(INFO, "Synapse's config already delegates authentication to MAS (matrix_authentication_service)",
                   f.synapse_where("matrix_authentication_service.enabled"),
                   "Fine for the config of the switch; make sure MAS's database was not in use yet")


@conflict_check(s.CONFLICTS_CHECK, "settings Synapse refuses together with MAS")
def synapse_mas_conflicts(f):
    if not s.delegates_to_mas(f.settings):
        return None
    conflicts = s.mas_conflicts(f.settings)
    if not conflicts:
        return None
    return finding(ERROR, "Synapse refuses to start with MAS enabled while these are set: "
                   + ", ".join(c.key for c in conflicts), f.synapse_where("matrix_authentication_service"),
                   "Remove or disable each of them in the homeserver.yaml used with MAS")
