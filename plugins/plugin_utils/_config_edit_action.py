# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the matrix.syn2mas collection: the action plugins of the configuration modules. It can
# change at any time.
"""Configuration edits run on the controller.

The managed host needs nothing but what any Ansible module needs: the configuration files and directories an
edit names are read in one round trip with syn2mas_read_config (standard library only), any other file with
ansible.builtin.stat, find and slurp; Synapse's version (unless given) is asked with ansible.builtin.command,
the migration library computes the new text here (ruamel.yaml is needed on the controller only),
and ansible.builtin.copy writes it back (atomic, keeps an existing file's owner, mode and SELinux
context, makes the backup). The diff is the library's, with secrets redacted; copy's own diff
stays off, since it would show them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import posixpath
import shlex
import sys

from ansible.errors import AnsibleAction
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config import yaml_edit
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import ConfigError, Syn2masError
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import ConfigFileMissing, decode_text
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.synapse_auth_delegation import (
    SYNAPSE_VERSION_CODE, synapse_version_from_output,
)


def missing_controller_library():
    """Why the edit cannot run on this controller (a missing Python library), or None."""
    if not yaml_edit.HAS_RUAMEL:
        return (f"Failed to import the required Python library (ruamel.yaml) on the Ansible controller's Python "
                f"{sys.executable}. The configuration edits run on the controller: install it in the "
                "controller's Python (pip install ruamel.yaml). The managed hosts need nothing added.")
    if yaml_edit.pyyaml is None:
        return (f"Failed to import the required Python library (PyYAML) on the Ansible controller's Python "
                f"{sys.executable}: install it in the controller's Python (pip install PyYAML).")
    return None


# Reads a set of files and directories in one module run (standard library only, so on a bare host Python too).
READ_CONFIG_MODULE = "matrix.syn2mas.syn2mas_read_config"


class _IsADirectory(ConfigError):
    pass


def _read_error(path, message):
    """The library's error for ansible.builtin.slurp's failure message (its wording varies by release)."""
    lowered = message.lower()
    if "not found" in lowered:
        return ConfigFileMissing(f"{path}: file not found")
    if "not readable" in lowered:
        return ConfigError(f"{path}: permission denied (run as a user that can read it, e.g. with become)")
    if "is a directory" in lowered:
        return _IsADirectory(f"{path}: is a directory, expected a file")
    return ConfigError(f"{path}: cannot read it on the host: {message}")


class ManagedHost:
    """The managed host over Ansible's connection: its files (a reader for the library, see files.py)
    and its commands. Paths are the host's; every error names the host's path. What was read is kept
    for the task's run.
    """

    def __init__(self, action, task_vars):
        self._action = action
        self._task_vars = task_vars
        self._stats = {}
        self._contents = {}
        self._dirs = {}  # a configuration directory read beforehand -> its *.yaml files
        self._listed = set()  # the *.yaml files of those directories (regular files)

    def read_beforehand(self, paths):
        """Reads `paths` (files, and the *.yaml files of directories) in one module run on the host, for the edit
        to find them here: one round trip instead of one for each file and directory. What could not be read
        there, but for a missing file, is left to be read as usual, which reports it as it always does."""
        paths = [path for path in dict.fromkeys(paths) if path]
        if not paths:
            return
        answer = self._read(READ_CONFIG_MODULE, dict(paths=paths))
        if answer.get("failed"):
            return  # e.g. the library does not import there: each file is read on its own, as before
        for path, text in (answer.get("files") or {}).items():
            self._contents.setdefault(path, text.encode("utf-8"))
        for path, names in (answer.get("dirs") or {}).items():
            self._dirs[path] = list(names)
            self._listed.update(posixpath.join(path, name) for name in names)
        for path, why in (answer.get("errors") or {}).items():
            if why == "file not found":
                self._contents.setdefault(path, ConfigFileMissing(f"{path}: file not found"))

    def _module(self, name, args):
        return self._action._execute_module(module_name=name, module_args=args, task_vars=self._task_vars)

    def _read(self, name, args):
        """A module run whose output holds the files' texts (secrets): the connection is told not to show it (the
        ssh connection prints each command's output at -vvv otherwise, even of a task without no_log)."""
        # The connection's own context (a copy of the task's when the task is delegated).
        contexts = {id(c): c for c in (self._action._play_context, self._action._connection._play_context)}.values()
        censored = [(context, context.no_log) for context in contexts]
        for context, _was in censored:
            context.no_log = True
        try:
            return self._module(name, args)
        finally:
            for context, was in censored:
                context.no_log = was

    def stat(self, path):
        """ansible.builtin.stat's answer for `path`, links followed."""
        if path not in self._stats:
            answer = self._module("ansible.legacy.stat", dict(path=path, follow=True, get_checksum=False,
                                                              get_mime=False, get_attributes=False))
            if answer.get("failed"):
                raise ConfigError(f"{path}: cannot look at it on the host: {answer.get('msg')}")
            self._stats[path] = answer["stat"]
        return self._stats[path]

    def forget(self, path):
        """Drops what is known of `path` (it was written)."""
        self._stats.pop(path, None)
        self._contents.pop(path, None)
        self._listed.discard(path)

    def is_dir(self, path):
        if path in self._dirs:
            return True
        # One round trip less per file: the path is read right away (a configuration file is read next
        # anyway), and only a directory cannot be. Unreadable or missing: not a directory, as for Synapse.
        try:
            self.read_bytes(path)
        except _IsADirectory:
            return True
        except ConfigError:
            return False
        return False

    def is_file(self, path):
        if path in self._listed:
            return True
        return bool(self.stat(path).get("isreg"))

    def list_dir(self, path):
        if path in self._dirs:
            # Only its *.yaml files, all a configuration directory is read for (config.synapse_config_files).
            return list(self._dirs[path])
        answer = self._module("ansible.legacy.find", dict(paths=[path], file_type="any", hidden=True,
                                                          recurse=False))
        if answer.get("failed") or answer.get("skipped_paths"):
            detail = "; ".join(str(v) for v in (answer.get("skipped_paths") or {}).values()) or answer.get("msg")
            raise ConfigError(f"{path}: cannot list the directory: {detail}")
        names = []
        for entry in answer.get("files", []):
            name = posixpath.basename(entry["path"])
            names.append(name)
            if not entry.get("islnk"):
                # What find saw is what stat (links followed) would say: no need to ask again.
                self._stats.setdefault(posixpath.join(path, name),
                                       dict(entry, exists=True, isreg=bool(entry.get("isreg"))))
        return names

    def read_bytes(self, path):
        if path not in self._contents:
            answer = self._read("ansible.legacy.slurp", dict(src=path))
            if answer.get("failed"):
                self._contents[path] = _read_error(path, str(answer.get("msg", "")))
            else:
                self._contents[path] = base64.b64decode(answer["content"])
        content = self._contents[path]
        if isinstance(content, ConfigError):
            raise content
        return content

    def read_text(self, path):
        return decode_text(path, self.read_bytes(path))

    def same_file(self, first, second):
        """Whether two paths name the same file on the host (device and inode; absent: the same path)."""
        if posixpath.normpath(first) == posixpath.normpath(second):
            return True
        if any(isinstance(self._contents.get(path), ConfigFileMissing) for path in (first, second)):
            return False  # known to be absent (read beforehand, or read already): no need to ask
        one, other = self.stat(first), self.stat(second)
        if not (one.get("exists") and other.get("exists")):
            return False
        return (one.get("dev"), one.get("inode")) == (other.get("dev"), other.get("inode"))

    def run_action(self, name, args, check_mode):
        """Runs another action (copy, command) on this task's host, connection and become."""
        action = self._action
        task = action._task.copy()
        task.args = args
        task.check_mode = check_mode
        task.diff = False  # copy's diff would show the secrets; the edit's own diff is redacted
        other = action._shared_loader_obj.action_loader.get(
            name, task=task, connection=action._connection, play_context=action._play_context, loader=action._loader,
            templar=action._templar, shared_loader_obj=action._shared_loader_obj)
        return other.run(task_vars=self._task_vars)

    def synapse_version(self, python):
        """The version of the Synapse `python` runs on the host (None: the host's module interpreter).

        Asked in check mode too: it only reads.
        """
        if python:
            argv = [python]
        else:
            # The interpreter the last module ran with (ansible_python_interpreter or discovered).
            shebang = self._action._used_interpreter or "#!python3"
            argv = shlex.split(shebang.lstrip("#!").strip()) or ["python3"]
        answer = self.run_action("ansible.legacy.command", dict(argv=argv + ["-c", SYNAPSE_VERSION_CODE]),
                                 check_mode=False)
        if answer.get("failed") and not (answer.get("stdout") or answer.get("stderr")):
            # The interpreter could not be started at all (the command module says why).
            raise ConfigError(f"cannot run {' '.join(argv)} on the host to detect Synapse's version: "
                              f"{answer.get('msg')}; set synapse_version or synapse_python")
        return synapse_version_from_output(" ".join(argv), int(answer.get("rc", 1)), answer.get("stdout", ""),
                                           answer.get("stderr", ""))


class ConfigEditAction(ActionBase):
    """An action plugin that edits one configuration file of the managed host on the controller.

    Subclasses set SPEC (the module's argument spec, from module_utils._config_modules) and
    implement edit(params, host) returning a ConfigEdit (module_utils._config_modules).
    """

    SPEC = None

    def edit(self, params, host):
        raise NotImplementedError

    def reads(self, params):
        """The host's files and directories the edit reads, read beforehand in one round trip (ManagedHost)."""
        del params  # unused: none by default, each file is read when the edit asks for it
        return []

    def run(self, tmp=None, task_vars=None):
        result = super(ConfigEditAction, self).run(tmp, task_vars)
        del tmp  # unused
        task_vars = task_vars or {}
        no_log_values = set()
        try:
            validation, params = self.validate_argument_spec(**self.SPEC)
            no_log_values = validation._no_log_values
            # Plain Python values: ruamel.yaml cannot write the str subclasses Ansible tags values with.
            params = yaml_edit.plain(params)
            missing = missing_controller_library()
            if missing:
                result.update(failed=True, msg=missing)
                return result
            host = ManagedHost(self, task_vars)
            host.read_beforehand(self.reads(params))
            edit = self.edit(params, host)
            result.update(edit.result)
            written = self._write(edit, params, host)
            if "path" in edit.result:
                result.update(self._path_info(edit.result["path"], host, written.pop("copied", None)))
            result.update(written)
            if edit.warnings:
                result["warnings"] = list(result.get("warnings", [])) + list(edit.warnings)
        except Syn2masError as exc:
            result.update(failed=True, msg=str(exc))
        except AnsibleAction as exc:
            result.update(exc.result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if self._discovered_interpreter_key:
            # As a module's result would: the host's interpreter is not discovered again.
            result.setdefault("ansible_facts", {})[self._discovered_interpreter_key] = self._discovered_interpreter
        return remove_values(result, no_log_values)

    def _write(self, edit, params, host):
        """changed, diff and backup_file; the file written with ansible.builtin.copy unless in check mode."""
        doc = edit.doc
        report = yaml_edit.change_report(doc, edit.new_text, edit.secrets, want_diff=bool(self._task.diff))
        attributes = {key: params[key] for key in ("owner", "group", "mode") if params.get(key) is not None}
        if not report["changed"] and not attributes:
            return report
        if self._task.check_mode and not attributes:
            return report  # only the text changes: nothing more to predict
        if not doc.exists:
            attributes.setdefault("mode", edit.new_file_mode)
            like = host.stat(edit.new_file_owner_of) if edit.new_file_owner_of else {}
            if like.get("exists"):
                attributes.setdefault("owner", like.get("pw_name") or str(like["uid"]))
                attributes.setdefault("group", like.get("gr_name") or str(like["gid"]))
        copied = host.run_action("ansible.legacy.copy", dict(
            dest=doc.path, content=edit.new_text, follow=True, force=True, decrypt=False,
            backup=params["backup"], **attributes), check_mode=bool(self._task.check_mode))
        if copied.get("failed"):
            raise ConfigError(f"{doc.path}: cannot write it on the host: {copied.get('msg')}")
        report["changed"] = bool(copied.get("changed"))
        if copied.get("backup_file"):
            report["backup_file"] = copied["backup_file"]
        if not self._task.check_mode:
            report["copied"] = copied
        return report

    @staticmethod
    def _path_info(path, host, copied):
        """The written file's owner, group, mode and size, as a module returning `path` reports them."""
        keys = ("uid", "gid", "owner", "group", "mode", "state", "size")
        if copied and all(key in copied for key in keys):
            return {key: copied[key] for key in keys}
        if copied:
            host.forget(path)  # written since it was last looked at
        st = host.stat(path)
        if not st.get("exists"):
            return {"state": "absent"}
        return {"uid": st["uid"], "gid": st["gid"], "owner": st.get("pw_name") or str(st["uid"]),
                "group": st.get("gr_name") or str(st["gid"]), "mode": st["mode"], "state": "file",
                "size": st["size"]}
