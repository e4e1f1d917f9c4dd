#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_state
short_description: The per-host record of the migration - legacy, migrated, delegated
version_added: 0.1.0
description:
  - Reads, and moves forward or back, a small JSON record on the Synapse host saying where its migration
    stands, with the history of every change. The runbook uses it to make a second run a no-op and to refuse
    steps that would lose data.
  - C(legacy) (Synapse authenticates users itself), C(migrated) (the import is committed in MAS) and
    C(delegated) (Synapse delegates to MAS). Accepted changes are legacy to migrated, migrated to delegated,
    and back to legacy from either (a rollback). Staying in a state changes nothing.
  - With O(mas_config), also reports what MAS's database says (RV(mas_activity)), and refuses to go to
    C(migrated) again when users have logged in through MAS since the import, unless O(force).
extends_documentation_fragment:
  - matrix.syn2mas.syn2mas.mas_host
options:
  path:
    description: The state file. Created with mode C(0600) (its directory C(0700)) on the first change.
    type: path
    default: /var/lib/syn2mas/state.json
  state:
    description: The state to move to. When not set, the record is only read.
    type: str
    choices: [legacy, migrated, delegated]
  mas_config:
    description: MAS's configuration files, to read MAS's database.
    type: list
    elements: path
    default: []
  mas_database_uri:
    description: A PostgreSQL URI replacing the database of O(mas_config).
    type: str
  run_id:
    description: The run making the change, kept in the history.
    type: str
  details:
    description: Facts to keep with the change (backup path, counts...). Never put secrets here.
    type: dict
    default: {}
  force:
    description: Accept going to C(migrated) although users logged in through MAS since the import.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Checks the change (refusing an illegal one) without writing it.
  diff_mode:
    support: full
    description: The state record is reported as RV(ignore:diff) before and after when it changes.
  idempotent:
    support: full
    description: Recording the state a host already has changes nothing.
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Where does this host stand?
  matrix.syn2mas.syn2mas_state: {}
  register: migration_state

- name: Record the import (refused if users already logged in through MAS after an earlier import)
  matrix.syn2mas.syn2mas_state:
    state: migrated
    mas_config: [/etc/mas/config.yaml]
    details:
      backup: /var/backups/syn2mas/20260101T120000Z
"""

RETURN = r"""
state:
  description: The state after the task (what it would be, in check mode).
  returned: always
  type: str
  sample: delegated
previous_state:
  description: The state before the task.
  returned: always
  type: str
history:
  description: Every change, oldest first (from, to, at, run_id, details).
  returned: always
  type: list
  elements: dict
record:
  description: The details kept so far, merged.
  returned: always
  type: dict
mas_activity:
  description: C(imported), C(imported_at), C(users), C(browser_sessions), C(oauth2_sessions),
    C(compat_sessions_since_import), C(passwords_since_import), C(logins_since_import).
  returned: when mas_config or mas_database_uri is given and MAS's database answers
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    exit_with, mas_host_options, mas_reader, require_libraries,
)

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host import state as _state_record
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host.probe import database_targets
except ImportError:  # pragma: no cover
    LIBRARY_IMPORT_ERROR = traceback.format_exc()
    # The module only reports the missing library: the default path is the library's alone.
    DEFAULT_STATE_FILE, STATES = None, ("legacy", "migrated", "delegated")
else:
    LIBRARY_IMPORT_ERROR = None
    DEFAULT_STATE_FILE, STATES = _state_record.DEFAULT_STATE_FILE, _state_record.STATES


def run(module):
    p = module.params
    mas = None
    if p["mas_config"] or p["mas_database_uri"]:
        mas = database_targets(mas_config=p["mas_config"], mas_database_uri=p["mas_database_uri"],
                               mas_reader=mas_reader(p))["mas"]
    return _state_record.move(p["path"], p["state"], mas, p["run_id"], p["details"], p["force"], module.check_mode,
                              module._diff)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default=DEFAULT_STATE_FILE),
            state=dict(type="str", choices=list(STATES)),
            mas_config=dict(type="list", elements="path", default=[]),
            mas_database_uri=dict(type="str", no_log=True),
            **mas_host_options(),
            run_id=dict(type="str"),
            details=dict(type="dict", default={}),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    # The database (and so psycopg2) is needed only to look for MAS logins since the import.
    require_libraries(module, LIBRARY_IMPORT_ERROR,
                      psycopg2=bool(module.params["mas_config"] or module.params["mas_database_uri"]))
    exit_with(module, run)


if __name__ == "__main__":
    main()
