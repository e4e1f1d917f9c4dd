# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Synapse's settings read the way Synapse reads them, and the settings it refuses next to MAS.

Every part of the collection that asks "is this Synapse setting on?" asks here, so the advisor,
the delegation plan and the runbook's gate give one answer. Synapse reads most switches with
Python's truthiness (`config.get("allow_guest_access", False)` used as a bool, so the string
`"false"` is on) and a few with its `strtobool` (`enable_registration: "false"` is off); the
table below follows its config code (synapse/config/*.py, 1.136 to 1.163), switch by switch.

`MAS_CONFLICTS` is Synapse's `check_config_conflicts` (synapse/config/mas.py) as data: each
entry says how to tell the setting is on, how the delegation plan turns it off, and which
advisor check reports it. This file reads plain dicts (the merged homeserver.yaml); it knows
nothing of files or of MAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError

# Read through Synapse's strtobool (synapse/config/registration.py); every other switch is read
# with Python's truthiness.
_STRTOBOOL_FLAGS = frozenset({"enable_registration", "disable_registration",
                              "enable_registration_without_verification"})
_TRUE_WORDS = ("y", "yes", "t", "true", "on", "1")
_FALSE_WORDS = ("n", "no", "f", "false", "off", "0")

# The settings that take a duration and, when set, make Synapse refuse MAS.
TOKEN_LIFETIMES = ("refresh_token_lifetime", "nonrefreshable_access_token_lifetime", "session_lifetime")


def strtobool(value, key: str) -> bool:
    """Synapse's strtobool of `str(value)`; Synapse refuses to start on any other word."""
    word = str(value).lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigError(f"{key}: {value!r} is not a truth value Synapse accepts (true/false, yes/no, on/off, "
                      "1/0); Synapse refuses to start with it")


def section(raw: dict, key: str) -> dict:
    """A mapping section; `key:` with no value, or no key, is {} (as Synapse reads it)."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__}")
    return value


def flag(raw: dict, path: str, default=False) -> bool:
    """Whether the switch at `path` ("allow_guest_access", "cas_config.enabled") is on for Synapse.

    `default` is Synapse's default when the key is absent. Raises ConfigError where Synapse would
    refuse the value or the section holding it.
    """
    *parents, key = path.split(".")
    node = raw
    for depth, parent in enumerate(parents):
        try:
            node = section(node, parent)
        except ConfigError:
            raise ConfigError(f"{'.'.join(parents[:depth + 1])}: expected a mapping, found "
                              f"{type(node.get(parent)).__name__}") from None
    if path == "enable_registration" and "disable_registration" in raw:
        return not strtobool(raw["disable_registration"], "disable_registration")
    value = node.get(key, default)
    if path in _STRTOBOOL_FLAGS:
        return strtobool(value, path)
    return bool(value)


def delegates_to_mas(raw: dict) -> bool:
    """matrix_authentication_service.enabled: a strict boolean for Synapse (pydantic StrictBool)."""
    return section(raw, "matrix_authentication_service").get("enabled") is True


def section_enabled(raw: dict, key: str) -> bool:
    """Whether an SSO section is on, by each section's own rule in Synapse."""
    if key == "saml2_config":
        saml = section(raw, key)  # on only with a service provider config
        return bool(saml and flag(raw, "saml2_config.enabled", True) and
                    (saml.get("sp_config") or saml.get("config_path")))
    if key == "cas_config":
        return bool(section(raw, key)) and flag(raw, "cas_config.enabled", True)
    if key in ("jwt_config", "oidc_config", "ldap_config", "login_via_existing_session"):
        return flag(raw, f"{key}.enabled", False)
    raise KeyError(key)


def password_login(raw: dict) -> bool:
    """Whether Synapse accepts passwords (for login or re-authentication); off by default under MAS."""
    value = section(raw, "password_config").get("enabled", not delegates_to_mas(raw))
    return bool(value)  # "only_for_reauth" is on too


def pepper(raw: dict) -> str:
    """password_config.pepper, "" when none (Synapse's default)."""
    value = section(raw, "password_config").get("pepper")
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------------
# The settings Synapse refuses together with MAS


@dataclass(frozen=True)
class MasConflict:
    """One setting Synapse refuses to start with once authentication is delegated to MAS."""

    path: tuple                    # the key the delegation plan edits, e.g. ("cas_config", "enabled")
    is_set: Callable[[dict], bool]  # on the merged homeserver.yaml
    edit: str                      # "disable" (set it to false) or "remove"
    reason: str                    # why it goes, shown in the plan
    # The advisor check that reports it, when the edit is the whole remedy of that finding. None when
    # the finding stays true after the edit (CAS users still lose their way of logging in).
    check: str | None = None

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _password_conflict(raw: dict) -> bool:
    # Only an explicit `enabled` conflicts: without it Synapse turns passwords off itself under MAS.
    config = section(raw, "password_config")
    return "enabled" in config and bool(config["enabled"])


def _set(key: str) -> Callable[[dict], bool]:
    return lambda raw: raw.get(key) is not None


MAS_CONFLICTS = (
    MasConflict(("password_config", "enabled"), _password_conflict, "disable", "password login moves to MAS"),
    MasConflict(("enable_registration",), lambda raw: flag(raw, "enable_registration"), "disable",
                "registration moves to MAS", "registration_enabled"),
    MasConflict(("user_consent",), _set("user_consent"), "remove",
                "user consent is not supported with MAS (use MAS branding.tos_uri)", "user_consent"),
    MasConflict(("oidc_providers",), lambda raw: bool(raw.get("oidc_providers")), "remove",
                "SSO moves to MAS upstream providers (matrix.syn2mas.mas_upstream_provider)"),
    MasConflict(("oidc_config", "enabled"), lambda raw: section_enabled(raw, "oidc_config"), "disable",
                "SSO moves to MAS upstream providers"),
    MasConflict(("saml2_config", "enabled"), lambda raw: section_enabled(raw, "saml2_config"), "disable",
                "SAML is not supported by MAS (bridge it through an OIDC IdP such as Dex)"),
    MasConflict(("cas_config", "enabled"), lambda raw: section_enabled(raw, "cas_config"), "disable",
                "CAS is not supported by MAS (bridge it through an OIDC IdP such as Dex)"),
    MasConflict(("jwt_config", "enabled"), lambda raw: section_enabled(raw, "jwt_config"), "disable",
                "JWT login is not supported by MAS"),
    MasConflict(("password_providers",), lambda raw: bool(raw.get("password_providers")), "remove",
                "password provider modules are not supported by MAS"),
    MasConflict(("ldap_config", "enabled"), lambda raw: section_enabled(raw, "ldap_config"), "disable",
                "the built-in LDAP password provider is not supported by MAS"),
    MasConflict(("enable_registration_captcha",), lambda raw: flag(raw, "enable_registration_captcha"), "disable",
                "registration CAPTCHA moves to MAS (its `captcha` section)", "registration_captcha"),
    MasConflict(("login_via_existing_session", "enabled"),
                lambda raw: section_enabled(raw, "login_via_existing_session"), "disable",
                "MAS's QR code login replaces it", "login_via_existing_session"),
    *(MasConflict((key,), _set(key), "remove", "MAS manages session lifetimes", "token_lifetimes_set")
      for key in TOKEN_LIFETIMES),
    MasConflict(("enable_3pid_changes",), lambda raw: flag(raw, "enable_3pid_changes"), "disable",
                "email changes move to MAS (account.email_change_allowed)", "threepid_changes_enabled"),
)

# The advisor's aggregate check: every conflict at once, when Synapse already delegates to MAS.
CONFLICTS_CHECK = "synapse_mas_conflicts"


def mas_conflicts(raw: dict) -> list:
    """The MAS_CONFLICTS entries set in `raw`, in the table's order."""
    return [conflict for conflict in MAS_CONFLICTS if conflict.is_set(raw)]


def checks_remedied_by_delegation() -> frozenset:
    """The advisor checks whose findings the delegation edit remedies entirely."""
    return frozenset({c.check for c in MAS_CONFLICTS if c.check} | {CONFLICTS_CHECK})


__all__ = [
    "CONFLICTS_CHECK", "MAS_CONFLICTS", "MasConflict", "TOKEN_LIFETIMES", "checks_remedied_by_delegation",
    "delegates_to_mas", "flag", "mas_conflicts", "password_login", "pepper", "section", "section_enabled",
    "strtobool",
]
