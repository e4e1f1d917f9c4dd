# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""homeserver.yaml delegating authentication to MAS.

`plan_delegation` reads Synapse's effective configuration and lists the edits: the MAS block
(`matrix_authentication_service`, or `experimental_features.msc3861` for Synapse older than
1.136.0) and every setting Synapse refuses to start with once authentication is delegated
(Synapse's `check_config_conflicts`): switches are turned off, sections that must be absent
are removed. The plan is applied either to homeserver.yaml itself (`apply_in_place`) or as
one override file loaded after it (`apply_as_override`); Synapse merges its files by top-level
key, so an override carries whole copies of the sections it changes.
"""

from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import dataclass, field

from . import synapse_settings
from . import SynapseConfig
from ..errors import ConfigError
from .files import LOCAL_FILES
from .yaml_edit import CommentedMap, YamlDocument, delete_key, ensure_mapping, same, set_value, to_commented

STABLE_SINCE = (1, 136, 0)      # matrix_authentication_service section
MSC3861_REMOVED = (1, 157, 0)   # experimental_features.msc3861 is a hard error from here
DEFAULT_MSC3861_CLIENT_ID = "0000000000000000000SYNAPSE"
_REFUSED = "Synapse refuses to start with it when authentication is delegated to MAS"


def parse_version(text: str) -> tuple:
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not match:
        raise ConfigError(f"synapse_version: {text!r} is not a version like 1.136.0")
    return tuple(int(part or 0) for part in match.groups())


# Run with Synapse's interpreter: prints the installed matrix-synapse version.
SYNAPSE_VERSION_CODE = ("import importlib.metadata as m\n"
                        "try:\n print(m.version('matrix-synapse'))\n"
                        "except m.PackageNotFoundError:\n import synapse; print(synapse.__version__)\n")


def synapse_version_from_output(python: str, rc: int, stdout: str, stderr: str) -> str:
    """The version SYNAPSE_VERSION_CODE printed when run by `python`, or why there is none."""
    if rc != 0 or not stdout.strip():
        detail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"cannot detect Synapse's version with {python}: {detail}; set synapse_version")
    return stdout.strip().splitlines()[-1]


def detect_synapse_version(python: str) -> str:
    """The matrix-synapse version installed for the interpreter `python` on this machine."""
    try:
        proc = subprocess.run([python, "-c", SYNAPSE_VERSION_CODE], capture_output=True, text=True, timeout=60,
                              check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run {python} to detect Synapse's version: {exc.strerror}") from None
    return synapse_version_from_output(python, proc.returncode, proc.stdout, proc.stderr)


@dataclass
class DelegationSettings:
    endpoint: str
    secret: str | None = None
    secret_path: str | None = None
    synapse_version: str = ""
    # experimental_features.msc3861 (Synapse < 1.136.0) only
    issuer: str | None = None
    client_id: str = DEFAULT_MSC3861_CLIENT_ID
    client_auth_method: str = "client_secret_basic"
    client_secret: str | None = None
    client_secret_path: str | None = None
    account_management_url: str | None = None
    introspection_endpoint: str | None = None

    @property
    def legacy(self) -> bool:
        return parse_version(self.synapse_version) < STABLE_SINCE

    def validate(self):
        if not self.endpoint or not re.match(r"^https?://", str(self.endpoint)):
            raise ConfigError(f"endpoint: {self.endpoint!r} is not an http(s) URL (where Synapse reaches MAS)")
        if bool(self.secret) == bool(self.secret_path):
            raise ConfigError("set exactly one of secret and secret_path (the secret shared with MAS's matrix.secret)")
        if self.legacy:
            if not self.issuer:
                raise ConfigError(f"Synapse {self.synapse_version} predates matrix_authentication_service (1.136.0): "
                                  "experimental_features.msc3861 needs issuer (MAS's public URL)")
            if self.client_auth_method.startswith("client_secret") and bool(self.client_secret) == bool(
                    self.client_secret_path):
                raise ConfigError("experimental_features.msc3861: set exactly one of client_secret and "
                                  "client_secret_path (the secret of Synapse's client in MAS's `clients`)")

    def secrets(self) -> list:
        return [s for s in (self.secret, self.client_secret) if s]


@dataclass
class Edit:
    path: tuple        # key path, e.g. ("password_config", "enabled")
    action: str        # set, remove
    value: object = None
    reason: str = ""

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def report(self) -> dict:
        verb = {"remove": "removed"}.get(self.action, "set")
        if self.action == "set" and self.value is False:
            verb = "disabled"
        elif self.action == "set" and self.path[0] in ("matrix_authentication_service", "experimental_features"):
            verb = "set"
        return {"key": self.key, "action": verb, "reason": self.reason}


@dataclass
class DelegationPlan:
    edits: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    config_form: str = "matrix_authentication_service"


def mas_block(settings: DelegationSettings) -> tuple:
    """(key path, value) of the MAS block for this Synapse version."""
    if not settings.legacy:
        block = {"enabled": True, "endpoint": settings.endpoint}
        if settings.secret:
            block["secret"] = settings.secret
        else:
            block["secret_path"] = settings.secret_path
        return ("matrix_authentication_service",), block
    block = {"enabled": True, "issuer": settings.issuer, "client_id": settings.client_id,
             "client_auth_method": settings.client_auth_method}
    if settings.client_secret:
        block["client_secret"] = settings.client_secret
    elif settings.client_secret_path:
        block["client_secret_path"] = settings.client_secret_path
    if settings.secret:
        block["admin_token"] = settings.secret
    else:
        block["admin_token_path"] = settings.secret_path
    if settings.account_management_url:
        block["account_management_url"] = settings.account_management_url
    if settings.introspection_endpoint:
        block["introspection_endpoint"] = settings.introspection_endpoint
    return ("experimental_features", "msc3861"), block


def plan_delegation(raw: dict, settings: DelegationSettings, where=None) -> DelegationPlan:
    """The edits that make the Synapse configuration `raw` (PyYAML semantics) delegate to MAS.

    `where(key)` names the file a key comes from in messages (SynapseConfig.where).
    """
    where = where or (lambda key: key)
    settings.validate()

    def section(key):
        try:
            return synapse_settings.section(raw, key)
        except ConfigError:
            raise ConfigError(f"{where(key)}: expected a mapping, found {type(raw.get(key)).__name__}") from None

    for key in ("password_config", "oidc_config", "saml2_config", "cas_config", "jwt_config",
                "ldap_config", "login_via_existing_session", "experimental_features"):
        section(key)  # each section this plan may edit, checked once with the file it comes from
    plan = DelegationPlan(config_form="experimental_features.msc3861" if settings.legacy
                          else "matrix_authentication_service")
    plan.edits.extend(_conflict_edits(raw, settings.legacy, where))
    if settings.legacy:
        _legacy_block_edits(raw, settings, section, plan, where)
    else:
        _block_edits(raw, settings, section, plan)
    plan.warnings.extend(_left_as_they_are(raw))
    return plan


def _conflict_edits(raw: dict, legacy: bool, where) -> list:
    """Turning off what Synapse refuses next to MAS (synapse_settings.MAS_CONFLICTS)."""
    try:
        conflicts = synapse_settings.mas_conflicts(raw)
    except ConfigError as exc:
        key, _sep, problem = str(exc).partition(": ")
        raise ConfigError(f"{where(key)}: {problem}") from None
    edits = [Edit(c.path, "set", False, f"{c.reason}; {_REFUSED}") if c.edit == "disable"
             else Edit(c.path, "remove", None, f"{c.reason}; {_REFUSED}") for c in conflicts]
    # Synapse releases before the matrix_authentication_service section default these two to on.
    if legacy and "enabled" not in synapse_settings.section(raw, "password_config"):
        edits.append(Edit(("password_config", "enabled"), "set", False,
                          "password login moves to MAS (older Synapse releases default it to on)"))
    if legacy and "enable_3pid_changes" not in raw:
        edits.append(Edit(("enable_3pid_changes",), "set", False,
                          "email changes move to MAS (older Synapse releases default it to on)"))
    return edits


def _block_edits(raw: dict, settings: DelegationSettings, section, plan: DelegationPlan) -> None:
    """The matrix_authentication_service section (Synapse 1.136.0 and later), msc3861 gone."""
    experimental = section("experimental_features")
    if "msc3861" in experimental:
        reason = ("replaced by matrix_authentication_service; Synapse "
                  + ("1.157.0 and later refuse it" if parse_version(settings.synapse_version) >= MSC3861_REMOVED
                     else "refuses both at once"))
        if all(k == "msc3861" for k in experimental):
            plan.edits.append(Edit(("experimental_features",), "remove", None, "its only entry, msc3861, was " + reason))
        else:
            plan.edits.append(Edit(("experimental_features", "msc3861"), "remove", None, reason))
    block_path, block = mas_block(settings)
    existing = section("matrix_authentication_service")
    merged = dict(existing)
    for key in ("secret", "secret_path"):
        merged.pop(key, None)
    merged.update(block)
    if not same(existing, merged):
        plan.edits.append(Edit(block_path, "set", merged, "delegates authentication to MAS"))


def _legacy_block_edits(raw: dict, settings: DelegationSettings, section, plan: DelegationPlan, where) -> None:
    """experimental_features.msc3861, for a Synapse older than 1.136.0."""
    if raw.get("matrix_authentication_service") is not None:
        plan.edits.append(Edit(("matrix_authentication_service",), "remove", None,
                               f"Synapse {settings.synapse_version} does not know it; it uses "
                               "experimental_features.msc3861"))
    existing = section("experimental_features").get("msc3861") or {}
    if not isinstance(existing, dict):
        raise ConfigError(f"{where('experimental_features.msc3861')}: expected a mapping")
    block_path, block = mas_block(settings)
    merged = dict(existing)
    for key in ("client_secret", "client_secret_path", "admin_token", "admin_token_path"):
        merged.pop(key, None)
    merged.update(block)
    if not same(existing, merged):
        plan.edits.append(Edit(block_path, "set", merged,
                               f"delegates authentication to MAS (Synapse {settings.synapse_version} predates "
                               "matrix_authentication_service)"))
    plan.warnings.append(
        "experimental_features.msc3861: MAS needs Synapse as a client in its `clients` section (client_id "
        f"{settings.client_id}, the same client_secret) and matrix.kind synapse_legacy; upgrade Synapse to "
        "1.136.0 or later to use matrix_authentication_service instead")


def _left_as_they_are(raw: dict) -> list:
    """Warnings about what the plan does not change but MAS cannot carry on."""
    warnings = []
    if synapse_settings.flag(raw, "allow_guest_access"):
        warnings.append("allow_guest_access is true: MAS does not support guests (mas-cli syn2mas check "
                        "refuses it); not changed")
    if not synapse_settings.flag(raw, "password_config.localdb_enabled", True):
        warnings.append("password_config.localdb_enabled is false: passwords were checked by a provider "
                        "module; MAS cannot do that, those users need an upstream IdP")
    modules = raw.get("modules") or []
    names = [str(m.get("module")) for m in modules if isinstance(m, dict) and m.get("module")] \
        if isinstance(modules, list) else []
    if names:
        warnings.append("modules: " + ", ".join(names) + ": any password or SSO callbacks they register "
                        "stop being used once MAS handles logins; check them")
    return warnings


# --------------------------------------------------------------------------------------------
# Applying a plan


def _edit_in_tree(data, edit: Edit, where: str, note_removed=None):
    *parents, last = edit.path
    node = data
    for depth, key in enumerate(parents):
        node = ensure_mapping(node, key, f"{where}: {'.'.join(edit.path[:depth + 1])}")
    if edit.action == "remove":
        if note_removed is not None and not parents:
            return note_removed(last, edit.reason)
        return delete_key(node, last)
    if isinstance(edit.value, dict) and isinstance(node.get(last), dict):
        target = node[last]
        changed = False
        for key in list(target.keys()):
            if key not in edit.value:
                delete_key(target, key)
                changed = True
        for key, value in edit.value.items():
            changed |= set_value(target, key, value)
        return changed
    return set_value(node, last, edit.value)


def apply_in_place(doc: YamlDocument, plan: DelegationPlan, synapse: SynapseConfig, reader=LOCAL_FILES) -> None:
    """Applies the plan to homeserver.yaml's tree (`doc`, the file all edited keys come from)."""
    for edit in plan.edits:
        top = edit.path[0]
        origin = synapse.origin.get(top)
        if origin is not None and not reader.same_file(origin, doc.path):
            raise ConfigError(
                f"{origin}: {edit.key}: must change ({edit.reason}) but it is set in {origin}, not in "
                f"{doc.path}; edit that file or use the override mode (override_path)")
        _edit_in_tree(doc.data, edit, doc.path,
                      note_removed=lambda key, reason: doc.remove_top_level(
                          key, "removed by matrix.syn2mas: " + reason))


def override_values(raw: dict, plan: DelegationPlan) -> dict:
    """Top-level key -> whole value for an override file loaded after the other config files."""
    values: dict = {}
    for edit in plan.edits:
        top = edit.path[0]
        if len(edit.path) == 1:
            # Synapse reads a null like an absent key for each of these sections.
            values[top] = None if edit.action == "remove" else copy.deepcopy(edit.value)
            continue
        if top not in values or values[top] is None:
            current = raw.get(top)
            values[top] = copy.deepcopy(current) if isinstance(current, dict) else {}
        node = values[top]
        for key in edit.path[1:-1]:
            node = node.setdefault(key, {})
        if edit.action == "remove":
            node.pop(edit.path[-1], None)
        else:
            node[edit.path[-1]] = copy.deepcopy(edit.value)
    return values


OVERRIDE_HEADER = (
    "# Managed by matrix.syn2mas.synapse_auth_delegation: delegates authentication to MAS.\n"
    "# Load it after homeserver.yaml. Synapse merges its configuration files by top-level key,\n"
    "# so each section here replaces the whole section of homeserver.yaml.\n"
)


def apply_as_override(doc: YamlDocument, values: dict) -> None:
    """Sets the override file's top-level keys (other keys and comments in it are kept)."""
    for key, value in values.items():
        if key in doc.data and same(doc.data[key], value):
            continue
        if isinstance(value, dict) and isinstance(doc.data.get(key), dict):
            target = doc.data[key]
            for sub in list(target.keys()):
                if sub not in value:
                    delete_key(target, sub)
            for sub, sub_value in value.items():
                set_value(target, sub, sub_value)
        else:
            doc.data[key] = to_commented(value)


def new_override_document(path: str, reader=LOCAL_FILES) -> YamlDocument:
    doc = YamlDocument.load(path, missing_ok=True, default_style=(2, 4, 2), reader=reader)
    if not doc.exists:
        doc = YamlDocument(OVERRIDE_HEADER, path=path, exists=False, default_style=(2, 4, 2))
    return doc


def delegation_secrets(raw: dict, settings: DelegationSettings) -> list:
    """Secret values to keep out of results and diffs."""
    secrets = settings.secrets()
    password_config = raw.get("password_config")
    if isinstance(password_config, dict) and password_config.get("pepper"):
        secrets.append(str(password_config["pepper"]))
    return secrets


__all__ = [
    "CommentedMap", "DelegationPlan", "DelegationSettings", "Edit", "apply_as_override", "apply_in_place",
    "SYNAPSE_VERSION_CODE", "detect_synapse_version", "new_override_document", "override_values", "parse_version",
    "plan_delegation", "synapse_version_from_output",
]
