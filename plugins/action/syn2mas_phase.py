# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records a step of the runbook as facts of the host (the module syn2mas_phase): a thin adapter over the
library's runbook/phase.py. Runs on the controller only; no module is sent to the host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.plugins.action import ActionBase

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.runbook import phase as phase_record

ARGUMENT_SPEC = dict(
    phase=dict(type="str", choices=list(phase_record.MARKS)),
    outcome=dict(type="str"),
    error=dict(type="str"),
    error_notes=dict(type="list", elements="str", default=[]),
    rolled_back=dict(type="bool"),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        current = {name: task_vars[name] for name in phase_record.FACTS if name in (task_vars or {})}
        facts = phase_record.record(current, time.time(), phase=args["phase"], outcome=args["outcome"],
                                    error=args["error"], error_notes=args["error_notes"],
                                    rolled_back=args["rolled_back"])
        result.update(changed=False, ansible_facts=facts)
        return result
