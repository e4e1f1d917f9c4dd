# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MAS's config.yaml matching the Synapse it takes over from: `matrix` and `passwords`.

`matrix.homeserver` must be Synapse's `server_name`; `matrix.endpoint` is where MAS reaches
Synapse; `matrix.secret` (or `secret_file`) is the secret shared with Synapse's
`matrix_authentication_service.secret`. Password scheme version 1 must verify the bcrypt
hashes Synapse wrote: bcrypt, `unicode_normalization: true` (Synapse NFKC-normalises
passwords) and `secret` equal to Synapse's `password_config.pepper` (or a `secret_file`
holding exactly the pepper: MAS reads that file as it is, without trimming). A higher version
(argon2id) hashes new passwords, so users' hashes are upgraded when they log in.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from . import synapse_settings
from . import SynapseConfig
from ..errors import ConfigError
from .files import LOCAL_FILES
from .yaml_edit import CommentedMap, CommentedSeq, delete_key, ensure_mapping, same, set_value

MIGRATED_PASSWORD_VERSION = 1
MAS_KINDS = ("synapse", "synapse_modern", "synapse_legacy", "synapse_read_only")

try:
    import bcrypt
except ImportError:  # pragma: no cover - only verify_password needs it
    bcrypt = None


@dataclass
class LinkSettings:
    endpoint: str | None = None
    secret: str | None = None
    secret_file: str | None = None
    pepper_file: str | None = None
    kind: str | None = None


@dataclass
class LinkResult:
    changes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def synapse_pepper(synapse: SynapseConfig) -> str | None:
    password_config = synapse.raw.get("password_config")
    if password_config is None:
        return None
    if not isinstance(password_config, dict):
        raise ConfigError(f"{synapse.where('password_config')}: expected a mapping")
    pepper = password_config.get("pepper")
    if pepper is None:
        return None
    if not isinstance(pepper, str):
        raise ConfigError(f"{synapse.where('password_config.pepper')}: expected a string")
    return pepper


def _check_pepper_file(path: str, pepper: str, reader) -> None:
    try:
        content = reader.read_bytes(path)
    except ConfigError as exc:
        raise ConfigError(f"pepper_file {exc}") from None
    wanted = pepper.encode("utf-8")
    if content == wanted:
        return
    if content.rstrip(b"\r\n") == wanted:
        raise ConfigError(f"pepper_file {path}: ends with a newline; MAS reads the file as it is (not trimmed), so "
                          "the pepper would not match Synapse's: write it without the trailing newline")
    raise ConfigError(f"pepper_file {path}: does not hold Synapse's password_config.pepper")


def apply_link(data, synapse: SynapseConfig, settings: LinkSettings, where: str, reader=LOCAL_FILES) -> LinkResult:
    """Edits MAS's config tree `data` in place; returns what changed and warnings.

    `reader` reads settings.pepper_file (to check it holds the pepper) where MAS will read it.
    """
    result = LinkResult()
    if settings.secret and settings.secret_file:
        raise ConfigError("set secret or secret_file, not both")
    if settings.kind is not None and settings.kind not in MAS_KINDS:
        raise ConfigError(f"kind: {settings.kind!r} is not one of {', '.join(MAS_KINDS)}")
    _link_matrix(data, synapse, settings, where, result)
    _link_passwords(data, synapse, settings, where, reader, result)
    return result


def _note(result: LinkResult, key: str, action: str, reason: str) -> None:
    result.changes.append({"key": key, "action": action, "reason": reason})


def _link_matrix(data, synapse: SynapseConfig, settings: LinkSettings, where: str, result: LinkResult) -> None:
    """MAS's `matrix` section: Synapse's server_name, where MAS reaches it, and the shared secret."""
    def note(key, action, reason):
        _note(result, key, action, reason)

    server_name = synapse.server_name
    matrix = ensure_mapping(data, "matrix", f"{where}: matrix")
    if set_value(matrix, "homeserver", server_name):
        note("matrix.homeserver", "set", "must equal Synapse's server_name")
    endpoint = settings.endpoint
    if endpoint is None and matrix.get("endpoint") is None:
        public = synapse.raw.get("public_baseurl")
        if not public:
            raise ConfigError(f"{where}: matrix.endpoint is not set and Synapse has no public_baseurl: pass endpoint "
                              "(the URL where MAS reaches Synapse, e.g. http://localhost:8008/)")
        endpoint = str(public)
        result.warnings.append(f"matrix.endpoint set to Synapse's public_baseurl {endpoint}: the reverse proxy must "
                               "forward /_synapse/mas with the Authorization header, or pass endpoint with Synapse's "
                               "internal listener")
    if endpoint is not None and set_value(matrix, "endpoint", endpoint):
        note("matrix.endpoint", "set", "where MAS reaches Synapse")
    if settings.kind is not None and set_value(matrix, "kind", settings.kind):
        note("matrix.kind", "set", "how MAS talks to Synapse")
    if settings.secret:
        changed = set_value(matrix, "secret", settings.secret)
        changed |= delete_key(matrix, "secret_file")
        if changed:
            note("matrix.secret", "set", "shared with Synapse's matrix_authentication_service.secret")
    elif settings.secret_file:
        changed = set_value(matrix, "secret_file", settings.secret_file)
        changed |= delete_key(matrix, "secret")
        if changed:
            note("matrix.secret_file", "set", "shared with Synapse's matrix_authentication_service.secret")
    elif matrix.get("secret") is None and matrix.get("secret_file") is None:
        raise ConfigError(f"{where}: matrix.secret is missing: pass secret or secret_file (the value of Synapse's "
                          "matrix_authentication_service.secret)")


def _password_schemes(data, where: str) -> tuple:
    """(passwords section, its schemes list, their versions), created when absent, each checked."""
    passwords = ensure_mapping(data, "passwords", f"{where}: passwords")
    schemes = passwords.get("schemes")
    if schemes is None:
        schemes = CommentedSeq()
        passwords["schemes"] = schemes
    if not isinstance(schemes, list):
        raise ConfigError(f"{where}: passwords.schemes: expected a list, found {type(schemes).__name__}")
    versions = []
    for index, scheme in enumerate(schemes):
        if not isinstance(scheme, dict):
            raise ConfigError(f"{where}: passwords.schemes[{index}]: expected a mapping")
        if not isinstance(scheme.get("version"), int) or isinstance(scheme.get("version"), bool):
            raise ConfigError(f"{where}: passwords.schemes[{index}].version: missing or not a number")
        if scheme["version"] in versions:
            raise ConfigError(f"{where}: passwords.schemes: version {scheme['version']} appears twice")
        versions.append(scheme["version"])
    return passwords, schemes, versions


# Longer than a screen: the version-1 scheme's rules in the order they apply (a non-bcrypt version 1
# renumbered, version 1 added, normalisation, cost, pepper, a newer scheme for new passwords).
def _link_passwords(data, synapse: SynapseConfig, settings: LinkSettings, where: str, reader,
                    result: LinkResult) -> None:
    """MAS's password schemes: version 1 verifies Synapse's bcrypt hashes (with its pepper), a newer one
    hashes new passwords."""
    def note(key, action, reason):
        _note(result, key, action, reason)

    pepper = synapse_pepper(synapse)
    passwords, schemes, versions = _password_schemes(data, where)

    v1 = next((s for s in schemes if s["version"] == MIGRATED_PASSWORD_VERSION), None)
    if v1 is not None and str(v1.get("algorithm", "")) != "bcrypt":
        new_version = 2 if 2 not in versions else max(versions) + 1
        old = v1.get("algorithm")
        v1["version"] = new_version
        versions.append(new_version)
        note(f"passwords.schemes (version 1, {old})", "renumbered",
             f"now version {new_version}: version 1 must be bcrypt to verify the hashes imported from Synapse")
        v1 = None
    if v1 is None:
        v1 = CommentedMap()
        v1["version"] = MIGRATED_PASSWORD_VERSION
        v1["algorithm"] = "bcrypt"
        schemes.insert(0, v1)
        note("passwords.schemes[version 1]", "added", "bcrypt, verifies the password hashes imported from Synapse")
    changed = set_value(v1, "unicode_normalization", True)
    rounds = synapse.raw.get("bcrypt_rounds")
    if isinstance(rounds, int) and not isinstance(rounds, bool):
        changed |= set_value(v1, "cost", rounds)
    if pepper:
        if settings.pepper_file:
            _check_pepper_file(settings.pepper_file, pepper, reader)
            changed |= set_value(v1, "secret_file", settings.pepper_file)
            changed |= delete_key(v1, "secret")
        else:
            changed |= set_value(v1, "secret", pepper)
            changed |= delete_key(v1, "secret_file")
    else:
        changed |= delete_key(v1, "secret")
        changed |= delete_key(v1, "secret_file")
        if pepper == "":
            result.warnings.append(
                f"{synapse.where('password_config.pepper')}: set to an empty string, which is no pepper; remove it "
                "(mas-cli syn2mas check treats an explicit empty pepper as different from MAS's none)")
        if settings.pepper_file:
            result.warnings.append("pepper_file ignored: Synapse has no password_config.pepper")
    if changed:
        note("passwords.schemes[version 1]", "set",
             "bcrypt with unicode_normalization (Synapse NFKC-normalises passwords)"
             + (" and Synapse's pepper as secret" if pepper else ""))
    if not any(v > MIGRATED_PASSWORD_VERSION for v in versions):
        v2 = CommentedMap()
        v2["version"] = 2
        v2["algorithm"] = "argon2id"
        schemes.append(v2)
        note("passwords.schemes[version 2]", "added", "argon2id hashes new passwords; hashes upgrade on login")
    if passwords.get("enabled") is False:
        result.warnings.append("passwords.enabled is false in MAS: the imported password hashes will not be usable")
    if isinstance(synapse.raw.get("password_config"), dict) and not synapse_settings.flag(
            synapse.raw, "password_config.localdb_enabled", True):
        result.warnings.append("Synapse's password_config.localdb_enabled is false: its users logged in through a "
                               "password provider, which MAS cannot use")


def schemes_summary(data) -> list:
    """The password schemes without secret values, for results."""
    out = []
    passwords = data.get("passwords") or {}
    for scheme in (passwords.get("schemes") or []) if isinstance(passwords, dict) else []:
        if not isinstance(scheme, dict):
            continue
        item = {"version": scheme.get("version"), "algorithm": scheme.get("algorithm"),
                "unicode_normalization": bool(scheme.get("unicode_normalization", False)),
                "has_secret": scheme.get("secret") is not None or scheme.get("secret_file") is not None}
        if scheme.get("secret_file") is not None:
            item["secret_file"] = str(scheme["secret_file"])
        if scheme.get("cost") is not None:
            item["cost"] = scheme.get("cost")
        out.append(item)
    return out


def matrix_summary(data) -> dict:
    matrix = data.get("matrix") or {}
    return {
        "homeserver": matrix.get("homeserver"), "endpoint": matrix.get("endpoint"), "kind": matrix.get("kind"),
        "secret_file": matrix.get("secret_file"),
        "has_secret": matrix.get("secret") is not None or matrix.get("secret_file") is not None,
    }


def verify_password(scheme: dict, password: str, hashed: str) -> bool:
    """Whether MAS, with this bcrypt password scheme, accepts `password` for the hash `hashed`.

    Mirrors MAS's bcrypt hasher: NFKC-normalise when `unicode_normalization` is set, append the
    scheme's secret (or the raw bytes of its secret_file), bcrypt looks at the first 72 bytes.
    """
    if bcrypt is None:
        raise ConfigError("bcrypt is required to verify password hashes")
    if str(scheme.get("algorithm")) != "bcrypt":
        raise ConfigError(f"password scheme version {scheme.get('version')} is {scheme.get('algorithm')}, not bcrypt")
    if scheme.get("unicode_normalization"):
        password = unicodedata.normalize("NFKC", password)
    data = password.encode("utf-8")
    if scheme.get("secret") is not None:
        data += str(scheme["secret"]).encode("utf-8")
    elif scheme.get("secret_file") is not None:
        with open(str(scheme["secret_file"]), "rb") as handle:
            data += handle.read()
    return bcrypt.checkpw(data[:72], hashed.encode("ascii"))


def link_secrets(synapse: SynapseConfig, settings: LinkSettings, data=None) -> list:
    secrets = [s for s in (settings.secret,) if s]
    pepper = synapse_pepper(synapse)
    if pepper:
        secrets.append(pepper)
    if data is not None:
        matrix = data.get("matrix") or {}
        if isinstance(matrix, dict) and matrix.get("secret"):
            secrets.append(str(matrix["secret"]))
    return secrets


__all__ = ["LinkSettings", "apply_link", "matrix_summary", "schemes_summary", "verify_password", "same"]
