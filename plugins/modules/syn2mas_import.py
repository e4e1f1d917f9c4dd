#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_import
short_description: Import a Synapse homeserver's users, passwords, SSO links, devices and tokens into MAS
version_added: 0.1.0
description:
  - Copies users, password hashes, email addresses and other third-party ids, SSO subject mappings, devices
    (as compatibility sessions), access tokens and refresh tokens from Synapse's PostgreSQL database into a
    fresh Matrix Authentication Service database, so no user has to log in again.
  - Reads Synapse in one read-only snapshot and never writes to it. Writes MAS in one transaction, so a failed
    or interrupted import leaves MAS as it was.
  - Refuses to run while other clients (a running Synapse) are connected to Synapse's database, while another
    import runs, or when MAS's database already holds other data.
  - Re-running after a successful import changes nothing and reports C(changed=false); it also says whether
    Synapse changed since (RV(synapse_changed_since_import)), as the import does not merge.
  - Waits a bounded time for sessions holding locks on the tables (autovacuum after an aborted run), then
    refuses naming them. A missing privilege and a lost connection are reported as such.
  - The outcome reported is what MAS holds; every message is redacted of credentials.
  - In check mode, or with O(dry_run=true), the whole import is loaded and validated, then rolled back; the
    counts are those of a real run.
extends_documentation_fragment:
  - matrix.syn2mas.syn2mas
  - matrix.syn2mas.syn2mas.mas_host
options:
  dry_run:
    description:
      - Load and validate everything, then roll back. Check mode implies it.
    type: bool
    default: false
  skip_unmapped_providers:
    description:
      - Leave the SSO links of Synapse providers that map to no MAS provider behind (reported) instead of
        failing.
    type: bool
    default: false
  planned_homeserver:
    description:
      - The C(matrix.homeserver) the run writes into MAS's config before the real import (for example the
        V(matrix.homeserver) that M(matrix.syn2mas.mas_synapse_link) returns in check mode).
      - Used only by a dry run (check mode writes no config), so that it judges the import as the real run
        will meet it. A real import reads MAS's config as written.
    type: str
  planned_provider_mapping:
    description:
      - The upstream providers the run adds to MAS's config before the real import, as
        C(SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID) (what M(matrix.syn2mas.mas_upstream_provider) returns in check
        mode). Used only by a dry run; a provider that MAS's database does not hold yet (the run's
        C(mas-cli config sync) adds it) is stood in for by a provisional row inside the rolled-back transaction.
    type: list
    elements: str
    default: []
  window_service_seconds:
    description:
      - For the window a dry run predicts (RV(predicted_window_seconds)), the seconds of the window spent
        outside the import and verify, Synapse's and MAS's real stops and starts until healthy, which cannot be
        measured before Synapse is stopped. The runbook's check run measures its own tasks in the window and adds
        these (its fleet report's C(predicted_window_seconds)); take them from a rehearsal's real run (its report's
        C(window_service_seconds)). Used alone, take them from a rehearsal's report (its C(downtime_seconds) minus
        its import and verify seconds).
      - Unset, 25 seconds, an estimate (the runbook's window with a handful of users on a 2-core machine, nearly
        all of it services and tasks), not a measurement of your hosts.
    type: float
attributes:
  check_mode:
    support: full
    description: Runs the full import inside a transaction that is rolled back, and reports its counts.
  diff_mode:
    support: none
    description: The import changes database rows, not files; it reports counts instead of a diff.
  idempotent:
    support: full
    description: A second run after a successful import changes nothing and reports RV(ignore:changed=false).
seealso:
  - module: matrix.syn2mas.syn2mas_advisor
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Dry run of the import (counts only, nothing kept)
  matrix.syn2mas.syn2mas_import:
    synapse_config:
      - /etc/matrix-synapse/homeserver.yaml
      - /etc/matrix-synapse/conf.d/database.yaml
    mas_config:
      - /etc/mas/config.yaml
    dry_run: true
  register: syn2mas_plan

- name: Import for real (Synapse stopped)
  matrix.syn2mas.syn2mas_import:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    mas_config: [/etc/mas/config.yaml]
    upstream_provider_mapping:
      - oidc-google:01H8PKNWKKRPCBW4YGH1RWV279
  register: syn2mas_result

- name: Show how many users came over
  ansible.builtin.debug:
    msg: "{{ syn2mas_result.counts.users.migrated }} users imported"
"""

RETURN = r"""
counts:
  description: Per stage, rows migrated and skipped (with reasons and a few example keys, never secrets), and
    values repaired on the way (invalid IP addresses).
  returned: always
  type: dict
  sample:
    users: {migrated: 40, skipped: 1, skipped_reasons: {"appservice user (not migrated)": {count: 1,
            examples: ["@bridge:example.com"]}}, fixed: {}, seconds: 0.01}
already_imported:
  description: MAS already holds this import (a previous run committed it); nothing was done.
  returned: always
  type: bool
dry_run:
  description: Whether the import was rolled back (check mode or O(dry_run)).
  returned: always
  type: bool
mas_schema:
  description: The MAS schema found, as C(release) and C(latest_migration).
  returned: always
  type: dict
  sample: {release: 1.22.0, latest_migration: 20260720134722}
server_name:
  description: Synapse's server_name.
  returned: always
  type: str
duration_seconds:
  description: Wall-clock time of the run.
  returned: always
  type: float
stage_seconds:
  description: Seconds per stage, and for the index and constraint rebuild.
  returned: when the import ran
  type: dict
verify_record_seconds:
  description:
    - Seconds the import spent on verify's record. C(total) is what it read of Synapse's snapshot while MAS
      rebuilt its indexes (the tables' fingerprint, and in a dry run the rows recomputed for the cross-check),
      C(after_rebuild) how much of that came after the rebuild and the digests, and C(written) the digests of
      the rows written, taken in MAS's transaction.
  returned: when the import ran
  type: dict
verify_cross_check:
  description:
    - A dry run's proof of the path from Synapse to MAS, C(stages) entities and C(rows) rows; every row MAS
      must hold, recomputed from Synapse's snapshot with verify's queries, is a row the dry run's transaction
      wrote (else the dry run fails, naming the entity).
  returned: when a dry run ran
  type: dict
  sample: {stages: 9, rows: 681021}
predicted_window_seconds:
  description:
    - The downtime window (Synapse stopped until healthy and delegating) a real run would take, predicted by a
      dry run as the sum of its own duration (it does the real import's work; its cross-check against Synapse,
      which the real run does not do, left out), verify's reads after the commit, measured on the rolled-back
      rows (MAS's side and the fingerprint of Synapse's tables), and O(window_service_seconds).
  returned: when a dry run ran
  type: float
  sample: 80.0
predicted_window:
  description:
    - The parts of RV(predicted_window_seconds) (C(import_seconds), C(verify_seconds), C(service_seconds)), and beside
      them, not counted, C(cross_check_wait_seconds), the dry run's wait for its cross-check against Synapse, which
      the real run does not make (the runbook's prediction takes it out of the check run's window).
  returned: when a dry run ran
  type: dict
  sample: {import_seconds: 41.3, verify_seconds: 13.7, service_seconds: 25.0, cross_check_wait_seconds: 4.2}
synapse_changed_since_import:
  description:
    - When MAS already held an import (RV(already_imported)), whether Synapse's tables changed since. MAS then
      lacks those changes (the import does not merge), and the import role refuses to go on.
    - Compared by a fingerprint of every table the import reads, recorded in MAS when the import committed.
  returned: always
  type: bool
synapse_changes:
  description: What changed in Synapse since the import MAS holds, per table.
  returned: when RV(already_imported) is true
  type: list
  elements: str
  sample: ["access_tokens: 41 rows then, 42 now", "devices: rows changed"]
warnings_found:
  description: Things an operator should know (unmapped providers skipped, Synapse changed since the import...).
  returned: always
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    database_options, exit_with, mas_reader, require_libraries,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import redact_data

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.migration.importer import ImportOptions, run_import
except ImportError:  # pragma: no cover - the library itself imports only the stdlib and the two below
    IMPORTER_IMPORT_ERROR = traceback.format_exc()
else:
    IMPORTER_IMPORT_ERROR = None


def run(module):
    p = module.params
    result = redact_data(run_import(ImportOptions(
        synapse_config=p["synapse_config"], mas_config=p["mas_config"], mas_reader=mas_reader(p),
        synapse_database_uri=p["synapse_database_uri"], mas_database_uri=p["mas_database_uri"],
        upstream_provider_mapping=p["upstream_provider_mapping"],
        skip_unmapped_providers=p["skip_unmapped_providers"],
        dry_run=p["dry_run"] or module.check_mode,
        planned_homeserver=p["planned_homeserver"], planned_provider_mapping=p["planned_provider_mapping"],
        window_service_seconds=p["window_service_seconds"],
    )))
    result["warnings_found"] = result.pop("warnings", [])
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **database_options(),
            dry_run=dict(type="bool", default=False),
            skip_unmapped_providers=dict(type="bool", default=False),
            planned_homeserver=dict(type="str"),
            planned_provider_mapping=dict(type="list", elements="str", default=[]),
            window_service_seconds=dict(type="float"),
        ),
        required_one_of=[("mas_config", "mas_database_uri")],
        supports_check_mode=True,
    )
    require_libraries(module, IMPORTER_IMPORT_ERROR, psycopg2=True)
    exit_with(module, run, unexpected="the import")


if __name__ == "__main__":
    main()
