# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration advisor: every blocker and every needed action, before anything is touched.

`run_advisor` reads Synapse's and MAS's configs and databases and returns findings, each with a
severity (ERROR blocks the migration or locks users out, WARN needs an action, INFO is for the
record), a stable check id, a message with the numbers, where it was found and the remedy.
It never writes: Synapse is read in a READ ONLY snapshot (SynapseReader), MAS in READ ONLY
transactions, and neither session takes a lock that blocks the other programs for long.

The checks are those of MAS's `mas-cli syn2mas check` and of the older TypeScript advisor, plus
the ones neither has (see CHECKS). Where the two tools disagree on a severity, the one that
protects users is chosen and the remedy says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import mas_schema, reverse_proxy
from .config import load_mas_config, load_synapse_config, provider_mapping
from .db import connect, database_conninfo, describe, first_line
from .errors import ConfigError, RefusedError, Syn2masError
from .files import LOCAL_FILES
from .mas_writer import ADVISORY_LOCK_KEY, MasWriter
from .synapse_reader import (
    SKIP_APPSERVICE, SKIP_TOO_LONG, SKIP_USER_MISSING, STAGES, SynapseReader, stage_params,
)

try:  # only to recognise database errors; db.connect reports a missing psycopg2 itself
    import psycopg2
    _PG_ERRORS: tuple = (psycopg2.Error,)
except ImportError:  # pragma: no cover
    _PG_ERRORS = ()

APPLICATION_NAME = "syn2mas-advisor"
ERROR, WARN, INFO = "ERROR", "WARN", "INFO"
SEVERITY_ORDER = {ERROR: 0, WARN: 1, INFO: 2}
EXIT_CLEAN, EXIT_ERRORS, EXIT_WARNINGS = 0, 10, 11
# A live homeserver: never wait long behind another session's lock (a running import holds
# ACCESS EXCLUSIVE locks on MAS's tables, a Synapse upgrade on Synapse's).
LOCK_TIMEOUT = "5s"

# The oldest Synapse MAS supports (and this collection imports from) is 1.136.0: its schema
# version is 92, and these are the schema-92 deltas it applies. A database at version 92 that
# lacks one of them was last run by an older Synapse.
OLDEST_SYNAPSE = "1.136.0"
OLDEST_SCHEMA_VERSION = 92
OLDEST_SCHEMA_DELTAS = (
    "92/01_remove_trigger.sql.postgres",
    "92/02_remove_populate_participant_bg_update.sql",
    "92/04_ss_membership_snapshot_idx.sql",
    "92/04_thread_subscriptions.sql",
    "92/04_thread_subscriptions_seq.sql.postgres",
    "92/05_fixup_max_depth_cap.sql",
    "92/05_thread_subscriptions_comments.sql.postgres",
    "92/06_device_federation_inbox_index.sql",
    "92/06_threads_last_sent_stream_ordering_comments.sql.postgres",
    "92/07_add_user_reports.sql",
    "92/07_event_txn_id_device_id_txn_id2.sql",
    "92/08_room_ban_redactions.sql",
    "92/09_thread_subscriptions_update.sql",
    "92/09_thread_subscriptions_update.sql.postgres",
)

# Synapse table each import stage reads, for "where".
STAGE_TABLES = {
    "users": "users", "passwords": "users", "emails": "user_threepids", "other_threepids": "user_threepids",
    "upstream_links": "user_external_ids", "device_sessions": "devices", "deviceless_sessions": "access_tokens",
    "access_tokens": "access_tokens", "refresh_tokens": "refresh_tokens",
}
SKIP_DEVICE_GONE = "device gone"
SKIP_UNMAPPED = "SSO provider not mapped to MAS"
# Module names of Synapse password providers that MAS cannot run (LDAP, shared secret, REST...).
_AUTH_MODULE_RE = re.compile(r"ldap|auth_?provider|authenticator|rest_auth|shared_secret|password", re.IGNORECASE)
_LOCAL_HOSTS = ("localhost", "127.", "[::]", "[::1]", "0.0.0.0")

# Every check: id -> (group, what it looks at). The group decides when a check cannot run.
SYNAPSE_CONFIG, SYNAPSE_DB, MAS_CONFIG, MAS_DB = "synapse_config", "synapse_database", "mas_config", "mas_database"
CHECKS = {
    "synapse_config_invalid": (SYNAPSE_CONFIG, "Synapse's config files can be read and hold server_name"),
    "synapse_database_config": (SYNAPSE_CONFIG, "Synapse's database section names a PostgreSQL database"),
    "registration_enabled": (SYNAPSE_CONFIG, "enable_registration"),
    "registration_captcha": (SYNAPSE_CONFIG, "enable_registration_captcha (and MAS captcha)"),
    "user_consent": (SYNAPSE_CONFIG, "user_consent"),
    "cas_enabled": (SYNAPSE_CONFIG, "cas_config"),
    "saml2_enabled": (SYNAPSE_CONFIG, "saml2_config"),
    "jwt_enabled": (SYNAPSE_CONFIG, "jwt_config"),
    "password_localdb_disabled": (SYNAPSE_CONFIG, "password_config.localdb_enabled"),
    "password_providers": (SYNAPSE_CONFIG, "password_providers, ldap_config, auth modules"),
    "threepid_changes_enabled": (SYNAPSE_CONFIG, "enable_3pid_changes"),
    "login_via_existing_session": (SYNAPSE_CONFIG, "login_via_existing_session.enabled"),
    "guest_access_enabled": (SYNAPSE_CONFIG, "allow_guest_access"),
    "token_lifetimes_set": (SYNAPSE_CONFIG, "refresh_token_lifetime, nonrefreshable_access_token_lifetime, "
                                            "session_lifetime"),
    "msc3861_present": (SYNAPSE_CONFIG, "experimental_features.msc3861"),
    "pepper_empty": (SYNAPSE_CONFIG, "password_config.pepper"),
    "synapse_auth_delegated": (SYNAPSE_CONFIG, "matrix_authentication_service.enabled"),
    "synapse_mas_conflicts": (SYNAPSE_CONFIG, "settings Synapse refuses together with MAS"),
    "synapse_database_unreachable": (SYNAPSE_DB, "connecting to Synapse's database"),
    "synapse_tables_missing": (SYNAPSE_DB, "the tables the import reads"),
    "synapse_running": (SYNAPSE_DB, "other clients of Synapse's database"),
    "synapse_schema_too_old": (SYNAPSE_DB, "schema_version, applied_schema_deltas"),
    "wrong_server_name_users": (SYNAPSE_DB, "users not @localpart:server_name"),
    "orphan_rows": (SYNAPSE_DB, "rows whose user is missing"),
    "tokens_device_gone": (SYNAPSE_DB, "tokens whose device is gone"),
    "appservice_users": (SYNAPSE_DB, "appservice users"),
    "guest_users": (SYNAPSE_DB, "guest users"),
    "non_email_threepids": (SYNAPSE_DB, "third-party ids other than email"),
    "oauth_delegated_links": (SYNAPSE_DB, "user_external_ids of a previous MAS"),
    "sso_links_unknown_provider": (SYNAPSE_DB, "SSO links of CAS, SAML or removed providers"),
    "values_too_long": (SYNAPSE_DB, "values too long for MAS's indexes"),
    "users_without_email": (SYNAPSE_DB, "users without an email address"),
    "skipped_rows": (SYNAPSE_DB, "rows the import leaves behind on purpose"),
    "invalid_ip_addresses": (SYNAPSE_DB, "device IP addresses MAS cannot store"),
    "migration_counts": (SYNAPSE_DB, "what the import will carry over"),
    "mas_config_invalid": (MAS_CONFIG, "MAS's config files can be read"),
    "provider_mapping_invalid": (MAS_CONFIG, "the upstream provider mapping"),
    "mas_homeserver_mismatch": (MAS_CONFIG, "matrix.homeserver"),
    "mas_public_base": (MAS_CONFIG, "http.public_base, http.issuer"),
    "mas_passwords_disabled": (MAS_CONFIG, "passwords.enabled"),
    "mas_password_scheme_missing": (MAS_CONFIG, "passwords.schemes version 1"),
    "mas_password_scheme_not_bcrypt": (MAS_CONFIG, "passwords.schemes version 1 algorithm"),
    "mas_password_unicode_normalization": (MAS_CONFIG, "passwords.schemes version 1 unicode_normalization"),
    "mas_password_pepper_mismatch": (MAS_CONFIG, "passwords.schemes version 1 secret vs Synapse's pepper"),
    "mas_password_secret_file_newline": (MAS_CONFIG, "passwords.schemes version 1 secret_file"),
    "mas_tos_uri_missing": (MAS_CONFIG, "branding.tos_uri"),
    "oidc_provider_not_in_mas": (MAS_CONFIG, "Synapse OIDC providers without a MAS provider"),
    "sso_provider_unmapped": (MAS_CONFIG, "SSO providers in use without synapse_idp_id"),
    "mas_compat_resource": (MAS_CONFIG, "http.listeners resources: compat (legacy login, logout, refresh)"),
    "compat_routes_reach_mas": (MAS_CONFIG, "the reverse proxy sends /login, /logout and /refresh to MAS "
                                            "(when its nginx file or the public URL is given)"),
    "mas_database_config": (MAS_DB, "MAS's database section"),
    "mas_database_unreachable": (MAS_DB, "connecting to MAS's database"),
    "mas_running": (MAS_DB, "other clients of MAS's database"),
    "mas_schema": (MAS_DB, "_sqlx_migrations and the tables the import writes"),
    "mas_not_empty": (MAS_DB, "MAS's tables hold no data"),
    "mas_already_imported": (MAS_DB, "a previous import's marker"),
    "sso_provider_not_in_mas_database": (MAS_DB, "upstream_oauth_providers rows of mapped providers"),
}


@dataclass
class AdvisorOptions:
    synapse_config: list
    mas_config: list = field(default_factory=list)
    synapse_database_uri: str | None = None
    mas_database_uri: str | None = None
    upstream_provider_mapping: list = field(default_factory=list)
    # True right before the real import: a running Synapse (or MAS) is then an ERROR.
    for_real_import: bool = False
    # The reverse proxy, when given: its nginx file, and/or the homeserver's public URL to probe
    # (MAS reached directly, to compare answers with).
    reverse_proxy_config: str = ""
    public_url: str = ""
    mas_url: str = ""


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _examples(items) -> str:
    items = [str(i) for i in items if i is not None]
    return f" (e.g. {', '.join(items)})" if items else ""


def _truthy(value) -> bool:
    """Synapse's reading of a YAML flag (it also accepts the strings `true`, `yes`...)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return value != 0
    return str(value).strip().lower() in ("true", "yes", "on", "1", "y", "t")


class _Advisor:
    def __init__(self, options: AdvisorOptions):
        self.options = options
        self.findings: list = []
        self.not_run: dict = {}  # check -> reason
        self.summary: dict = {}
        self.synapse = None
        self.server_name = None
        self.mas = None
        self.mapping: dict = {}
        self.mapping_known = bool(options.upstream_provider_mapping)
        # What the Synapse database said (None: not read).
        self.in_use = None
        self.password_users = None
        self.counts = None
        self.guests = None
        self.synapse_conflicts: list = []
        self.synapse_password_login = True

    # -- plumbing --------------------------------------------------------------------------

    def add(self, severity: str, check: str, message: str, where: str, remedy: str) -> None:
        if check not in CHECKS:
            raise AssertionError(check)
        self.findings.append({"severity": severity, "check": check, "message": message, "where": where,
                              "remedy": remedy})

    def skip(self, group_or_checks, reason: str) -> None:
        checks = [c for c, (g, _description) in CHECKS.items() if g == group_or_checks] \
            if isinstance(group_or_checks, str) else list(group_or_checks)
        fired = {f["check"] for f in self.findings}
        for check in checks:
            if check not in fired:
                self.not_run.setdefault(check, reason)

    def synapse_where(self, key: str) -> str:
        if self.synapse is not None:
            return self.synapse.where(key)
        return f"{', '.join(self.options.synapse_config)}: {key}"

    def mas_where(self, key: str) -> str:
        return self.mas.where(key) if self.mas is not None else key

    def section(self, key: str) -> dict:
        """A top-level mapping section of Synapse's config; empty (`key:` alone) or absent is {}."""
        value = self.synapse.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(ERROR, "synapse_config_invalid",
                     f"{key} is a {type(value).__name__}, Synapse expects a mapping there",
                     self.synapse_where(key),
                     f"Write {key} as a mapping of settings (or delete it), as Synapse's documentation shows")
            return {}
        return value

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> None:
        self.load_synapse()
        self.load_mas()
        if self.synapse is not None:
            self.check_synapse_config()
        else:
            self.skip(SYNAPSE_CONFIG, "Synapse's config could not be read")
        self.check_synapse_database()
        if self.mas is not None:
            self.check_mas_config()
        else:
            reason = ("MAS's config could not be read" if self.options.mas_config
                      else "no MAS config given (--masConfigFile / mas_config)")
            self.skip(MAS_CONFIG, reason)
        if self.synapse is not None:
            self.check_sso_links()
        self.check_mas_database()
        self.check_reverse_proxy()

    def load_synapse(self) -> None:
        try:
            self.synapse = load_synapse_config(self.options.synapse_config)
        except ConfigError as exc:
            self.add(ERROR, "synapse_config_invalid", str(exc), ", ".join(self.options.synapse_config or []) or
                     "synapse_config", "Pass Synapse's homeserver.yaml (and its split files, in the order Synapse "
                     "reads them) and fix what the message names")
            return
        try:
            self.server_name = self.synapse.server_name
        except ConfigError as exc:
            self.add(ERROR, "synapse_config_invalid", str(exc), self.synapse_where("server_name"),
                     "Pass the config files that hold server_name (the homeserver's domain)")

    def load_mas(self) -> None:
        if self.options.mas_config:
            try:
                self.mas = load_mas_config(self.options.mas_config)
            except ConfigError as exc:
                self.add(ERROR, "mas_config_invalid", str(exc), ", ".join(self.options.mas_config),
                         "Pass MAS's config.yaml (and its other files) and fix what the message names")
        try:
            self.mapping = provider_mapping(self.mas, self.options.upstream_provider_mapping)
            self.mapping_known = self.mapping_known or self.mas is not None
        except ConfigError as exc:
            explicit = "upstream provider mapping" in str(exc)
            self.add(ERROR, "provider_mapping_invalid" if explicit else "mas_config_invalid", str(exc),
                     "upstream_provider_mapping" if explicit else self.mas_where("upstream_oauth2.providers"),
                     "Give each mapping as SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID (a ULID or UUID), and each MAS "
                     "upstream provider an id that is a ULID")
            try:  # keep what can still be read: the MAS config's part, or the explicit part
                self.mapping = (provider_mapping(self.mas, []) if explicit
                                else provider_mapping(None, self.options.upstream_provider_mapping))
            except ConfigError:
                self.mapping = {}

    # -- Synapse's config -------------------------------------------------------------------

    def check_synapse_config(self) -> None:
        raw = self.synapse.raw
        w = self.synapse_where
        mas_section = self.section("matrix_authentication_service")
        delegated = _truthy(mas_section.get("enabled"))
        conflicts = self.synapse_conflicts

        try:
            self.synapse.database_conninfo() if not self.options.synapse_database_uri else None
        except ConfigError as exc:
            self.add(ERROR, "synapse_database_config", str(exc), w("database"),
                     "The migration reads Synapse's PostgreSQL database: port a SQLite homeserver with "
                     "synapse_port_db first, fix the database section, or pass a PostgreSQL URI "
                     "(--synapseDatabaseUri / synapse_database_uri)")

        if _truthy(raw.get("enable_registration")):
            conflicts.append("enable_registration")
            self.add(WARN, "registration_enabled", "open registration is enabled (enable_registration: true)",
                     w("enable_registration"),
                     "At the switch to MAS, remove enable_registration from homeserver.yaml (Synapse refuses to "
                     "start with MAS while it is true) and open registration in MAS instead "
                     "(account.password_registration_enabled, or an upstream provider)")

        if _truthy(raw.get("enable_registration_captcha")):
            conflicts.append("enable_registration_captcha")
            mas_captcha = None
            if self.mas is not None:
                captcha = self.mas.raw.get("captcha")
                mas_captcha = captcha.get("service") if isinstance(captcha, dict) else None
            remedy = ("At the switch to MAS, remove enable_registration_captcha from homeserver.yaml (Synapse refuses "
                      "to start with MAS while it is true)")
            if not mas_captcha:
                remedy += ("; and configure MAS's captcha section (service: recaptcha_v2 with site_key = "
                           "recaptcha_public_key and secret_key = recaptcha_private_key) so registrations stay "
                           "protected")
            message = "registration CAPTCHA is enabled in Synapse"
            message += " and MAS has no captcha.service" if self.mas is not None and not mas_captcha else ""
            self.add(WARN, "registration_captcha", message, w("enable_registration_captcha"), remedy)

        consent = self.section("user_consent")
        if consent:
            conflicts.append("user_consent")
            self.add(WARN, "user_consent", "user_consent is configured (Synapse's terms acceptance)",
                     w("user_consent"),
                     "At the switch to MAS, remove the user_consent section (Synapse refuses to start with MAS "
                     "while it is present); MAS shows terms through branding.tos_uri")
            if self.mas is not None:
                branding = self.mas.raw.get("branding")
                if not (isinstance(branding, dict) and branding.get("tos_uri")):
                    self.add(WARN, "mas_tos_uri_missing",
                             "Synapse asks users to accept terms (user_consent) but MAS has no branding.tos_uri",
                             self.mas_where("branding.tos_uri"),
                             "Set branding.tos_uri in MAS's config to the terms' URL so new users still see them")

        cas = self.section("cas_config")
        if cas and _truthy(cas.get("enabled", True)):
            conflicts.append("cas_config")
            self.add(WARN, "cas_enabled", "CAS login is enabled; MAS has no CAS support", w("cas_config"),
                     "Bridge the CAS server through an OpenID Connect adapter (e.g. Dex), add it to MAS's "
                     "upstream_oauth2.providers with synapse_idp_id: cas so existing CAS links carry over, then "
                     "remove cas_config at the switch (Synapse refuses SSO together with MAS)")

        saml = self.section("saml2_config")
        if saml and _truthy(saml.get("enabled", True)) and (saml.get("sp_config") or saml.get("config_path")):
            conflicts.append("saml2_config")
            self.add(WARN, "saml2_enabled", "SAML2 login is enabled; MAS has no SAML support", w("saml2_config"),
                     "Bridge the SAML IdP through an OpenID Connect adapter (e.g. Dex), add it to MAS's "
                     "upstream_oauth2.providers with synapse_idp_id: saml so existing SAML links carry over, then "
                     "remove saml2_config at the switch")

        jwt = self.section("jwt_config")
        if jwt and _truthy(jwt.get("enabled", False)):
            conflicts.append("jwt_config")
            self.add(WARN, "jwt_enabled", "JWT login is enabled; MAS has no JWT login", w("jwt_config.enabled"),
                     "Move the clients that log in with JWTs to an OpenID Connect provider configured in MAS, "
                     "then remove jwt_config at the switch")

        password_config = self.section("password_config")
        password_enabled = password_config.get("enabled", not delegated)
        password_login = password_enabled is True or _truthy(password_enabled) or password_enabled == "only_for_reauth"
        self.synapse_password_login = password_login
        if delegated and "enabled" in password_config and password_login:
            conflicts.append("password_config.enabled")
        if password_login and not _truthy(password_config.get("localdb_enabled", True)):
            self.add(WARN, "password_localdb_disabled",
                     "password_config.localdb_enabled is false: passwords are checked by a password provider, "
                     "not by Synapse's own hashes, and MAS has no password providers",
                     w("password_config.localdb_enabled"),
                     "Users of that provider (LDAP, ...) lose password login after the switch: connect the "
                     "directory to MAS as an upstream OpenID Connect provider (e.g. through Dex) first")

        providers = []
        entries = raw.get("password_providers")
        if isinstance(entries, list):
            providers += [str((e or {}).get("module", "?")) if isinstance(e, dict) else str(e) for e in entries]
        ldap = raw.get("ldap_config")
        if isinstance(ldap, dict) and _truthy(ldap.get("enabled", False)):
            providers.append("ldap_config")
        modules = raw.get("modules")
        if isinstance(modules, list):
            providers += [str(m.get("module")) for m in modules
                          if isinstance(m, dict) and _AUTH_MODULE_RE.search(str(m.get("module", "")))]
        if providers:
            if isinstance(entries, list) and entries:
                conflicts.append("password_providers")
            key = "password_providers" if isinstance(entries, list) and entries else (
                "ldap_config" if "ldap_config" in providers else "modules")
            self.add(WARN, "password_providers",
                     f"{_plural(len(providers), 'password/auth provider')} configured ({', '.join(providers)}): "
                     "MAS runs no Synapse auth modules",
                     w(key),
                     "Their users lose that way of logging in after the switch: connect the directory to MAS as "
                     "an upstream OpenID Connect provider (e.g. LDAP through Dex) before migrating, then remove "
                     "the providers from homeserver.yaml (Synapse refuses password providers together with MAS)")

        if raw.get("enable_3pid_changes") is not None and _truthy(raw["enable_3pid_changes"]):
            conflicts.append("enable_3pid_changes")
            self.add(ERROR, "threepid_changes_enabled", "enable_3pid_changes is explicitly true",
                     w("enable_3pid_changes"),
                     "Remove it (with MAS, email addresses are managed by MAS). ERROR, not WARN as the old "
                     "TypeScript advisor had it: Synapse refuses to start with MAS while it is true, which would "
                     "lock every user out after the switch")

        login_existing = self.section("login_via_existing_session")
        if _truthy(login_existing.get("enabled", False)):
            conflicts.append("login_via_existing_session.enabled")
            self.add(ERROR, "login_via_existing_session", "login_via_existing_session.enabled is true",
                     w("login_via_existing_session.enabled"),
                     "Set it to false or remove the section (MAS's QR code login replaces it). ERROR, not WARN as "
                     "the old TypeScript advisor had it: Synapse refuses to start with MAS while it is enabled")

        if _truthy(raw.get("allow_guest_access")):
            self.add(ERROR, "guest_access_enabled", "guest access is enabled (allow_guest_access: true)",
                     w("allow_guest_access"),
                     "Set allow_guest_access: false: MAS has no guest accounts "
                     "(matrix-authentication-service#1445), so guests could not use the homeserver after the switch")

        lifetimes = [k for k in ("refresh_token_lifetime", "nonrefreshable_access_token_lifetime", "session_lifetime")
                     if raw.get(k) is not None]
        if lifetimes:
            conflicts.extend(lifetimes)
            self.add(WARN, "token_lifetimes_set", f"token lifetimes are set: {', '.join(lifetimes)}",
                     w(lifetimes[0]),
                     "Remove them at the switch (Synapse refuses to start with MAS while they are set); MAS "
                     "decides session lifetimes. Migrated tokens keep their expiry")

        experimental = self.section("experimental_features")
        msc3861 = experimental.get("msc3861")
        if msc3861:  # a non-empty block, as Synapse tests it
            active = isinstance(msc3861, dict) and _truthy(msc3861.get("enabled"))
            message = "experimental_features.msc3861 is still present"
            if active:
                message += (" and enabled: this homeserver already delegates auth to MAS the old way, so its "
                            "users already live in MAS")
            self.add(ERROR, "msc3861_present", message, w("experimental_features.msc3861"),
                     "Delete experimental_features.msc3861: Synapse 1.157 and newer refuse to start while it is there. "
                     "Use the matrix_authentication_service section (enabled: true, endpoint, secret = the old "
                     "admin_token) instead" + ("; do not import again into a MAS that is already in use" if active
                                               else ""))

        if "pepper" in password_config and password_config.get("pepper") in ("", None):
            self.add(INFO, "pepper_empty", "password_config.pepper is set but empty: that is the same as no pepper",
                     w("password_config.pepper"),
                     "Nothing to do; leave MAS's version-1 scheme without secret. (mas-cli syn2mas check "
                     "reports a mismatch here; there is none)")

        oidc_enabled = []
        try:
            oidc_enabled = [p for p in self.synapse.oidc_providers() if p.enabled]
        except ConfigError as exc:
            self.add(ERROR, "synapse_config_invalid", str(exc), w("oidc_providers"),
                     "Fix the OIDC provider entry as Synapse's documentation shows")
        if oidc_enabled:
            conflicts.append("oidc_providers")

        if delegated:
            self.add(INFO, "synapse_auth_delegated",
                     "Synapse's config already delegates authentication to MAS (matrix_authentication_service)",
                     w("matrix_authentication_service.enabled"),
                     "Fine for the config of the switch; make sure MAS's database was not in use yet")
            if conflicts:
                self.add(ERROR, "synapse_mas_conflicts",
                         f"Synapse refuses to start with MAS enabled while these are set: {', '.join(conflicts)}",
                         w("matrix_authentication_service"),
                         "Remove or disable each of them in the homeserver.yaml used with MAS")

    # -- Synapse's database -----------------------------------------------------------------

    def check_synapse_database(self) -> None:
        options = self.options
        if self.synapse is None and not options.synapse_database_uri:
            self.skip(SYNAPSE_DB, "Synapse's config could not be read")
            return
        if self.server_name is None:
            self.skip(SYNAPSE_DB, "Synapse's server_name is unknown")
            return
        try:
            conninfo = database_conninfo(self.synapse, options.synapse_database_uri)
        except ConfigError:  # already reported by check_synapse_config
            self.skip(SYNAPSE_DB, "Synapse's database section is unusable")
            return
        self.summary["synapse_database"] = describe(conninfo) if _safe_describe(conninfo) else "?"
        try:
            conn = connect(conninfo, APPLICATION_NAME, "Synapse")
        except Syn2masError as exc:
            self.add(ERROR, "synapse_database_unreachable", str(exc), self.synapse_where("database"),
                     "Run the advisor where Synapse's database is reachable with Synapse's credentials (as Synapse's "
                     "user, on its host), or pass --synapseDatabaseUri / synapse_database_uri")
            self.skip(SYNAPSE_DB, "Synapse's database is unreachable")
            return
        try:
            with conn.cursor() as cur:
                cur.execute("SET lock_timeout = %s", (LOCK_TIMEOUT,))
            conn.commit()
            reader = SynapseReader(conn, self.server_name)
            self._synapse_checks(reader)
        except RefusedError as exc:
            self.add(ERROR, "synapse_tables_missing", str(exc), "Synapse database",
                     "Point the advisor at the main database of a Synapse 1.136 or newer")
            self.skip(SYNAPSE_DB, "Synapse's database lacks the tables the import reads")
        except Syn2masError as exc:
            self.add(ERROR, "synapse_database_unreachable", str(exc), "Synapse database",
                     "Fix the database error, then run the advisor again")
            self.skip(SYNAPSE_DB, "reading Synapse's database failed")
        except _PG_ERRORS as exc:
            self.add(ERROR, "synapse_database_unreachable", f"reading Synapse's database failed: {first_line(exc)}",
                     "Synapse database", "Fix the database error, then run the advisor again")
            self.skip(SYNAPSE_DB, "reading Synapse's database failed")
        finally:
            try:
                conn.rollback()
                conn.close()
            except Exception:  # pragma: no cover - the connection may be gone
                pass

    def _synapse_checks(self, reader: SynapseReader) -> None:
        options = self.options
        table = "Synapse database, table {}".format

        clients = reader.other_clients()
        if clients:
            listing = "; ".join(str(c) for c in clients)
            if options.for_real_import:
                self.add(ERROR, "synapse_running",
                         f"{_plural(len(clients), 'other client')} connected to Synapse's database: {listing}",
                         "Synapse database (pg_stat_activity)",
                         "Stop Synapse and all its workers (and close other sessions) before the import: it only "
                         "runs on a database nobody writes to")
            else:
                self.add(INFO, "synapse_running",
                         f"{_plural(len(clients), 'other client')} connected to Synapse's database (Synapse is "
                         f"running): {listing}",
                         "Synapse database (pg_stat_activity)",
                         "Fine for the advisor and a dry run; stop Synapse and its workers before the real import")

        version = reader.schema_version()
        self.summary["synapse_schema_version"] = version
        with reader.cursor() as cur:
            cur.execute("SELECT to_regclass('applied_schema_deltas') IS NOT NULL")
            deltas = set()
            if cur.fetchone()[0]:
                cur.execute("SELECT file FROM applied_schema_deltas WHERE version = %s", (OLDEST_SCHEMA_VERSION,))
                deltas = {row[0] for row in cur.fetchall()}
        reader.conn.rollback()
        too_old = None
        if version is None:
            too_old = "it has no schema_version (is it a Synapse database?)"
        elif version < OLDEST_SCHEMA_VERSION:
            too_old = f"its schema version is {version}, Synapse {OLDEST_SYNAPSE} has {OLDEST_SCHEMA_VERSION}"
        elif version == OLDEST_SCHEMA_VERSION:
            missing = [d for d in OLDEST_SCHEMA_DELTAS if d not in deltas]
            if missing:
                too_old = (f"its schema version {version} lacks {_plural(len(missing), 'delta')} that Synapse "
                           f"{OLDEST_SYNAPSE} applies (e.g. {missing[-1]})")
        if too_old:
            self.add(ERROR, "synapse_schema_too_old", f"Synapse's database is older than Synapse {OLDEST_SYNAPSE}: "
                     f"{too_old}", table("schema_version"),
                     f"Upgrade Synapse to {OLDEST_SYNAPSE} or newer and start it once, so it updates its database "
                     "(MAS supports Synapse 1.136 and newer only)")

        reader.begin_snapshot(lock=False)
        count, examples = reader.users_with_wrong_server_name()
        if count:
            self.add(ERROR, "wrong_server_name_users",
                     f"{_plural(count, 'user')} in Synapse's users table are not @localpart:{self.server_name}"
                     f"{_examples(examples)}: the import would fail on them", table("users"),
                     f"Check server_name ({self.synapse_where('server_name')}) is this homeserver's; delete or fix "
                     "these rows (leftovers of a renamed server) before the import")

        self.in_use = reader.auth_providers_in_use()
        params = stage_params(self.server_name, self.mapping)
        counts = {}
        for stage in STAGES:
            entry = counts.setdefault(stage.name, {"migrated": 0, "skipped": 0, "skipped_reasons": {}, "fixed": 0})
            for reason, n, first, last, fixed in reader.stage_counts(stage, params):
                if reason is None:
                    entry["migrated"] += n
                    entry["fixed"] += fixed or 0
                else:
                    entry["skipped"] += n
                    entry["skipped_reasons"][reason] = {"count": n, "examples": sorted({e for e in (first, last) if e})}
        self.counts = counts

        with reader.cursor() as cur:
            cur.execute("""
                SELECT
                  (SELECT count(*) FROM users WHERE is_guest <> 0 AND appservice_id IS NULL),
                  (SELECT count(*) FROM users WHERE is_guest <> 0 AND appservice_id IS NULL AND deactivated = 0),
                  (SELECT min(name) FROM users WHERE is_guest <> 0 AND appservice_id IS NULL),
                  (SELECT count(*) FROM users u WHERE appservice_id IS NULL AND deactivated = 0 AND is_guest = 0
                     AND NOT EXISTS (SELECT 1 FROM user_threepids t WHERE t.user_id = u.name AND t.medium = 'email'))
            """)
            guests, active_guests, guest_example, without_email = cur.fetchone()
            cur.execute("SELECT appservice_id, count(*) FROM users WHERE appservice_id IS NOT NULL "
                        "GROUP BY appservice_id ORDER BY appservice_id")
            appservices = cur.fetchall()
        reader.end_snapshot()
        self.guests = guests
        self._report_stages(counts, table)

        if guests:
            self.add(WARN, "guest_users",
                     f"{_plural(guests, 'guest user')} ({active_guests:,} not deactivated){_examples([guest_example])}: "
                     "they are imported as guest accounts, but their devices and tokens are not, so they lose access",
                     table("users"),
                     "Nothing can keep guest sessions (MAS has no guests, matrix-authentication-service#1445); "
                     "deactivate old guests in Synapse if you want a clean run. WARN as mas-cli has it, not ERROR as "
                     "the old TypeScript advisor had it: blocking the migration would not protect these accounts")
        appservice = counts["users"]["skipped_reasons"].get(SKIP_APPSERVICE)
        if appservice:
            per_service = ", ".join(f"{sid}: {n:,}" for sid, n in appservices)
            left = sum(entry["skipped_reasons"].get(SKIP_APPSERVICE, {}).get("count", 0)
                       for name, entry in counts.items() if name not in ("users", "passwords"))
            self.add(WARN, "appservice_users",
                     f"{_plural(appservice['count'], 'appservice user')} ({per_service}) are not migrated"
                     f"{_examples(appservice['examples'])}; {_plural(left, 'row')} of theirs (devices, tokens, "
                     "third-party ids, SSO links) stay in Synapse only", table("users"),
                     "Bridges and bots keep working through their as_token (Synapse checks it), but MAS's /login "
                     "refuses m.login.application_service: bridges that log their users in that way (double "
                     "puppeting, device creation for encryption) need MSC4190 support (Synapse 1.141 or newer with "
                     "it enabled) or appservice double puppeting; check each bridge before the switch")
        total_non_email = counts["other_threepids"]["migrated"]
        if total_non_email:
            self.add(WARN, "non_email_threepids",
                     f"{_plural(total_non_email, 'third-party id')} other than email (phone numbers) will be kept in "
                     "MAS's user_unsupported_third_party_ids but cannot be used there", table("user_threepids"),
                     "Tell the users who log in or reset passwords with a phone number to add an email address or "
                     "set a password. WARN as mas-cli has it, not ERROR as the old TypeScript advisor had it: the "
                     "data is kept and no setting could make MAS use it")
        if without_email:
            self.add(INFO, "users_without_email",
                     f"active users without an email address: {without_email:,}", table("user_threepids"),
                     "They cannot recover a forgotten password through MAS; encourage them to add one")
        migrated = {name: entry["migrated"] for name, entry in counts.items()}
        unmapped = counts["upstream_links"]["skipped_reasons"].get(SKIP_UNMAPPED, {}).get("count", 0)
        links = _plural(migrated["upstream_links"], "SSO link")
        if unmapped:
            links += f" (and {unmapped:,} more once their providers are mapped to MAS providers)"
        self.password_users = migrated["passwords"]
        self.summary.update({
            "users": migrated["users"], "passwords": migrated["passwords"],
            "devices": migrated["device_sessions"], "access_tokens": migrated["access_tokens"],
            "refresh_tokens": migrated["refresh_tokens"], "guests": guests,
            "appservice_users": appservice["count"] if appservice else 0, "counts": counts,
        })
        self.add(INFO, "migration_counts",
                 f"the import will carry over {_plural(migrated['users'], 'user')}, "
                 f"{_plural(migrated['passwords'], 'password')}, {_plural(migrated['emails'], 'email address', 'email addresses')}, "
                 f"{links}, {_plural(migrated['device_sessions'], 'device')}, "
                 f"{_plural(migrated['deviceless_sessions'], 'device-less token session')}, "
                 f"{_plural(migrated['access_tokens'], 'access token')} and "
                 f"{_plural(migrated['refresh_tokens'], 'refresh token')}",
                 "Synapse database",
                 "Device-less tokens (admin API, scripts) are kept as sessions without a device (the old TypeScript "
                 "advisor flagged them as ERROR because it dropped them)")

    def _report_stages(self, counts: dict, table) -> None:
        orphans, device_gone, too_long, other = [], [], [], []
        for stage in STAGES:
            if not stage.report_skips:
                continue
            for reason, info in counts[stage.name]["skipped_reasons"].items():
                item = (stage, reason, info)
                if reason == SKIP_USER_MISSING:
                    orphans.append(item)
                elif reason == SKIP_DEVICE_GONE:
                    device_gone.append(item)
                elif reason == SKIP_TOO_LONG:
                    too_long.append(item)
                elif reason not in (SKIP_APPSERVICE, SKIP_UNMAPPED):
                    other.append(item)
        for stage, _reason, info in orphans:
            self.add(WARN, "orphan_rows",
                     f"{_plural(info['count'], 'row')} of {STAGE_TABLES[stage.name]} ({stage.name}) belong to users "
                     f"missing from the users table{_examples(info['examples'])}: the import leaves them behind",
                     table(STAGE_TABLES[stage.name]),
                     "Leftovers of deleted users: nothing to lose, but check the examples, then delete these rows "
                     "in Synapse (or accept that they are not migrated)")
        for stage, _reason, info in device_gone:
            self.add(WARN, "tokens_device_gone",
                     f"{_plural(info['count'], 'token')} in {STAGE_TABLES[stage.name]} point at devices that no longer "
                     f"exist{_examples(info['examples'])}: the import leaves them behind, so the clients using them "
                     "will be logged out", table(STAGE_TABLES[stage.name]),
                     "Usually leftovers of deleted devices; if a client still uses one, its user logs in again after "
                     "the switch. Delete them in Synapse to make this go away")
        for stage, _reason, info in too_long:
            self.add(WARN, "values_too_long",
                     f"{_plural(info['count'], 'value')} in {STAGE_TABLES[stage.name]} ({stage.name}) are too long "
                     f"for MAS's indexes{_examples(info['examples'])}: the import leaves them behind",
                     table(STAGE_TABLES[stage.name]),
                     "Check the examples (usually junk or abuse); shorten or delete them in Synapse")
        for stage, reason, info in other:
            self.add(INFO, "skipped_rows",
                     f"{_plural(info['count'], 'row')} of {STAGE_TABLES[stage.name]} ({stage.name}) are not migrated: "
                     f"{reason}{_examples(info['examples'])}", table(STAGE_TABLES[stage.name]),
                     "Nothing to do: this is what MAS expects")
        fixed = counts["device_sessions"]["fixed"]
        if fixed:
            self.add(INFO, "invalid_ip_addresses",
                     f"{_plural(fixed, 'device')} have a last-seen IP address MAS cannot store; it is imported as unknown",
                     table("devices"), "Nothing to do")

    # -- SSO links --------------------------------------------------------------------------

    def check_sso_links(self) -> None:
        if self.in_use is None:
            self.skip(["oauth_delegated_links", "sso_links_unknown_provider", "sso_provider_unmapped"],
                      "Synapse's database was not read")
            return
        try:
            configured = {p.auth_provider: p for p in self.synapse.oidc_providers()}
        except ConfigError:
            configured = {}
        for provider, n in self.in_use.items():
            links = _plural(n, "user link", "user links")
            if provider == "oauth-delegated":
                self.add(ERROR, "oauth_delegated_links",
                         f"{links} with auth_provider 'oauth-delegated': mappings written by a MAS that already "
                         "managed this homeserver", "Synapse database, table user_external_ids",
                         "If they come from an earlier, abandoned attempt, delete them in Synapse: DELETE FROM "
                         "user_external_ids WHERE auth_provider = 'oauth-delegated'; if MAS is in use already, do not "
                         "import again")
                continue
            if provider in self.mapping:
                continue
            if provider not in configured:
                kind = {"cas": "CAS", "saml": "SAML"}.get(provider)
                what = f"{kind} login" if kind else (
                    "an OIDC provider that is no longer in Synapse's config" if provider.startswith("oidc")
                    else "a provider Synapse's config does not define")
                self.add(ERROR, "sso_links_unknown_provider",
                         f"{links} of auth_provider {provider!r} ({what}) map to no MAS provider: these users would "
                         "lose that way of logging in, and the import refuses unmapped links",
                         "Synapse database, table user_external_ids",
                         "Either bridge it through an OpenID Connect adapter (e.g. Dex), add that to MAS's "
                         f"upstream_oauth2.providers with synapse_idp_id: {provider} (or pass --upstreamProviderMapping "
                         f"{provider}:<MAS provider id>) and run `mas-cli config sync`; or, if nobody logs in that way "
                         "any more, import with --skipUnmappedProviders / skip_unmapped_providers (those users then "
                         "need a password or another provider)")
                continue
            if not self.mapping_known:
                self.skip(["sso_provider_unmapped"], "no MAS config given (--masConfigFile / mas_config)")
                continue
            oidc = configured[provider]
            self.add(ERROR, "sso_provider_unmapped",
                     f"{links} of Synapse's OIDC provider {oidc.idp_id!r} (auth_provider {provider!r}, issuer "
                     f"{oidc.config.get('issuer', '?')}) have no MAS provider with synapse_idp_id: {provider}",
                     self.mas_where("upstream_oauth2.providers") if self.mas is not None else oidc.source,
                     f"Add synapse_idp_id: {provider} to the MAS upstream provider for that issuer "
                     "(matrix.syn2mas.mas_upstream_provider does it) and run `mas-cli config sync`; without it, "
                     "these users cannot log in with that provider after the switch")

        # Providers nobody is linked to yet, but that people use to sign up (the old advisor's per-provider check).
        if self.mas is None:
            self.skip(["oidc_provider_not_in_mas"], "no MAS config given (--masConfigFile / mas_config)")
            return
        issuers = set()
        section = self.mas.raw.get("upstream_oauth2")
        for entry in (section.get("providers") or []) if isinstance(section, dict) else []:
            if isinstance(entry, dict) and entry.get("issuer"):
                issuers.add(str(entry["issuer"]).rstrip("/"))
        for provider, oidc in configured.items():
            if not oidc.enabled or provider in self.mapping or provider in self.in_use:
                continue
            issuer = str(oidc.config.get("issuer", "")).rstrip("/")
            if issuer and issuer in issuers:
                continue
            self.add(WARN, "oidc_provider_not_in_mas",
                     f"Synapse's OIDC provider {oidc.idp_id!r} (issuer {issuer or '?'}) has no counterpart in MAS",
                     oidc.source,
                     f"Add it to MAS's upstream_oauth2.providers with synapse_idp_id: {provider} (mas-cli config "
                     "generate --synapse-config writes it), and register MAS's callback URL at the identity "
                     "provider, or people can no longer sign in with it")

    # -- MAS's config -----------------------------------------------------------------------

    def check_mas_config(self) -> None:
        mas = self.mas
        if self.server_name is not None:
            try:
                homeserver = mas.homeserver
            except ConfigError as exc:
                self.add(ERROR, "mas_config_invalid", str(exc), mas.where("matrix"), "Fix MAS's matrix section")
                homeserver = None
            if homeserver is not None and homeserver != self.server_name:
                self.add(ERROR, "mas_homeserver_mismatch",
                         f"MAS's matrix.homeserver is {homeserver!r} but Synapse's server_name is {self.server_name!r}",
                         mas.where("matrix.homeserver"),
                         f"Set matrix.homeserver: {self.server_name} in MAS's config; MAS only holds users of its "
                         "homeserver, and the import refuses a mismatch")
        else:
            self.skip(["mas_homeserver_mismatch"], "Synapse's server_name is unknown")

        http = mas.raw.get("http")
        http = http if isinstance(http, dict) else {}
        public_base = http.get("public_base")
        if not public_base:
            self.add(ERROR, "mas_public_base", "http.public_base is not set: MAS refuses to start without it",
                     mas.where("http.public_base"),
                     "Set http.public_base to MAS's public HTTPS URL, e.g. https://auth.example.com/")
        else:
            for key in ("public_base", "issuer"):
                url = http.get(key)
                if not url:
                    continue
                url = str(url)
                host = re.sub(r"^[a-z]+://", "", url.lower())
                if not url.lower().startswith("https://") or host.startswith(_LOCAL_HOSTS):
                    self.add(WARN, "mas_public_base",
                             f"http.{key} is {url!r}, not a public HTTPS URL: clients such as Element X refuse it, "
                             "and Synapse advertises it as the issuer (matrix-authentication-service#5379)",
                             mas.where(f"http.{key}"),
                             "Set it to the public HTTPS URL users reach MAS at, e.g. https://auth.example.com/")

        self.check_mas_passwords()

    def check_mas_passwords(self) -> None:
        mas = self.mas
        password_checks = ["mas_passwords_disabled", "mas_password_scheme_missing", "mas_password_scheme_not_bcrypt",
                           "mas_password_unicode_normalization", "mas_password_pepper_mismatch",
                           "mas_password_secret_file_newline"]
        if self.password_users is not None:
            needed = self.password_users > 0
        elif self.synapse is not None:
            needed = self.synapse_password_login
        else:
            needed = True
        if not needed:  # nothing to check: no password to carry over
            return
        who = (f"{_plural(self.password_users, 'Synapse user')} with a password"
               if self.password_users is not None else "Synapse's password users")
        passwords = mas.raw.get("passwords")
        passwords = passwords if isinstance(passwords, dict) else {}
        if not _truthy(passwords.get("enabled", True)):
            self.add(ERROR, "mas_passwords_disabled", f"MAS's passwords.enabled is false: {who} could no longer log in",
                     mas.where("passwords.enabled"),
                     "Set passwords.enabled: true (with a version-1 bcrypt scheme), or move these users to an upstream "
                     "provider first")
            self.skip(password_checks, "MAS's passwords are disabled")
            return
        try:
            schemes = mas.password_schemes()
        except ConfigError as exc:
            self.add(ERROR, "mas_config_invalid", str(exc), mas.where("passwords.schemes"), "Fix passwords.schemes")
            return
        v1 = [s for s in schemes if str(s.get("version")) == "1"]
        example = ("passwords.schemes: [{version: 1, algorithm: bcrypt, unicode_normalization: true"
                   + (", secret: <Synapse's pepper>" if self._pepper() else "") + "}, {version: 2, algorithm: argon2id}]")
        if not v1:
            self.add(ERROR, "mas_password_scheme_missing",
                     ("passwords.schemes is not set, and MAS's default (version 1, argon2id) cannot check Synapse's "
                      if not schemes else "MAS has no password scheme version 1 to check Synapse's ")
                     + f"bcrypt hashes: {who} could not log in",
                     mas.where("passwords.schemes"), f"Add it: {example}")
            return
        scheme = v1[0]
        where = mas.where(f"passwords.schemes[{schemes.index(scheme)}]")
        if str(scheme.get("algorithm", "")).lower() != "bcrypt":
            self.add(ERROR, "mas_password_scheme_not_bcrypt",
                     f"MAS's password scheme version 1 uses {scheme.get('algorithm')!r}, not bcrypt: {who} could not "
                     "log in", where + ".algorithm", f"Set algorithm: bcrypt on version 1 ({example})")
        if not _truthy(scheme.get("unicode_normalization", False)):
            self.add(ERROR, "mas_password_unicode_normalization",
                     "MAS's password scheme version 1 lacks unicode_normalization: true: passwords with non-ASCII "
                     "characters would no longer match (Synapse normalises them before hashing)",
                     where + ".unicode_normalization",
                     "Add unicode_normalization: true to the version-1 scheme (matrix-authentication-service#4598). "
                     "ERROR although mas-cli does not check it: those users would be silently locked out")
        self._check_pepper(scheme, where, who)

    def _pepper(self) -> str:
        if self.synapse is None:
            return ""
        config = self.synapse.raw.get("password_config")
        pepper = config.get("pepper") if isinstance(config, dict) else None
        return "" if pepper is None else str(pepper)

    def _check_pepper(self, scheme: dict, where: str, who: str) -> None:
        if self.synapse is None:
            self.skip(["mas_password_pepper_mismatch", "mas_password_secret_file_newline"],
                      "Synapse's config could not be read")
            return
        pepper = self._pepper()
        pepper_where = self.synapse_where("password_config.pepper")
        secret, secret_file = scheme.get("secret"), scheme.get("secret_file")
        if secret is not None and secret_file is not None:
            self.add(ERROR, "mas_config_invalid", "the version-1 scheme sets both secret and secret_file",
                     where, "Keep one of them (MAS refuses both)")
            return
        if secret_file is not None:
            try:
                with open(str(secret_file), "rb") as handle:
                    content = handle.read().decode("utf-8", errors="replace")
            except OSError as exc:
                self.add(ERROR, "mas_password_pepper_mismatch",
                         f"the version-1 scheme's secret_file {secret_file} cannot be read ({exc.strerror}), so it "
                         "cannot be compared with Synapse's pepper", where + ".secret_file",
                         "Run the advisor where MAS's files are, as a user that can read them")
                return
            if content == pepper:
                return
            if content.rstrip("\r\n") == pepper:
                self.add(ERROR, "mas_password_secret_file_newline",
                         f"the version-1 scheme's secret_file {secret_file} holds Synapse's pepper followed by a "
                         "newline; MAS uses the file's bytes as they are, so no migrated password would match",
                         where + ".secret_file",
                         f"Write the file without the trailing newline (printf '%s' \"$PEPPER\" > {secret_file}), "
                         f"or use secret: instead")
                return
            self.add(ERROR, "mas_password_pepper_mismatch",
                     f"the version-1 scheme's secret_file {secret_file} does not hold Synapse's pepper "
                     f"({pepper_where}): {who} could not log in", where + ".secret_file",
                     "Put exactly Synapse's password_config.pepper in the file (no trailing newline)")
            return
        secret = "" if secret is None else str(secret)
        if secret != pepper:
            state = ("Synapse has a pepper but the scheme has no secret" if pepper and not secret else
                     "the scheme has a secret but Synapse has no pepper" if secret and not pepper else
                     "the scheme's secret differs from Synapse's pepper")
            self.add(ERROR, "mas_password_pepper_mismatch",
                     f"{state} ({pepper_where}): {who} could not log in", where + ".secret",
                     "Set the version-1 scheme's secret to exactly Synapse's password_config.pepper"
                     + (" (or remove it: Synapse has none)" if not pepper else ""))

    # -- MAS's database -------------------------------------------------------------------

    def check_mas_database(self) -> None:
        options = self.options
        if self.mas is None and not options.mas_database_uri:
            self.skip(MAS_DB, "MAS's config could not be read" if options.mas_config
                      else "no MAS config given (--masConfigFile / mas_config)")
            return
        try:
            conninfo = database_conninfo(self.mas, options.mas_database_uri)
        except ConfigError as exc:
            self.add(ERROR, "mas_database_config", str(exc), self.mas_where("database"),
                     "Fix MAS's database section (uri, or host/port/socket/username/password/database)")
            self.skip(MAS_DB, "MAS's database section is unusable")
            return
        self.summary["mas_database"] = describe(conninfo) if _safe_describe(conninfo) else "?"
        try:
            conn = connect(conninfo, APPLICATION_NAME, "MAS")
        except Syn2masError as exc:
            self.add(ERROR, "mas_database_unreachable", str(exc), self.mas_where("database"),
                     "Run the advisor where MAS's database is reachable with MAS's credentials, or pass "
                     "--masDatabaseUri / mas_database_uri. A `database` section left out means the PG* environment "
                     "variables and defaults (matrix-authentication-service#4605)")
            self.skip(MAS_DB, "MAS's database is unreachable")
            return
        try:
            # Every transaction of this session is READ ONLY, so nothing here can write to MAS (the
            # settings themselves are made outside any transaction).
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                cur.execute("SET lock_timeout = %s", (LOCK_TIMEOUT,))
            conn.autocommit = False
            self._mas_checks(conn)
        except _PG_ERRORS as exc:
            self.add(ERROR, "mas_database_unreachable", f"reading MAS's database failed: {first_line(exc)}",
                     "MAS database", "If an import is running right now, wait for it; otherwise fix the error")
            self.skip(MAS_DB, "reading MAS's database failed")
        finally:
            try:
                conn.rollback()
                conn.close()
            except Exception:  # pragma: no cover
                pass

    def _mas_checks(self, conn) -> None:
        where = "MAS database"
        with conn.cursor() as cur:
            cur.execute("""
                SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), 'local socket'),
                       EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                               AND ((l.classid::bigint << 32) | l.objid::bigint) = %s)
                FROM pg_stat_activity a
                WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                  AND a.backend_type = 'client backend'
                ORDER BY a.pid""", (ADVISORY_LOCK_KEY,))
            clients = cur.fetchall()
        conn.rollback()
        if clients:
            importing = any(row[3] for row in clients)
            listing = "; ".join(f"{name or 'unnamed client'} (pid {pid}, from {addr})" for pid, name, addr, _importing in clients)
            message = f"{_plural(len(clients), 'other client')} connected to MAS's database: {listing}"
            if importing:
                message += " (one of them is a syn2mas import running right now)"
            severity = ERROR if self.options.for_real_import or importing else INFO
            self.add(severity, "mas_running", message, f"{where} (pg_stat_activity)",
                     "Keep MAS stopped until the import is done: the import needs MAS's tables to itself"
                     if not importing else "Wait for the running import to finish, then run the advisor again")

        writer = MasWriter(conn)
        try:
            schema = mas_schema.detect(conn)
        except Syn2masError as exc:
            conn.rollback()
            self.add(ERROR, "mas_schema", str(exc), f"{where}, table _sqlx_migrations",
                     "Run `mas-cli database migrate` with the MAS release you will run (1.0 or newer), then advise "
                     "again")
        else:
            self.summary["mas_schema"] = {"release": schema.release, "latest_migration": schema.latest_migration}
            for warning in schema.warnings:
                self.add(WARN, "mas_schema", warning, f"{where}, table _sqlx_migrations",
                         "Check this collection's release notes for this MAS release before importing")

        previous = writer.marker()
        if previous is not None:
            other = previous.get("server_name") not in (None, self.server_name) and self.server_name is not None
            self.add(ERROR if other else WARN, "mas_already_imported",
                     f"MAS's database already holds an import of {previous.get('server_name')!r} made on "
                     f"{previous.get('imported_at', '?')}" + (f", not of {self.server_name!r}" if other else ""),
                     f"{where}, table users (comment)",
                     "Wrong database? Point the advisor at the right one" if other else
                     "Importing again changes nothing; to redo it, restore MAS's empty database first")
        else:
            filled = writer.tables_with_data()
            if filled:
                self.add(ERROR, "mas_not_empty", f"MAS's database is not empty: rows found in {', '.join(filled)}",
                         f"{where}, table {filled[0]}",
                         "The import only fills a fresh MAS database: drop and recreate it (then `mas-cli database "
                         "migrate` and `mas-cli config sync`), or check MAS's database section points at the right "
                         "database (matrix-authentication-service#4605)")
        conn.rollback()

        used = {p: link for p, link in self.mapping.items() if self.in_use is None or p in self.in_use}
        if used and schema_ok(conn):
            present = writer.existing_providers([link.provider_id for link in used.values()])
            conn.rollback()
            missing = [link for link in used.values() if str(link.provider_id) not in present]
            if missing:
                names = ", ".join(f"{link.auth_provider} -> {link.provider_id}" for link in missing)
                self.add(ERROR if self.in_use is not None else WARN, "sso_provider_not_in_mas_database",
                         f"MAS's database has no upstream provider row for {names}: the import refuses to run",
                         f"{where}, table upstream_oauth_providers ({missing[0].source})",
                         "Run `mas-cli config sync` (or start MAS once) with the config that defines these providers")

    # -- MAS's compatibility layer (reverse_proxy.py) ------------------------------------------

    def check_reverse_proxy(self) -> None:
        if self.mas is not None:
            for finding in reverse_proxy.compat_listener_findings(self.mas.raw, self.mas.where):
                self.add(**finding)
            public = self.synapse.raw.get("public_baseurl") if self.synapse is not None else None
            self.summary["reverse_proxy"] = reverse_proxy.proxy_needs(public, self.mas.raw)
        options = self.options
        for finding in reverse_proxy.proxy_routes_findings(options.reverse_proxy_config, options.public_url,
                                                           options.mas_url, LOCAL_FILES.read_text):
            self.add(**finding)

    # -- result -----------------------------------------------------------------------------

    def result(self) -> dict:
        findings = sorted(self.findings, key=lambda f: SEVERITY_ORDER[f["severity"]])
        fired = {f["check"] for f in findings}
        not_run = [{"check": c, "reason": r} for c, r in self.not_run.items() if c not in fired]
        summary = {
            "errors": sum(1 for f in findings if f["severity"] == ERROR),
            "warnings": sum(1 for f in findings if f["severity"] == WARN),
            "info": sum(1 for f in findings if f["severity"] == INFO),
            "checks_run": len(CHECKS) - len(not_run),
            "not_run": not_run,
            "server_name": self.server_name,
            "for_real_import": self.options.for_real_import,
        }
        summary.update(self.summary)
        return {"findings": findings, "summary": summary}


def schema_ok(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('upstream_oauth_providers') IS NOT NULL")
        ok = cur.fetchone()[0]
    conn.rollback()
    return ok


def _safe_describe(conninfo: dict) -> bool:
    try:
        describe(conninfo)
        return True
    except Syn2masError:
        return False


def run_advisor(options: AdvisorOptions) -> dict:
    """Runs every check; never raises for what it finds (a config or database error is a finding)."""
    advisor = _Advisor(options)
    advisor.run()
    return advisor.result()


def exit_code(result: dict) -> int:
    """mas-cli's convention: 10 when there are errors, 11 when there are warnings only, else 0."""
    summary = result.get("summary", {})
    if summary.get("errors"):
        return EXIT_ERRORS
    if summary.get("warnings"):
        return EXIT_WARNINGS
    return EXIT_CLEAN


def format_finding(finding: dict) -> str:
    line = f"{finding['severity']} {finding['check']}: {finding['message']}"
    if finding.get("where"):
        line += f" [{finding['where']}]"
    if finding.get("remedy"):
        line += f" -> {finding['remedy']}"
    return line


def format_human(result: dict, verbose: bool = False) -> str:
    """One line per finding (INFO only when verbose), then a summary line; ends with a newline."""
    lines = [format_finding(f) for f in result["findings"] if verbose or f["severity"] != INFO]
    summary = result["summary"]
    text = (f"Summary: {_plural(summary['errors'], 'error')}, {_plural(summary['warnings'], 'warning')}, "
            f"{summary['info']:,} info" + ("" if verbose or not summary["info"] else " (shown with --verbose)"))
    reasons: dict = {}
    for item in summary.get("not_run", []):
        reasons.setdefault(item["reason"], []).append(item["check"])
    for reason, checks in reasons.items():
        text += f"; {_plural(len(checks), 'check')} not run ({reason})"
    code = exit_code(result)
    text += ("; the migration is blocked until the errors are fixed" if code == EXIT_ERRORS else
             "; read the warnings and act on them before migrating" if code == EXIT_WARNINGS else
             "; nothing blocks the migration")
    lines.append(text)
    return "\n".join(lines) + "\n"
