# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the matrix.syn2mas collection: what the configuration modules (synapse_auth_delegation,
# mas_synapse_link, mas_upstream_provider) do, shared by their action plugins (which run it on the
# controller, reading the managed host's files) and the modules themselves (which run it on the host).
# It computes the new file text and the results; writing is left to the caller. Plain Python: no
# Ansible imports. It can change at any time.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass, field

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config import load_synapse_config
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import ConfigError
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import FilesRead
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.mas_synapse_link import (
    MAS_KINDS, LinkSettings, apply_link, link_secrets, matrix_summary, schemes_summary,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.synapse_auth_delegation import (
    DEFAULT_MSC3861_CLIENT_ID, DelegationSettings, apply_as_override, apply_in_place, delegation_secrets, new_override_document,
    override_values, plan_delegation,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.mas_upstream_provider import (
    apply_providers, convert_provider, redirect_uri, remove_providers, select_providers,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.yaml_edit import YamlDocument, plain

# Where the packages of packages.matrix.org install Synapse.
DEBIAN_SYNAPSE_PYTHON = "/opt/venvs/matrix-synapse/bin/python"

# The written file's attributes and backup (doc fragment matrix.syn2mas.config_edit).
FILE_OPTIONS = dict(
    backup=dict(type="bool", default=False),
    owner=dict(type="str"),
    group=dict(type="str"),
    mode=dict(type="raw"),
)

# Synapse's configuration as read on the Synapse host, for the edits of MAS's config that run against MAS's
# own host (doc fragment matrix.syn2mas.config_edit.synapse_host). Only the files' texts are secret.
SYNAPSE_HOST_OPTIONS = dict(
    synapse_host=dict(type="str"),
    synapse_config_files=dict(type="dict", no_log=True),
    synapse_config_dirs=dict(type="dict", default={}),
    synapse_config_errors=dict(type="dict", default={}),
)

SYNAPSE_AUTH_DELEGATION_SPEC = dict(
    argument_spec=dict(
        path=dict(type="path", required=True),
        extra_config_paths=dict(type="list", elements="path", default=[]),
        override_path=dict(type="path"),
        endpoint=dict(type="str", required=True),
        secret=dict(type="str", no_log=True),
        secret_path=dict(type="path"),
        synapse_version=dict(type="str"),
        synapse_python=dict(type="path"),
        issuer=dict(type="str"),
        client_id=dict(type="str", default=DEFAULT_MSC3861_CLIENT_ID),
        client_auth_method=dict(type="str", default="client_secret_basic",
                                choices=["client_secret_basic", "client_secret_post"]),
        client_secret=dict(type="str", no_log=True),
        client_secret_path=dict(type="path"),
        account_management_url=dict(type="str"),
        introspection_endpoint=dict(type="str"),
        **FILE_OPTIONS
    ),
    mutually_exclusive=[["secret", "secret_path"], ["client_secret", "client_secret_path"]],
    required_one_of=[["secret", "secret_path"]],
)

MAS_SYNAPSE_LINK_SPEC = dict(
    argument_spec=dict(
        path=dict(type="path", required=True),
        synapse_config=dict(type="list", elements="path", required=True),
        endpoint=dict(type="str"),
        secret=dict(type="str", no_log=True),
        secret_file=dict(type="path"),
        pepper_file=dict(type="path"),
        kind=dict(type="str", choices=list(MAS_KINDS)),
        **SYNAPSE_HOST_OPTIONS,
        **FILE_OPTIONS
    ),
    mutually_exclusive=[["secret", "secret_file"]],
)

MAS_UPSTREAM_PROVIDER_SPEC = dict(
    argument_spec=dict(
        path=dict(type="path", required=True),
        synapse_config=dict(type="list", elements="path"),
        synapse_idp_id=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        public_base=dict(type="str"),
        **SYNAPSE_HOST_OPTIONS,
        **FILE_OPTIONS
    ),
)


@dataclass
class ConfigEdit:
    """One file's new text, with the module's results; the caller writes it."""

    doc: YamlDocument         # the file as it was read (path, exists, original_text)
    new_text: str
    result: dict              # the module's own return values (without changed, diff, backup_file)
    secrets: list = field(default_factory=list)   # values to keep out of the diff
    warnings: list = field(default_factory=list)
    new_file_mode: str = "0600"                   # a new file's mode unless `mode` is given
    new_file_owner_of: str = None                 # a new file takes this file's owner and group


def edit_synapse_auth_delegation(params, reader, detect_version):
    """homeserver.yaml (or the override file) delegating to MAS.

    `detect_version(python)` returns the version of the Synapse that `python` runs (None: the
    interpreter that runs modules on that host).
    """
    path = params["path"]
    override = params["override_path"]
    # The override file is about to be rewritten: what it says now must not count.
    synapse = load_synapse_config([path] + list(params["extra_config_paths"] or []), reader,
                                  exclude=[override] if override else ())

    version = params["synapse_version"]
    if not version:
        python = params["synapse_python"]
        if not python and reader.is_file(DEBIAN_SYNAPSE_PYTHON):
            python = DEBIAN_SYNAPSE_PYTHON
        version = detect_version(python)

    settings = DelegationSettings(
        endpoint=params["endpoint"], secret=params["secret"], secret_path=params["secret_path"],
        synapse_version=version, issuer=params["issuer"], client_id=params["client_id"],
        client_auth_method=params["client_auth_method"], client_secret=params["client_secret"],
        client_secret_path=params["client_secret_path"],
        account_management_url=params["account_management_url"],
        introspection_endpoint=params["introspection_endpoint"],
    )
    plan = plan_delegation(synapse.raw, settings, synapse.where)
    if override:
        doc = new_override_document(override, reader)
        apply_as_override(doc, override_values(synapse.raw, plan))
    else:
        doc = YamlDocument.load(path, default_style=(2, 4, 2), reader=reader)
        apply_in_place(doc, plan, synapse, reader)
    result = {
        "path": doc.path,
        "edit_mode": "override" if override else "in_place",
        "synapse_version": version,
        "config_form": plan.config_form,
        "changes": [edit.report() for edit in plan.edits],
    }
    # A new override file is read by Synapse's user, which reads its files by group (Debian's
    # matrix-synapse): like homeserver.yaml's owner and group, never world-readable.
    return ConfigEdit(doc=doc, new_text=doc.render(), result=result, secrets=delegation_secrets(synapse.raw, settings),
                      warnings=list(plan.warnings), new_file_mode="0640", new_file_owner_of=path)


def synapse_files(params, reader):
    """Where Synapse's configuration is read: `reader` (the host MAS's config is on), or what was read
    on `synapse_host` when that is another host; then its paths never reach `reader`."""
    if not params.get("synapse_host"):
        return reader
    return FilesRead(params["synapse_host"], params.get("synapse_config_files") or {},
                     dirs=params.get("synapse_config_dirs"), errors=params.get("synapse_config_errors"))


def edit_mas_synapse_link(params, reader):
    """MAS's config.yaml linked to Synapse, with password schemes for Synapse's hashes."""
    synapse = load_synapse_config(params["synapse_config"], synapse_files(params, reader))
    doc = YamlDocument.load(params["path"], reader=reader)
    settings = LinkSettings(endpoint=params["endpoint"], secret=params["secret"],
                            secret_file=params["secret_file"], pepper_file=params["pepper_file"],
                            kind=params["kind"])
    secrets = link_secrets(synapse, settings, doc.data)
    outcome = apply_link(doc.data, synapse, settings, params["path"], reader)
    result = {
        "matrix": plain(matrix_summary(doc.data)),
        "password_schemes": plain(schemes_summary(doc.data)),
        "changes": outcome.changes,
    }
    return ConfigEdit(doc=doc, new_text=doc.render(), result=result, secrets=secrets, warnings=outcome.warnings)


def _selected_providers(synapse, wanted, warnings: list) -> list:
    """Synapse's OIDC providers the edit is about: `wanted`, or all that Synapse enables."""
    if synapse is None:
        raise ConfigError("synapse_config is required with state=present, or to remove all providers")
    selected = select_providers(synapse, wanted)
    if wanted is not None:
        return selected
    kept = []
    for provider in selected:
        if provider.source.endswith("oidc_config") and provider.config.get("enabled") is not True:
            warnings.append(
                f"{provider.source}: skipped: Synapse ignores oidc_config unless `enabled: true` (select it "
                "with synapse_idp_id if users are still linked to it)")
            continue
        kept.append(provider)
    return kept


def _provider_item(change, entry: dict, converted, public_base) -> dict:
    """One provider of the module's result: what was done to it, and its redirect URI."""
    return {
        "synapse_idp_id": change.synapse_idp_id,
        "id": change.id,
        "action": change.action,
        "human_name": entry.get("human_name"),
        "issuer": entry.get("issuer"),
        "redirect_uri": redirect_uri(public_base, change.id) if change.id and change.action != "removed" else None,
        "source": converted.source if converted else None,
        "warnings": list(converted.warnings) if converted else [],
    }


def edit_mas_upstream_provider(params, reader):
    """MAS's upstream_oauth2.providers converted from Synapse's OIDC providers (or removed)."""
    path = params["path"]
    doc = YamlDocument.load(path, reader=reader)
    result = {"providers": [], "redirect_uris": {}}
    warnings = []
    secrets = []
    wanted = params["synapse_idp_id"]

    synapse = (load_synapse_config(params["synapse_config"], synapse_files(params, reader))
               if params["synapse_config"] else None)
    selected = []
    if params["state"] == "present" or wanted is None:
        selected = _selected_providers(synapse, wanted, warnings)
        secrets.extend(str(p.config["client_secret"]) for p in selected if p.config.get("client_secret"))

    if params["state"] == "present":
        converted = [convert_provider(p) for p in selected]
        changes = apply_providers(doc.data, converted, path, synapse.server_name)
        by_id = {c.synapse_idp_id: c for c in converted}
    else:
        if wanted is not None and synapse is None:
            ids = [wanted]
            section = doc.data.get("upstream_oauth2") or {}
            known = [str(p.get("synapse_idp_id")) for p in (section.get("providers") or []) if isinstance(p, dict)]
            if wanted not in known and ("oidc-" + wanted) in known:
                ids = ["oidc-" + wanted]
        else:
            ids = [p.auth_provider for p in selected]
        changes = remove_providers(doc.data, ids, path)
        by_id = {}

    http = doc.data.get("http") or {}
    public_base = params["public_base"] or (http.get("public_base") if isinstance(http, dict) else None)
    for change in changes:
        entry = plain(change.entry) if change.entry is not None else {}
        item = _provider_item(change, entry, by_id.get(change.synapse_idp_id), public_base)
        if entry.get("client_secret"):
            secrets.append(str(entry["client_secret"]))
        result["providers"].append(item)
        if item["redirect_uri"]:
            result["redirect_uris"][change.synapse_idp_id] = item["redirect_uri"]
        warnings.extend(item["warnings"])
    if params["state"] == "present" and result["providers"] and not public_base:
        warnings.append(f"{path}: http.public_base is not set: cannot tell the redirect URIs (pass public_base)")
    return ConfigEdit(doc=doc, new_text=doc.render(), result=result, secrets=secrets, warnings=warnings)
