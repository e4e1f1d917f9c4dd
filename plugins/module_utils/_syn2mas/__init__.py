# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# The migration library of the matrix.syn2mas collection. It is PRIVATE to the collection:
# its modules, roles and the `syn2mas` command are its only supported users, and it may change
# at any time. Plain Python (no Ansible imports), so the CLI runs it without Ansible.

from __future__ import annotations

# The collection's version, as `syn2mas --version` shows it. galaxy.yml's `version` is the release's
# number; this one must equal it (a test checks it).
__version__ = "0.2.0"
