# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options and attributes shared by the modules that edit Synapse's and MAS's YAML files.
    DOCUMENTATION = r'''
options:
  backup:
    description:
      - Keep a copy of the file as it was, named C(<file>.<YYYY-MM-DD@HH:MM:SS>~), before changing it.
      - The copy has the file's owner and mode. Nothing is copied when nothing changes.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
      - Secret values (passwords, client secrets, the MAS shared secret, the pepper, keys) are replaced by
        C(<redacted>) in the diff.
    support: full
  idempotent:
    description: When run twice in a row, the second run reports no change.
    support: full
notes:
  - Files are edited as round-trip YAML (ruamel.yaml). Top-level sections the change does not touch are
    kept byte for byte, comments included; changed sections keep their comments, key order and
    indentation style. A removed top-level section leaves a one-line comment saying why.
  - Files are replaced atomically (a temporary file in the same directory, then a rename) and keep their
    owner and mode; a symbolic link is followed. New files are created with mode C(0600).
requirements:
  - ruamel.yaml
  - PyYAML
'''
