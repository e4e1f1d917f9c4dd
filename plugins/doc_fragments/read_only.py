# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The attributes of the modules that only read (the probe and the runtime discovery).
    DOCUMENTATION = r'''
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: It only reads; there is nothing to diff.
  idempotent:
    support: full
    description: It only reads and always reports RV(ignore:changed=false).
'''
