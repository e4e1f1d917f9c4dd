#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_read_config
short_description: Read configuration files on one host for a task that runs on another
version_added: 0.2.0
description:
  - Reads configuration files (and the C(*.yaml) files of configuration directories, as Synapse reads a
    C(--config-path) directory) on the host it runs on, and returns their text, so that a task on another host
    can use them without a copy being written there.
  - The runbook reads MAS's config on MAS's host (C(syn2mas_mas_host)) for the modules that run on the Synapse
    host (the advisor, the import, verify, the probes and the backup of MAS's database), and Synapse's
    configuration on the Synapse host for the edits of MAS's config that run against MAS's host
    (M(matrix.syn2mas.mas_synapse_link), M(matrix.syn2mas.mas_upstream_provider)).
  - A file that cannot be read is not a failure. It is listed in RV(errors) with the reason, for the module that
    needs it to report.
  - The texts hold secrets. Run it with C(no_log=true) and pass RV(files) only to the options made for it
    (declared C(no_log)).
  - Needs nothing but Python's standard library, so it runs on the host's bare Python.
extends_documentation_fragment:
  - matrix.syn2mas.read_only
options:
  paths:
    description: The files and configuration directories to read, as paths on this host.
    type: list
    elements: path
    required: true
  mas_secret_files:
    description:
      - The files of O(paths) are MAS's config. Also read the files it names that this collection reads, on this
        same host - C(database.password_file), C(database.ssl_ca_file), C(database.ssl_certificate_file),
        C(database.ssl_key_file) and the password schemes' C(secret_file) - and return them in RV(files) (or
        RV(errors)) too, so that the modules on another host use them as MAS's host holds them.
      - MAS's config is parsed on the controller (this module's action plugin); the host needs no YAML library.
    type: bool
    default: false
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Read MAS's config on MAS's host
  matrix.syn2mas.syn2mas_read_config:
    paths: [/etc/mas/config.yaml]
  delegate_to: mas.example.org
  no_log: true
  register: mas_config_read

- name: Check that MAS's database can be reached from the Synapse host
  matrix.syn2mas.syn2mas_probe:
    mas_config: [/etc/mas/config.yaml]
    mas_host: mas.example.org
    mas_config_files: "{{ mas_config_read.files }}"
    mas_config_errors: "{{ mas_config_read.errors }}"
"""

RETURN = r"""
files:
  description: The text of each file read, by path.
  returned: always
  type: dict
dirs:
  description: The C(*.yaml) files of each directory of O(paths), by the directory's path.
  returned: always
  type: dict
  sample: {/etc/matrix-synapse/conf.d: [database.yaml, oidc.yaml]}
errors:
  description: Why a file or directory could not be read, by path.
  returned: always
  type: dict
  sample: {/etc/mas/config.yaml: file not found}
host:
  description: The name of the host the files were read on (its C(uname) node name).
  returned: always
  type: str
secret_files:
  description: The paths of the files MAS's config names that were read too (with O(mas_secret_files)).
  returned: with O(mas_secret_files)
  type: list
  elements: str
  sample: [/etc/mas/database-password]
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import read_files
except ImportError:  # pragma: no cover
    LIBRARY_IMPORT_ERROR = traceback.format_exc()
else:
    LIBRARY_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        # mas_secret_files is done by the action plugin (it parses MAS's config on the controller).
        argument_spec=dict(paths=dict(type="list", elements="path", required=True),
                           mas_secret_files=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    if LIBRARY_IMPORT_ERROR:
        module.fail_json(msg="cannot import the matrix.syn2mas library", exception=LIBRARY_IMPORT_ERROR)
    result = read_files(module.params["paths"])
    # The texts are secret; Ansible's no_log on the task keeps them out of the output.
    module.exit_json(changed=False, host=os.uname()[1], **result)


if __name__ == "__main__":
    main()
