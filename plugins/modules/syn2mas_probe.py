#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_probe
short_description: Check that Synapse's and MAS's databases answer, how big they are and who is connected
version_added: 0.1.0
description:
  - Connects to the databases named by Synapse's and MAS's configuration files and reports, for each, whether
    it answers, its size, its server's version (C(pg_dump) and C(pg_restore) must not be older) and the other
    clients connected to it (a running Synapse, its workers).
  - Optionally waits until no other client is left on Synapse's database, which is how the runbook knows
    Synapse and all its workers have really stopped.
  - Optionally reports the free space where the backup goes, and whether MAS's database holds a row for every
    upstream provider MAS's configuration defines (what C(mas-cli config sync) writes).
  - Only reads; reports C(changed=false).
options:
  synapse_config:
    description: Synapse's configuration files, merged as Synapse merges them.
    type: list
    elements: path
    default: []
  mas_config:
    description: MAS's configuration files.
    type: list
    elements: path
    default: []
  wait_synapse_idle:
    description: Wait until no other client is connected to Synapse's database (at most O(timeout) seconds).
    type: bool
    default: false
  timeout:
    description: Seconds to wait with O(wait_synapse_idle).
    type: int
    default: 120
  space_path:
    description: A directory (it may not exist yet) whose file system's free space is reported.
    type: path
  check_providers:
    description: Report the upstream providers of O(mas_config) that MAS's database has no row for.
    type: bool
    default: false
  activity:
    description:
      - Also report what the other clients of each database are doing (C(activity), C(activity_summary)), from
        C(pg_stat_activity) - how old their transaction is, what they wait for and which sessions block them.
      - How the runbook says what a Synapse that does not stop waits for.
    type: bool
    default: false
  fail_on_unreachable:
    description:
      - Fail when a database does not answer, or (with O(wait_synapse_idle)) clients are left.
      - When false, a database whose configuration cannot be read (a malformed URI) is reported as not reachable,
        with its error, instead of failing.
    type: bool
    default: true
extends_documentation_fragment:
  - matrix.syn2mas.read_only
  - matrix.syn2mas.syn2mas.database_uris
  - matrix.syn2mas.syn2mas.mas_host
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Both databases answer, and the backup fits
  matrix.syn2mas.syn2mas_probe:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    mas_config: [/etc/mas/config.yaml]
    space_path: /var/backups/syn2mas
  register: probe

- name: Wait until Synapse and its workers have left the database
  matrix.syn2mas.syn2mas_probe:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    wait_synapse_idle: true
    timeout: 120
"""

RETURN = r"""
synapse:
  description: Synapse's database - C(reachable), C(database) (host, port, name; never a password), C(error),
    C(size_bytes), C(server_version) (C(15.14 (Debian 15.14-0+deb12u1))), C(server_version_num) (C(150014)),
    C(server_major) (C(15); C(9.6) before PostgreSQL 10), C(other_clients) (pid, application_name, user, address,
    state); with O(activity), C(activity) (per other client - pid, application_name, user, address, state,
    transaction_seconds, waiting_for, blocked_by, command, i.e. its query's first word only) and C(activity_summary)
    (one line).
  returned: when synapse_config or synapse_database_uri is given
  type: dict
mas:
  description: The same for MAS's database.
  returned: when mas_config or mas_database_uri is given
  type: dict
free_bytes:
  description: Free bytes at O(space_path) (or its nearest existing parent).
  returned: when space_path is given
  type: int
databases_bytes:
  description: The sum of the sizes of the databases that answered.
  returned: always
  type: int
providers:
  description: C(configured) (count) and C(missing) (id and synapse_idp_id of each provider without a row).
  returned: when check_providers is true
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    database_options, exit_with, mas_reader, require_libraries,
)

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host import probe as _probe
except ImportError:  # pragma: no cover
    LIBRARY_IMPORT_ERROR = traceback.format_exc()
else:
    LIBRARY_IMPORT_ERROR = None


def run(module):
    p = module.params
    # Without fail_on_unreachable (the advisor's run), a configuration that cannot be read is reported,
    # not fatal: the advisor has already made it a finding.
    errors = None if p["fail_on_unreachable"] else {}
    targets = _probe.database_targets(p["synapse_config"], p["mas_config"], p["synapse_database_uri"],
                                      p["mas_database_uri"], errors, mas_reader(p))
    return _probe.probe_targets(targets, p["wait_synapse_idle"], p["timeout"], p["space_path"], p["mas_config"],
                                p["check_providers"], p["fail_on_unreachable"], errors, p["activity"], mas_reader(p))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **database_options(synapse_required=False, mapping=False),
            wait_synapse_idle=dict(type="bool", default=False),
            timeout=dict(type="int", default=120),
            space_path=dict(type="path"),
            check_providers=dict(type="bool", default=False),
            fail_on_unreachable=dict(type="bool", default=True),
            activity=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    require_libraries(module, LIBRARY_IMPORT_ERROR, psycopg2=True)
    exit_with(module, run)


if __name__ == "__main__":
    main()
