# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host the runbook works on: what it offers (runtime), its databases probed, backed up and restored,
its state record, and its reverse proxy's routes to MAS. Nothing here is imported by this package
itself (syn2mas_runtime ships runtime.py alone to a bare Python): import the module you need."""
