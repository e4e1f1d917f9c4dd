#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_backup
short_description: Verified backups of Synapse's and MAS's databases and configuration, and their restore
version_added: 0.1.0
description:
  - With O(state=present), dumps Synapse's and MAS's databases with C(pg_dump) (custom format) and copies the
    given files (C(homeserver.yaml), MAS's C(config.yaml), the C(.well-known) document...) into
    O(dest)/O(run_id), writes a C(manifest.json) with the sha256 and size of every file, and verifies the
    result (checksums, and C(pg_restore --list) on each dump) before it is renamed into place. Every file is
    C(0600), the directories C(0700).
  - Every dump, every copied file and the manifest, then the directories holding them, are flushed to disk
    (fsync) before the backup is verified and renamed into place, so a backup reported as verified survives a
    crash or power loss of the host right after.
  - The backup of a run is made once; running again with the same O(run_id) only verifies it
    (C(changed=false)). Older backups beyond O(keep) are removed.
  - With O(state=restored), puts the files of the backup at O(dest)/O(run_id) back where they were
    (a file absent at backup time is removed), and restores the databases listed in O(restore_databases) from
    their dumps (C(pg_restore --clean --single-transaction)).
  - With O(state=absent), removes the backup O(dest)/O(run_id), or without O(run_id) every backup in O(dest)
    (and what interrupted ones left), for when the migration is accepted (backups hold password hashes, access
    and refresh tokens and the configs' secrets). O(keep) is the retention of O(state=present).
  - Database passwords reach C(pg_dump) and C(pg_restore) through the environment, never the command line.
extends_documentation_fragment:
  - matrix.syn2mas.syn2mas.database_uris
  - matrix.syn2mas.syn2mas.mas_host
options:
  state:
    description: V(present) makes (or verifies) the backup; V(restored) restores from it; V(absent) removes it
      (every backup in O(dest) without O(run_id)).
    type: str
    choices: [present, restored, absent]
    default: present
  dest:
    description: The directory holding one sub-directory per run.
    type: path
    required: true
  run_id:
    description: The name of this run's backup directory (the runbook uses a UTC timestamp, sortable). Required
      unless O(state=absent).
    type: str
  synapse_config:
    description: Synapse's configuration files; they name its database and are copied into the backup.
    type: list
    elements: path
    default: []
  mas_config:
    description: MAS's configuration files; they name its database and are copied into the backup.
    type: list
    elements: path
    default: []
  extra_files:
    description: More files to keep (and restore). A file that does not exist is recorded as absent.
    type: list
    elements: path
    default: []
  keep:
    description: How many backups to keep in O(dest), this one included. V(0) keeps all.
    type: int
    default: 5
  restore_files:
    description: With O(state=restored), restore the files.
    type: bool
    default: true
  restore_databases:
    description: With O(state=restored), the databases to restore from their dumps.
    type: list
    elements: str
    choices: [synapse, mas]
    default: []
  pg_bindir:
    description: Where C(pg_dump) and C(pg_restore) are; by default they are looked up on PATH.
    type: path
attributes:
  check_mode:
    support: full
    description: Reports what would be backed up or restored; writes nothing.
  diff_mode:
    support: none
    description: Backups are new files, not edits of existing ones; the result names them.
  idempotent:
    support: partial
    description: A verified backup of the same run is not made again.
    details: A backup is made once per O(run_id). Restoring files is idempotent; restoring a database is not.
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Back up both databases and both configs before the switch
  matrix.syn2mas.syn2mas_backup:
    dest: /var/backups/syn2mas
    run_id: "20260101T120000Z"
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    mas_config: [/etc/mas/config.yaml]
    extra_files: [/var/www/html/.well-known/matrix/client]
    keep: 3
  register: backup

- name: Put the configuration back and empty MAS again
  matrix.syn2mas.syn2mas_backup:
    state: restored
    dest: /var/backups/syn2mas
    run_id: "20260101T120000Z"
    mas_config: [/etc/mas/config.yaml]
    restore_databases: [mas]

- name: The migration is accepted - remove every backup of this host (they hold hashes and tokens)
  matrix.syn2mas.syn2mas_backup:
    state: absent
    dest: /var/backups/syn2mas
"""

RETURN = r"""
path:
  description: The backup directory of this run.
  returned: always
  type: str
verified:
  description: Whether every file (synced to disk) matches the manifest and every dump lists with pg_restore.
  returned: always
  type: bool
files:
  description: The files kept (state=present).
  returned: always
  type: list
  elements: str
databases:
  description: The databases dumped (state=present).
  returned: always
  type: list
  elements: str
removed:
  description: Older backups removed by O(keep), or the backups removed by O(state=absent) (or that would be, in
    check mode).
  returned: state=present or state=absent
  type: list
  elements: str
restored_files:
  description: The files that were (or would be) put back.
  returned: state=restored
  type: list
  elements: str
restored_databases:
  description: The databases restored.
  returned: state=restored
  type: list
  elements: str
manifest:
  description: The manifest (paths, checksums, sizes, modes; no content).
  returned: when verified
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    database_options, exit_with, mas_reader, require_libraries,
)

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host import backup as _backup
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host.probe import database_targets
except ImportError:  # pragma: no cover
    LIBRARY_IMPORT_ERROR = traceback.format_exc()
else:
    LIBRARY_IMPORT_ERROR = None


def run(module):
    p = module.params

    def targets():
        return database_targets(p["synapse_config"], p["mas_config"], p["synapse_database_uri"], p["mas_database_uri"],
                                mas_reader=mas_reader(p))

    if p["state"] == "absent":
        return _backup.purge(p["dest"], p["run_id"], module.check_mode)
    if p["state"] == "present":
        # MAS's files on MAS's own host are backed up there (a backup of their own), never copied here.
        mas_files = [] if p["mas_host"] else list(p["mas_config"])
        files = list(p["synapse_config"]) + mas_files + list(p["extra_files"])
        return _backup.make_backup(p["dest"], _backup.check_run_id(p["run_id"]), targets(), files, p["pg_bindir"],
                                   p["keep"], module.check_mode)
    # A restore reads the configs only for the databases it restores: the files it puts back may be
    # the very ones a failed run left unreadable.
    return _backup.restore(p["dest"], p["run_id"], targets() if p["restore_databases"] else {}, p["restore_files"],
                           p["restore_databases"], p["pg_bindir"], module.check_mode)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "restored", "absent"], default="present"),
            dest=dict(type="path", required=True),
            run_id=dict(type="str"),
            **database_options(synapse_required=False, mapping=False),
            extra_files=dict(type="list", elements="path", default=[]),
            keep=dict(type="int", default=5),
            restore_files=dict(type="bool", default=True),
            restore_databases=dict(type="list", elements="str", choices=["synapse", "mas"], default=[]),
            pg_bindir=dict(type="path"),
        ),
        required_if=[("state", "present", ["run_id"]), ("state", "restored", ["run_id"])],
        supports_check_mode=True,
    )
    p = module.params
    # A backup of files alone (MAS's config on MAS's host) runs on the host's bare Python.
    databases = p["synapse_config"] or p["mas_config"] or p["synapse_database_uri"] or p["mas_database_uri"]
    needs_databases = p["restore_databases"] if p["state"] == "restored" else p["state"] == "present" and databases
    require_libraries(module, LIBRARY_IMPORT_ERROR, psycopg2=bool(needs_databases), yaml=bool(needs_databases))
    exit_with(module, run)


if __name__ == "__main__":
    main()
