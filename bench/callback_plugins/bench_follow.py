# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook benchmark's view of a run (bench/runbook.py enables it; no part of the collection).

Beside the stdout callback, it
- writes the task running now (role and name) into $BENCH_FOLLOW_DIR/task, which the harness reads to
  print the phase and to tell which module each process of the host ran;
- appends the results of the import and verify modules (what ansible registers for them) to
  $BENCH_FOLLOW_DIR/results.jsonl, from which the harness reads the check run's predicted window and
  verify's seconds.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_follow
type: notification
short_description: the runbook benchmark's follower (task now running, import and verify results)
description:
  - Writes the running task and the import's and verify's results where the runbook benchmark reads them.
requirements:
  - BENCH_FOLLOW_DIR in the environment
"""

FOLLOWED = ("syn2mas_import", "syn2mas_verify")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "bench_follow"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.dir = os.environ.get("BENCH_FOLLOW_DIR")

    def _write_task(self, task) -> None:
        if not self.dir:
            return
        role = task._role.get_name() if task._role else ""
        path = os.path.join(self.dir, "task")
        with open(path + ".tmp", "w") as handle:
            json.dump({"role": role, "name": task.get_name(), "at": time.time()}, handle)
        os.replace(path + ".tmp", path)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._write_task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._write_task(task)

    def _record(self, result, status: str) -> None:
        action = result._task.action or ""
        if not self.dir or not action.endswith(FOLLOWED):
            return
        entry = {"action": action.rsplit(".", 1)[-1], "host": result._host.get_name(), "status": status,
                 "task": result._task.get_name(), "at": time.time(), "result": result._result}
        with open(os.path.join(self.dir, "results.jsonl"), "a") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")
