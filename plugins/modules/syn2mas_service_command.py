#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_service_command
short_description: Run an operator's command that stops or starts a service, bounded by a timeout
version_added: 0.2.0
description:
  - Runs a shell command line the operator gave to stop or start Synapse, its workers or MAS (a C(docker compose)
    call, C(kubectl scale), a script), with C(/bin/sh -c), and waits at most O(timeout) seconds for it to end.
  - A command still running at O(timeout) fails the task, and every process it started goes with it - it runs in a
    session of its own, which gets C(TERM), then C(KILL) after 5 seconds. Nothing is left running.
  - Returns the moment the command ends, without polling; a daemon the command starts (and leaves running) does
    not hold the task.
  - Needs nothing but Python's standard library, so it runs on any interpreter the inventory names.
options:
  cmd:
    description:
      - The command line, run with C(/bin/sh -c) as the task's user, in a session of its own, with no input.
      - It may hold credentials (a token for C(kubectl)); run the task with C(no_log) when it does.
    type: str
    required: true
  timeout:
    description: Seconds the command may run; past them it fails, its processes stopped.
    type: int
    required: true
attributes:
  check_mode:
    support: partial
    description: In check mode the command is not run.
    details: The command is not run in check mode (the task is reported skipped), as ansible.builtin.shell does.
  diff_mode:
    support: none
    description: It writes no file.
  idempotent:
    support: none
    description: It runs the command each time; the command itself should be safe to run on a service already
      stopped (or started).
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Stop Synapse (operator's command), within two minutes
  matrix.syn2mas.syn2mas_service_command:
    cmd: docker compose -f /srv/matrix/compose.yml stop synapse
    timeout: 120
"""

RETURN = r"""
rc:
  description: The command's exit code.
  returned: when the command ended within O(timeout)
  type: int
stdout:
  description: What the command printed (at most 64 KiB).
  returned: when the command ran
  type: str
stderr:
  description: What the command printed on its error output (at most 64 KiB).
  returned: when the command ran
  type: str
seconds:
  description: How long the command ran.
  returned: when the command ran
  type: float
timed_out:
  description: Whether the command was still running at O(timeout) (and was stopped).
  returned: when the command ran
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

# Only this file of the library: it needs the standard library alone, so the module runs on a bare Python.
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host import service_command as _service_command


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cmd=dict(type="str", required=True),
            timeout=dict(type="int", required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be a number of seconds above 0, not {p['timeout']}")
    if module.check_mode:
        module.exit_json(changed=False, skipped=True, msg="not run in check mode")
    ran = _service_command.run(p["cmd"], p["timeout"])
    result = dict(changed=True, stdout=ran.stdout, stderr=ran.stderr, seconds=ran.seconds, timed_out=ran.timed_out)
    if ran.timed_out:
        module.fail_json(msg=f"Timeout exceeded: the command was still running after {p['timeout']} s; it and every "
                             "process it started were stopped", **result)
    if ran.rc != 0:
        module.fail_json(msg="non-zero return code", rc=ran.rc, **result)
    module.exit_json(rc=ran.rc, **result)


if __name__ == "__main__":
    main()
