# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook's own record: each phase's marks and outcome (phase), and the fleet report built from
the phases' results (fleet_report) and written on the controller (report_files). Nothing here is imported
by this package itself."""
