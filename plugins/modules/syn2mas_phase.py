#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_phase
short_description: Record a step of the runbook for the fleet report (a phase starts, the outcome, the error)
version_added: 0.2.0
description:
  - The runbook's record of a host's run, which the fleet report (M(matrix.syn2mas.common) C(report), the
    C(matrix.syn2mas.fleet_report) filter) reads - when each phase started (C(syn2mas_marks)), the outcome
    (C(syn2mas_outcome)), the error (C(syn2mas_error)), the phase a failure happened in (C(syn2mas_failed_phase)),
    whether the host was rolled back (C(syn2mas_rolled_back)) and how long its run took
    (C(syn2mas_duration_seconds)). They are set as facts of the host; nothing on the host is touched.
  - Marking C(backup), the first phase, starts the host's run afresh. Marking C(synapse_stop) means Synapse may be
    going down from here on (C(syn2mas_synapse_stopped)); C(rollback) is marked only after it (a failure before
    it stopped nothing). Marking C(end) also sets the run's duration.
  - Runs on the controller only (an action plugin).
options:
  phase:
    description: The phase that starts now, or C(synapse_healthy) (Synapse up again, the end of the downtime).
    type: str
    choices: [backup, prepare, synapse_stop, mas_stop, activate, import, reverse_proxy, mas_start, synapse_start,
              well_known, rollback, end, synapse_healthy]
  outcome:
    description: The host's outcome (C(migrated), C(failed), ...). C(failed) also records the phase it failed in.
    type: str
  error:
    description: The error, as the report shows it.
    type: str
  error_notes:
    description: More about the error, each appended to it after C(; ) (empty ones are skipped).
    type: list
    elements: str
    default: []
  rolled_back:
    description: Whether the rollback brought the host back.
    type: bool
attributes:
  action:
    support: full
    description: Runs on the controller.
  check_mode:
    support: full
    description: It records the check run's phases as the real run's.
  diff_mode:
    support: none
    description: It writes no file.
  idempotent:
    support: none
    description: Each run records the time it ran at.
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Phase synapse_stop (Synapse may be going down from here on)
  matrix.syn2mas.syn2mas_phase:
    phase: synapse_stop

- name: Keep why the migration failed, and in which phase
  matrix.syn2mas.syn2mas_phase:
    outcome: failed
    error: "{{ ansible_failed_task.name }}: {{ ansible_failed_result.msg | default('') }}"
    phase: rollback
"""

RETURN = r"""
ansible_facts:
  description: The facts this step set (only those).
  returned: always
  type: dict
  contains:
    syn2mas_marks:
      description: Phase name to the epoch seconds it started at (set when O(phase) is given).
      type: dict
      returned: when O(phase) is given
    syn2mas_outcome:
      description: O(outcome).
      type: str
      returned: when O(outcome) is given
    syn2mas_failed_phase:
      description: The last phase marked before this step.
      type: str
      returned: when O(outcome=failed)
"""
