#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_report
short_description: Write the fleet report (JSON and markdown) on the controller
version_added: 0.2.0
description:
  - Writes a report of the C(matrix.syn2mas.fleet_report) filter as C(<report_dir>/<run_id>/<name>.json) and
    C(<report_dir>/<run_id>/<name>.md) on the controller, as the runbook's M(matrix.syn2mas.common) C(report)
    entry point does after each wave and at the end of every playbook.
  - The JSON is indented by two spaces with its keys sorted (as C(to_nice_json(indent=2)) writes it) and ends with
    a newline; the markdown is the one of the C(matrix.syn2mas.fleet_report_markdown) filter.
  - The directories it makes are C(0700) and the files C(0600). Each file is written to a temporary file in the
    same directory and renamed over the old one, so an interrupted run leaves the old report or the new one,
    never half of one. Both texts are rendered before anything is written.
  - Runs on the controller only (an action plugin); nothing is sent to or changed on any managed host.
options:
  report:
    description: The report, as the C(matrix.syn2mas.fleet_report) filter builds it.
    type: dict
    required: true
  report_dir:
    description: The report directory on the controller.
    type: path
    required: true
  run_id:
    description: The run id, the sub-directory of O(report_dir) the files are written in.
    type: str
    required: true
  name:
    description: The files' name without extension.
    type: str
    default: migrate
attributes:
  action:
    support: full
    description: Runs on the controller.
  check_mode:
    support: full
    description: The report is written in check mode too (the check run's report holds its predicted window);
      C(changed) is false, as always.
  diff_mode:
    support: none
    description: The report is rewritten whole on every run; no diff is shown.
  idempotent:
    support: full
    description: C(changed) is always false (a report on the controller is no change to a host); the files are
      rewritten with what the report holds.
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Write the fleet report on the controller
  matrix.syn2mas.syn2mas_report:
    report: "{{ dict(groups['synapse'] | zip(groups['synapse'] | map('extract', hostvars)))
                | matrix.syn2mas.fleet_report(run_id, 'migrate', ansible_check_mode, './syn2mas-reports') }}"
    report_dir: ./syn2mas-reports
    run_id: "{{ run_id }}"
    name: migrate
  run_once: true
"""

RETURN = r"""
paths:
  description: The files written, by extension (the report itself is not returned).
  returned: success
  type: dict
  contains:
    json:
      description: The JSON report's path.
      type: str
      returned: success
      sample: ./syn2mas-reports/20261207T050000Z/migrate.json
    md:
      description: The markdown report's path.
      type: str
      returned: success
      sample: ./syn2mas-reports/20261207T050000Z/migrate.md
"""
