# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report filters: thin adapters over the library's fleet_report (documented in the .yml files beside)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.runbook.fleet_report import (
    ReportInputError, build_report, render_markdown, results_of,
)


def fleet_report(host_vars, run_id, name="migrate", check_mode=False, report_dir=None):
    try:
        hosts = {host: results_of(variables) for host, variables in host_vars.items()}
        return build_report(hosts, str(run_id), name=str(name), check_mode=bool(check_mode),
                            report_dir=report_dir or None)
    except ReportInputError as exc:
        raise AnsibleFilterError(f"the fleet report cannot be built: {exc}") from exc


def fleet_report_markdown(report):
    try:
        return render_markdown(report)
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"not a fleet report (from matrix.syn2mas.fleet_report): {exc!r}") from exc


class FilterModule:
    def filters(self):
        return {"fleet_report": fleet_report, "fleet_report_markdown": fleet_report_markdown}
