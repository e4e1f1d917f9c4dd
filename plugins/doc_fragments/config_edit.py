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
      - Keep a copy of the file as it was, named C(<file>.<number>.<YYYY-MM-DD@HH:MM:SS>~) (as
        M(ansible.builtin.copy) names it), before changing it.
      - The copy has the file's owner and mode. Nothing is copied when nothing changes.
    type: bool
    default: false
  owner:
    description:
      - Owner of the written file, a user name or a numeric id.
      - When not set, an existing file keeps its owner; a new file gets the module's default (see O(mode)).
    type: str
  group:
    description:
      - Group of the written file, a group name or a numeric id.
      - When not set, an existing file keeps its group; a new file gets the module's default (see O(mode)).
    type: str
  mode:
    description:
      - Permissions of the written file, as for M(ansible.builtin.copy) (for example V('0640') or V(u=rw,g=r,o=)).
      - When not set, an existing file keeps its mode. A new file gets C(0600), except the override file of
        M(matrix.syn2mas.synapse_auth_delegation) (see there). Files that hold secrets should never be
        world-readable.
    type: raw
attributes:
  action:
    description: The edit runs in an action plugin on the controller; the managed host only runs Ansible's builtin modules.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  bypass_host_loop:
    description: Forces a single run for all hosts of the play.
    support: none
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
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
  safe_file_operations:
    description: Uses Ansible's strict file operation functions (through M(ansible.builtin.copy)) to ensure proper
      permissions and avoid data corruption.
    support: full
notes:
  - The files are read from the managed host - the configuration files and directories the edit names in one round
    trip (M(matrix.syn2mas.syn2mas_read_config), standard library only), any other with M(ansible.builtin.stat),
    M(ansible.builtin.find) and M(ansible.builtin.slurp) - and edited on the Ansible controller, so ruamel.yaml is
    needed on the controller only; the managed host needs nothing but a Python that runs Ansible's modules.
  - Files are edited as round-trip YAML (ruamel.yaml). Top-level sections the change does not touch are
    kept byte for byte, comments included; changed sections keep their comments, key order and
    indentation style. A removed top-level section leaves a one-line comment saying why.
  - The new text is written with M(ansible.builtin.copy) - atomically, keeping an existing file's owner,
    group, mode and SELinux context unless O(owner), O(group) or O(mode) say otherwise; a symbolic link is
    followed. Its own diff is turned off (it would show the secrets); the module's diff is redacted.
  - Synapse's configuration may be given as files and directories, as Synapse's C(--config-path) takes them - a
    directory stands for the files in it whose names end in C(.yaml), in sorted order.
requirements:
  - on the controller - ruamel.yaml and PyYAML (C(pip install ruamel.yaml) in the controller's Python)
  - on the managed host - nothing beyond what Ansible's builtin modules need
'''

    # Synapse's configuration read on the Synapse host, for the edits of MAS's config on MAS's own host.
    SYNAPSE_HOST = r'''
options:
  synapse_host:
    description:
      - The inventory host that holds Synapse's configuration, when the task runs against another host (MAS's
        own, with C(delegate_to)). O(synapse_config) is then read from O(synapse_config_files), as read on the
        Synapse host by M(matrix.syn2mas.syn2mas_read_config), never on the host this task edits; errors name
        the path and O(synapse_host).
    type: str
  synapse_config_files:
    description:
      - With O(synapse_host), the text of each of Synapse's configuration files as read there, by path.
      - They hold secrets (the pepper, client secrets), kept out of logs and output.
    type: dict
  synapse_config_dirs:
    description: With O(synapse_host), the C(*.yaml) files of each configuration directory of O(synapse_config).
    type: dict
    default: {}
  synapse_config_errors:
    description: With O(synapse_host), why a file of O(synapse_config) could not be read there, by path.
    type: dict
    default: {}
'''
