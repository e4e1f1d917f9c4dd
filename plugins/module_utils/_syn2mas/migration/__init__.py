# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The import and its proof: the Synapse->MAS stage table, Synapse read as one snapshot, MAS written
in one transaction, verify after it, the live checks after the switch, and the downtime window
a dry run predicts. Nothing here is imported by this package itself: import the module you need."""
