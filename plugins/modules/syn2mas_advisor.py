#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_advisor
short_description: Find every blocker and every needed action before moving Synapse onto MAS
version_added: 0.1.0
description:
  - Reads Synapse's and Matrix Authentication Service's configuration files and databases and reports what
    would make the migration fail or make users lose access, with the remedy for each finding.
  - Runs the checks of C(mas-cli syn2mas check) and of the older TypeScript advisor, plus more (users of
    another server name, rows whose user or device is gone, a running Synapse, Synapse's schema version,
    MAS's schema and emptiness, the version-1 password scheme's C(unicode_normalization) and pepper,
    SSO links of CAS, SAML or removed providers, C(experimental_features.msc3861), appservice users...).
  - Each finding has a severity (C(ERROR) blocks the migration, C(WARN) needs an action, C(INFO)), a stable
    check id, a message with the numbers, where it was found and the remedy.
  - Never writes to either database (Synapse is read in a read-only snapshot, MAS in read-only transactions),
    so it is safe on a live homeserver and always reports C(changed=false).
  - Without O(mas_config), the checks of MAS's config and database are reported as not run.
extends_documentation_fragment:
  - matrix.syn2mas.syn2mas
  - matrix.syn2mas.syn2mas.mas_host
options:
  for_real_import:
    description:
      - Advise right before the real import. Other clients connected to Synapse's (or MAS's) database, that is
        a running Synapse (or MAS), are then an C(ERROR) instead of an C(INFO).
    type: bool
    default: false
  reverse_proxy_config:
    description:
      - The reverse proxy's file with the homeserver's C(server) block; the advisor says whether it routes
        C(/_matrix/client/*/login), C(/logout) and C(/refresh) to MAS already (MAS's compatibility layer).
      - Read only for a proxy whose files the collection reads (nginx); see O(reverse_proxy_kind).
    type: path
  reverse_proxy_kind:
    description: The reverse proxy O(reverse_proxy_config) belongs to (a kind of M(matrix.syn2mas.syn2mas_reverse_proxy)).
    type: str
    default: nginx
  public_url:
    description:
      - The homeserver's public URL; the advisor asks it for C(GET /_matrix/client/v3/login) and
        C(POST /_matrix/client/v3/refresh) and says whether MAS answers them.
    type: str
  mas_url:
    description:
      - MAS as this host reaches it (where Synapse reaches it, C(matrix_authentication_service.endpoint)).
      - The advisor asks it for C(/health), C(/.well-known/openid-configuration) (whose issuer must be the one
        MAS's config declares) and the compatibility login's flows; a MAS that does not answer there, or answers
        as another MAS, is an C(ERROR) of check C(mas_answers) naming the URL tried. Without it, that check is
        not run.
      - Also what the answers through O(public_url) are compared with.
    type: str
  fail_on:
    description:
      - When the task fails.
      - V(error) fails when there is at least one C(ERROR) finding, V(warning) also on C(WARN) findings,
        V(never) only reports.
    type: str
    choices: [error, warning, never]
    default: error
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same way in check mode.
  diff_mode:
    support: none
    description: The module changes nothing, so there is no diff; it reports findings instead.
  idempotent:
    support: full
    description: The module only reads and always reports RV(ignore:changed=false).
seealso:
  - module: matrix.syn2mas.syn2mas_import
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Advise days before the migration (Synapse keeps running)
  matrix.syn2mas.syn2mas_advisor:
    synapse_config:
      - /etc/matrix-synapse/homeserver.yaml
      - /etc/matrix-synapse/conf.d/database.yaml
    mas_config:
      - /etc/mas/config.yaml
  register: syn2mas_advice

- name: Show what needs doing
  ansible.builtin.debug:
    msg: "{{ syn2mas_advice.errors + syn2mas_advice.warnings }}"

- name: Gate the real import on a clean advice, warnings included
  matrix.syn2mas.syn2mas_advisor:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    mas_config: [/etc/mas/config.yaml]
    for_real_import: true
    fail_on: warning

- name: Only report, for a fleet-wide survey
  matrix.syn2mas.syn2mas_advisor:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    fail_on: never
  register: syn2mas_survey
"""

RETURN = r"""
findings:
  description: Every finding, ERROR first, then WARN, then INFO.
  returned: always
  type: list
  elements: dict
  contains:
    severity:
      description: C(ERROR) (blocks the migration), C(WARN) (needs an action) or C(INFO).
      type: str
      sample: ERROR
    check:
      description: The stable id of the check.
      type: str
      sample: mas_password_unicode_normalization
    message:
      description: What was found, with the numbers and a few examples.
      type: str
    where:
      description: Where it was found (a file and key, or a database table).
      type: str
      sample: "/etc/mas/config.yaml: passwords.schemes[0].unicode_normalization"
    remedy:
      description: How to fix it.
      type: str
    remedied_by:
      description:
        - The module of this collection that remedies the finding when the runbook runs it (the auth_delegation
          role runs them all), or V(null). The preflight role's gate lets such findings pass and lists them as
          remedied.
      type: str
      sample: matrix.syn2mas.mas_synapse_link
  sample:
    - severity: WARN
      check: registration_enabled
      message: "open registration is enabled (enable_registration: true)"
      where: "/etc/matrix-synapse/homeserver.yaml: enable_registration"
      remedy: At the switch to MAS, remove enable_registration from homeserver.yaml...
      remedied_by: matrix.syn2mas.synapse_auth_delegation
summary:
  description: Counts per severity (C(errors), C(warnings), C(info)), the checks not run and why (C(not_run)),
    and what the import would carry over (C(users), C(passwords), C(devices), C(access_tokens),
    C(refresh_tokens), C(counts) per stage), the Synapse schema version and the MAS schema release.
  returned: always
  type: dict
  sample:
    errors: 0
    warnings: 1
    info: 2
    not_run: [{check: mas_schema, reason: "no MAS config given (--masConfigFile / mas_config)"}]
    users: 1234
    devices: 2345
errors:
  description: "The ERROR findings, one line each (C(check: message [where] -> remedy))."
  returned: always
  type: list
  elements: str
warnings_found:
  description:
    - "The WARN findings, one line each (C(check: message [where] -> remedy))."
    - They are also shown as Ansible warnings; this key keeps them in the registered result, which Ansible's own
      C(warnings) key does not.
  returned: always
  type: list
  elements: str
exit_code:
  description: The C(syn2mas --command advisor) exit code of the same result (0 clean, 10 errors, 11 warnings only).
  returned: always
  type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    database_options, exit_with, mas_reader, require_libraries,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import RefusedError, redact_data, with_result

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.advisor import AdvisorOptions, run_advisor
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.advisor.report import (
        FAIL_ON, gate, module_result,
    )
except ImportError:  # pragma: no cover - the library itself imports only the stdlib and the two above
    ADVISOR_IMPORT_ERROR = traceback.format_exc()
    FAIL_ON = ("error", "warning", "never")
else:
    ADVISOR_IMPORT_ERROR = None


def run(module):
    # Read-only: the same run in check mode and outside it. What it finds (unreadable configs and
    # unreachable databases included) comes back as findings; an exception here is a bug.
    p = module.params
    result = module_result(redact_data(run_advisor(AdvisorOptions(
        synapse_config=p["synapse_config"], mas_config=p["mas_config"], mas_reader=mas_reader(p),
        synapse_database_uri=p["synapse_database_uri"], mas_database_uri=p["mas_database_uri"],
        upstream_provider_mapping=p["upstream_provider_mapping"], for_real_import=p["for_real_import"],
        reverse_proxy_config=p["reverse_proxy_config"] or "", reverse_proxy_kind=p["reverse_proxy_kind"],
        public_url=p["public_url"] or "",
        mas_url=p["mas_url"] or "",
    ))))
    failure = gate(result, p["fail_on"])
    if failure:
        raise with_result(RefusedError(failure), result)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **database_options(),
            for_real_import=dict(type="bool", default=False),
            reverse_proxy_config=dict(type="path"),
            reverse_proxy_kind=dict(type="str", default="nginx"),
            public_url=dict(type="str"),
            mas_url=dict(type="str"),
            fail_on=dict(type="str", choices=list(FAIL_ON), default="error"),
        ),
        supports_check_mode=True,
    )
    require_libraries(module, ADVISOR_IMPORT_ERROR, psycopg2=True)
    exit_with(module, run, unexpected="the migration advisor")


if __name__ == "__main__":
    main()
