"""Test harness, not part of the collection: `save_result` writes a task's registered result (templated into
`content`) to `dest` from the controller, 0600, so that a test reads it back. It runs no module on the host:
ansible.builtin.copy, which the tests used before, runs two (stat, then copy) for every result saved, more CPU
than most of the tasks whose results it saved. Found through ANSIBLE_ACTION_PLUGINS (ansible_run.HARNESS_ENV)."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    _supports_check_mode = True
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dest, content = self._task.args["dest"], self._task.args["content"]
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(str(content))
        result["changed"] = False
        return result
