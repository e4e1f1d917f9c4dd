# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the matrix.syn2mas collection: what its modules share as Ansible adapters of the
# migration library (options, dependency checks). It can change at any time.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas import config as _config
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas import db as _db
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import Syn2masError, redact
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import LOCAL_FILES, FilesRead


def _yaml_edit():
    """The round-trip YAML editor, imported by the modules that edit files only: ruamel.yaml, which it imports
    when the host's Python has it, costs every other module's run tens of milliseconds."""
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config import yaml_edit  # pylint: disable=import-outside-toplevel
    return yaml_edit


def database_options(synapse_required=True, mapping=True):
    """The configuration files and database overrides (doc fragment matrix.syn2mas.syn2mas)."""
    options = dict(
        synapse_config=dict(type="list", elements="path", required=True) if synapse_required
        else dict(type="list", elements="path", default=[]),
        mas_config=dict(type="list", elements="path", default=[]),
        synapse_database_uri=dict(type="str", no_log=True),
        mas_database_uri=dict(type="str", no_log=True),
        **mas_host_options()
    )
    if mapping:
        options["upstream_provider_mapping"] = dict(type="list", elements="str", default=[])
    return options


def mas_host_options():
    """MAS's config files as read on MAS's own host (doc fragment matrix.syn2mas.syn2mas.mas_host)."""
    return dict(
        mas_host=dict(type="str"),
        # Only the files' texts are secret: paths and reasons stay readable in messages.
        mas_config_files=dict(type="dict", no_log=True),
        mas_config_errors=dict(type="dict", default={}),
    )


def mas_reader(params):
    """The reader of MAS's config files: this host's, or what was read on `mas_host`."""
    if not params.get("mas_host"):
        return LOCAL_FILES
    return FilesRead(params["mas_host"], params.get("mas_config_files") or {},
                     errors=params.get("mas_config_errors") or {})


def require_libraries(module, library_error=None, psycopg2=False, ruamel=False, yaml=True):
    """Fails the module, naming the missing Python package, when a dependency is not installed."""
    if library_error:
        module.fail_json(msg="cannot import the matrix.syn2mas library", exception=library_error)
    if psycopg2 and not _db.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=_db.PSYCOPG2_IMPORT_ERROR)
    if yaml and not _config.HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=_config.YAML_IMPORT_ERROR)
    if ruamel and not _yaml_edit().HAS_RUAMEL:
        module.fail_json(msg=missing_required_lib("ruamel.yaml"), exception=_yaml_edit().RUAMEL_IMPORT_ERROR)


def exit_with(module, run, unexpected=None):
    """Exits with the result of run(module), or fails with its Syn2masError's message (and the partial
    result the error carries, if any). A result's `warnings_found` are shown as Ansible warnings too
    (Ansible takes `warnings` out of a registered result). With `unexpected` ("the import"), any other
    exception is a bug, reported redacted with its traceback."""
    try:
        result = run(module)
    except Syn2masError as exc:
        partial = getattr(exc, "result", {})
        _warn(module, partial)
        module.fail_json(msg=str(exc), **partial)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if unexpected is None:
            raise
        module.fail_json(msg=redact(f"{unexpected} failed unexpectedly: {type(exc).__name__}: {exc}"), changed=False,
                         exception=redact(traceback.format_exc()))
    _warn(module, result)
    module.exit_json(**result)


def _warn(module, result):
    for warning in result.get("warnings_found", []):
        module.warn(warning)


def write_config_edit(module, edit):
    """Writes a ConfigEdit (module_utils._config_modules) on this host and returns the module's result.

    The module runs only where its action plugin is bypassed; the action plugin writes with
    ansible.builtin.copy instead. A new file gets `mode` (else the edit's default) and
    `owner`/`group` (else those of the file the edit names); an existing file keeps its own
    unless they are given.
    """
    params = module.params
    path = edit.doc.path
    result = dict(edit.result)
    result.update(_yaml_edit().commit(edit.doc, edit.new_text, module.check_mode, backup=params["backup"],
                                      secrets=edit.secrets, want_diff=module._diff,
                                      new_file_mode=int(edit.new_file_mode, 8)))
    owner, group, mode = params["owner"], params["group"], params["mode"]
    if not edit.doc.exists:
        mode = edit.new_file_mode if mode is None else mode
        if edit.new_file_owner_of and os.path.exists(edit.new_file_owner_of):
            like = os.stat(edit.new_file_owner_of)
            owner = str(like.st_uid) if owner is None else owner
            group = str(like.st_gid) if group is None else group
    target = os.path.realpath(path)
    if os.path.exists(target):
        changed = result["changed"]
        changed = module.set_owner_if_different(target, owner, changed)
        changed = module.set_group_if_different(target, group, changed)
        changed = module.set_mode_if_different(target, mode, changed)
        result["changed"] = changed
    for warning in edit.warnings:
        module.warn(warning)
    return result
