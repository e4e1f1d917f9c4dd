# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of MAS's configuration: its homeserver, its public URL, and whether Synapse's password
hashes still verify in MAS (a version-1 bcrypt scheme with Synapse's pepper).

MAS reads its switches as strict booleans (serde); a value of another type makes MAS refuse its
configuration, which `mas-cli config check` reports.
"""

from __future__ import annotations

import re

from ..config import synapse_settings
from ..errors import ConfigError
from .facts import MAS_CONFIG_INVALID
from .registry import (
    ERROR, MAS_CONFIG, MAS_HTTP, MAS_SYNAPSE_LINK, SERVER_NAME, SYNAPSE_CONFIG, WARN, NotRun, check, finding, plural,
)

_LOCAL_HOSTS = ("localhost", "127.", "[::]", "[::1]", "0.0.0.0")


def homeserver_mismatch(homeserver: str, server_name: str) -> str | None:
    """The refusal when MAS's matrix.homeserver is not Synapse's server_name (None when they agree)."""
    if homeserver == server_name:
        return None
    return f"MAS's matrix.homeserver is {homeserver!r} but Synapse's server_name is {server_name!r}"


def homeserver_remedy(server_name: str) -> str:
    return (f"Set matrix.homeserver: {server_name} in MAS's config; MAS only holds users of its homeserver, and the "
            "import refuses a mismatch")


@check("mas_homeserver_mismatch", MAS_CONFIG, "matrix.homeserver", needs=(MAS_CONFIG, SERVER_NAME),
       remedied_by=MAS_SYNAPSE_LINK)
def mas_homeserver_mismatch(f):
    try:
        homeserver = f.mas.homeserver
    except ConfigError as exc:
        return finding(ERROR, str(exc), f.mas.where("matrix"), "Fix MAS's matrix section", check=MAS_CONFIG_INVALID)
    message = homeserver_mismatch(homeserver, f.server_name)
    if message is None:
        return None
    return finding(ERROR, message, f.mas.where("matrix.homeserver"), homeserver_remedy(f.server_name))


@check("mas_public_base", MAS_CONFIG, "http.public_base, http.issuer")
def mas_public_base(f):
    http = f.mas.raw.get("http")
    http = http if isinstance(http, dict) else {}
    if not http.get("public_base"):
        return finding(ERROR, "http.public_base is not set: MAS refuses to start without it",
                       f.mas.where("http.public_base"),
                       "Set http.public_base to MAS's public HTTPS URL, e.g. https://auth.example.com/")
    found = []
    for key in ("public_base", "issuer"):
        url = str(http.get(key) or "")
        host = re.sub(r"^[a-z]+://", "", url.lower())
        if url and (not url.lower().startswith("https://") or host.startswith(_LOCAL_HOSTS)):
            found.append(finding(WARN, f"http.{key} is {url!r}, not a public HTTPS URL: clients such as Element X "
                                 "refuse it, and Synapse advertises it as the issuer (matrix-authentication-service#5379)",
                                 f.mas.where(f"http.{key}"),
                                 "Set it to the public HTTPS URL users reach MAS at, e.g. https://auth.example.com/"))
    return found


# -- passwords ----------------------------------------------------------------------------------

def _who(f) -> str:
    users = f.password_users
    return f"{plural(users, 'Synapse user')} with a password" if users is not None else "Synapse's password users"


def _passwords_needed(f) -> bool:
    """Whether any password is carried over: by the data when it was read, else by Synapse's config."""
    if f.password_users is not None:
        return f.password_users > 0
    if f.synapse is not None:
        return synapse_settings.password_login(f.settings)
    return True


def _passwords_enabled(f) -> bool:
    passwords = f.mas.raw.get("passwords")
    return (passwords if isinstance(passwords, dict) else {}).get("enabled", True) is not False


def _version_one(f):
    """(schemes, the version-1 scheme or None); NotRun, or None when nothing is to be checked."""
    if not _passwords_needed(f):
        return None
    if not _passwords_enabled(f):
        return NotRun("MAS's passwords are disabled")
    try:
        schemes = f.mas.password_schemes()
    except ConfigError:  # reported by mas_password_scheme_missing
        return None
    v1 = [scheme for scheme in schemes if str(scheme.get("version")) == "1"]
    return schemes, (v1[0] if v1 else None)


def _scheme_where(f, schemes, scheme) -> str:
    return f.mas.where(f"passwords.schemes[{schemes.index(scheme)}]")


@check("mas_passwords_disabled", MAS_CONFIG, "passwords.enabled")
def mas_passwords_disabled(f):
    if not _passwords_needed(f) or _passwords_enabled(f):
        return None
    return finding(ERROR, f"MAS's passwords.enabled is false: {_who(f)} could no longer log in",
                   f.mas.where("passwords.enabled"),
                   "Set passwords.enabled: true (with a version-1 bcrypt scheme), or move these users to an upstream "
                   "provider first")


@check("mas_password_scheme_missing", MAS_CONFIG, "passwords.schemes version 1", remedied_by=MAS_SYNAPSE_LINK)
def mas_password_scheme_missing(f):
    if not _passwords_needed(f):
        return None
    if not _passwords_enabled(f):
        return NotRun("MAS's passwords are disabled")
    try:
        schemes = f.mas.password_schemes()
    except ConfigError as exc:
        return finding(ERROR, str(exc), f.mas.where("passwords.schemes"), "Fix passwords.schemes",
                       check=MAS_CONFIG_INVALID)
    if any(str(scheme.get("version")) == "1" for scheme in schemes):
        return None
    example = ("passwords.schemes: [{version: 1, algorithm: bcrypt, unicode_normalization: true"
               + (", secret: <Synapse's pepper>" if synapse_settings.pepper(f.settings) else "")
               + "}, {version: 2, algorithm: argon2id}]")
    return finding(ERROR, ("passwords.schemes is not set, and MAS's default (version 1, argon2id) cannot check "
                           "Synapse's " if not schemes else "MAS has no password scheme version 1 to check Synapse's ")
                   + f"bcrypt hashes: {_who(f)} could not log in", f.mas.where("passwords.schemes"),
                   f"Add it: {example}")


@check("mas_password_scheme_not_bcrypt", MAS_CONFIG, "passwords.schemes version 1 algorithm",
       remedied_by=MAS_SYNAPSE_LINK)
def mas_password_scheme_not_bcrypt(f):
    found = _version_one(f)
    if not isinstance(found, tuple) or found[1] is None:
        return found if isinstance(found, NotRun) else None
    schemes, scheme = found
    if str(scheme.get("algorithm", "")).lower() == "bcrypt":
        return None
    example = "passwords.schemes: [{version: 1, algorithm: bcrypt, unicode_normalization: true"
    example += (", secret: <Synapse's pepper>" if synapse_settings.pepper(f.settings) else "")
    example += "}, {version: 2, algorithm: argon2id}]"
    return finding(ERROR, f"MAS's password scheme version 1 uses {scheme.get('algorithm')!r}, not bcrypt: {_who(f)} "
                   "could not log in", _scheme_where(f, schemes, scheme) + ".algorithm",
                   f"Set algorithm: bcrypt on version 1 ({example})")


@check("mas_password_unicode_normalization", MAS_CONFIG, "passwords.schemes version 1 unicode_normalization",
       remedied_by=MAS_SYNAPSE_LINK)
def mas_password_unicode_normalization(f):
    found = _version_one(f)
    if not isinstance(found, tuple) or found[1] is None:
        return found if isinstance(found, NotRun) else None
    schemes, scheme = found
    if scheme.get("unicode_normalization", False) is True:
        return None
    return finding(ERROR, "MAS's password scheme version 1 lacks unicode_normalization: true: passwords with non-ASCII "
                   "characters would no longer match (Synapse normalises them before hashing)",
                   _scheme_where(f, schemes, scheme) + ".unicode_normalization",
                   "Add unicode_normalization: true to the version-1 scheme (matrix-authentication-service#4598). "
                   "ERROR although mas-cli does not check it: those users would be silently locked out")


def _secret_verdict(f):
    """The one finding on the version-1 scheme's secret against Synapse's pepper (its `check` set), or
    NotRun, or None."""
    found = _version_one(f)
    if not isinstance(found, tuple) or found[1] is None:
        return found if isinstance(found, NotRun) else None
    schemes, scheme = found
    where, who = _scheme_where(f, schemes, scheme), _who(f)
    pepper = synapse_settings.pepper(f.settings)
    pepper_where = f.synapse_where("password_config.pepper")
    secret, secret_file = scheme.get("secret"), scheme.get("secret_file")
    if secret is not None and secret_file is not None:
        return finding(ERROR, "the version-1 scheme sets both secret and secret_file", where,
                       "Keep one of them (MAS refuses both)", check=MAS_CONFIG_INVALID)
    if secret_file is not None:
        return _secret_file_verdict(f.mas, str(secret_file), pepper, pepper_where, where + ".secret_file", who)
    secret = "" if secret is None else str(secret)
    if secret == pepper:
        return None
    state = ("Synapse has a pepper but the scheme has no secret" if pepper and not secret else
             "the scheme has a secret but Synapse has no pepper" if secret and not pepper else
             "the scheme's secret differs from Synapse's pepper")
    return finding(ERROR, f"{state} ({pepper_where}): {who} could not log in", where + ".secret",
                   "Set the version-1 scheme's secret to exactly Synapse's password_config.pepper"
                   + (" (or remove it: Synapse has none)" if not pepper else ""), check=PEPPER_MISMATCH)


def _secret_file_verdict(mas, path: str, pepper: str, pepper_where: str, where: str, who: str):
    try:  # where MAS's config was read: on MAS's own host, when it has one
        content = mas.read_named_file(path, where)
    except ConfigError as exc:
        reason = str(exc)
        for prefix in (where + ": ", f"cannot read {path}: ", path + ": "):
            reason = reason[len(prefix):] if reason.startswith(prefix) else reason
        return finding(ERROR, f"the version-1 scheme's secret_file {path} cannot be read ({reason}), so it "
                       "cannot be compared with Synapse's pepper", where,
                       "Run the advisor where MAS's files are, as a user that can read them", check=PEPPER_MISMATCH)
    if content == pepper:
        return None
    if content.rstrip("\r\n") == pepper:
        return finding(ERROR, f"the version-1 scheme's secret_file {path} holds Synapse's pepper followed by a "
                       "newline; MAS uses the file's bytes as they are, so no migrated password would match", where,
                       f"Write the file without the trailing newline (printf '%s' \"$PEPPER\" > {path}), or use "
                       "secret: instead", check=SECRET_FILE_NEWLINE)
    return finding(ERROR, f"the version-1 scheme's secret_file {path} does not hold Synapse's pepper ({pepper_where}): "
                   f"{who} could not log in", where,
                   "Put exactly Synapse's password_config.pepper in the file (no trailing newline)", check=PEPPER_MISMATCH)


PEPPER_MISMATCH, SECRET_FILE_NEWLINE = "mas_password_pepper_mismatch", "mas_password_secret_file_newline"


@check(PEPPER_MISMATCH, MAS_CONFIG, "passwords.schemes version 1 secret vs Synapse's pepper",
       needs=(MAS_CONFIG, SYNAPSE_CONFIG), remedied_by=MAS_SYNAPSE_LINK)
def mas_password_pepper_mismatch(f):
    verdict = _secret_verdict(f)
    return None if isinstance(verdict, dict) and verdict["check"] == SECRET_FILE_NEWLINE else verdict


@check(SECRET_FILE_NEWLINE, MAS_CONFIG, "passwords.schemes version 1 secret_file",
       needs=(MAS_CONFIG, SYNAPSE_CONFIG), remedied_by=MAS_SYNAPSE_LINK)
def mas_password_secret_file_newline(f):
    verdict = _secret_verdict(f)
    return verdict if not isinstance(verdict, dict) or verdict["check"] == SECRET_FILE_NEWLINE else None


@check("mas_answers", MAS_CONFIG, "MAS at its URL (mas_url): /health, its OpenID configuration's issuer, its "
       "compatibility login", needs=(MAS_CONFIG, MAS_HTTP))
def mas_answers(f):
    """Synapse is switched to MAS only when MAS answers as the MAS this config describes: the runbook
    gates on this before it stops Synapse."""
    return [finding(ERROR, c.message if c.url in c.message else f"{c.message} (asked at {c.url})", c.url,
                    c.remedy + ("" if "Synapse is not stopped" in c.remedy else
                                "; the runbook does not stop Synapse while MAS does not answer"))
            for c in f.mas_live if c.level != "OK"]
