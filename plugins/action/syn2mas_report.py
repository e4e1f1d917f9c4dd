# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writes the fleet report's files on the controller (the module syn2mas_report): a thin adapter over the
library's runbook/report_files.py. No module is sent anywhere."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.runbook import report_files

ARGUMENT_SPEC = dict(
    report=dict(type="dict", required=True),
    report_dir=dict(type="path", required=True),
    run_id=dict(type="str", required=True),
    name=dict(type="str", default="migrate"),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        # Written in check mode too: the check run's report (its predicted window) is what the check is for.
        try:
            paths = report_files.write_report(args["report"], args["report_dir"], args["run_id"], args["name"])
        except (KeyError, TypeError) as exc:
            result.update(failed=True, changed=False,
                          msg=f"report is not a fleet report (from matrix.syn2mas.fleet_report): {exc!r}")
            return result
        except (ValueError, OSError) as exc:
            result.update(failed=True, changed=False, msg=str(exc))
            return result
        # The paths only: the report itself is in the play's facts and set_stats already.
        result.update(changed=False, paths=paths)
        return result
