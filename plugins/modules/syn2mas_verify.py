#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_verify
short_description: Prove after the migration that MAS holds what Synapse had, and that clients reach MAS
version_added: 0.2.0
description:
  - Data (O(data=true)) recomputes from Synapse's database what the import had to write into MAS, with the
    import's own queries and the parameters it recorded, and compares it with MAS's tables entity by entity
    (users, passwords, emails, other third-party ids, SSO links, device and deviceless sessions, access and
    refresh tokens) by digest. Each entity reports rows expected, found, missing, different and unexpected,
    with a few named examples (user names, device ids; never a token or a hash), and the rows Synapse skipped
    with their reasons. Rows Synapse gained after the import (a login) are reported as Synapse having changed,
    not as damage.
  - Live checks (when O(synapse_url) is given), made from the host the module runs on, after Synapse started
    on MAS. Synapse answers C(/health), its own password login is gone, its auth metadata and
    C(.well-known/matrix/client) name MAS's issuer; where O(mas_url) is reachable, MAS's C(/health), its OpenID
    configuration (issuer) and its compatibility login answer. What could not be proven because MAS was
    unreachable is a warning saying so.
  - It only reads, both databases in READ ONLY transactions, and makes only HTTP GET requests.
extends_documentation_fragment:
  - matrix.syn2mas.read_only
  - matrix.syn2mas.syn2mas.database_uris
  - matrix.syn2mas.syn2mas.mas_host
options:
  synapse_config:
    description:
      - Synapse's configuration files, merged as Synapse merges them (a directory stands for its C(*.yaml)
        files). Required with O(data=true).
    type: list
    elements: path
    default: []
  mas_config:
    description: MAS's configuration files (its database, and its issuer for the live checks).
    type: list
    elements: path
    default: []
  data:
    description:
      - Verify the imported data against Synapse's database.
    type: bool
    default: true
  recompute_from_synapse:
    description:
      - Recompute every row MAS must hold from Synapse's database, even while Synapse's tables are as the import
        read them. By default MAS is then compared with the digests the import took of the rows it wrote (in its
        transaction), and Synapse is read only for an entity whose totals differ; that the rows written are
        Synapse's is what the import's dry run proves. This is the proof against Synapse itself, for an audit,
        at the cost of a pass over Synapse's tables.
    type: bool
    default: false
  fail_on_mismatch:
    description:
      - Fail when a row is missing, different or unexpected in MAS, or a live check found an error.
      - Warnings (not proven, Synapse changed since the import) never fail the module.
    type: bool
    default: true
  synapse_url:
    description:
      - Synapse's client listener as this host reaches it, for example V(http://localhost:8008). Live checks run
        when it is given.
    type: str
  mas_url:
    description:
      - MAS's HTTP listener as this host reaches it, for example V(http://localhost:8080/). Without it (or when it
        does not answer), MAS's own checks are reported as not proven.
    type: str
  issuer:
    description:
      - MAS's issuer that Synapse, the C(.well-known) and MAS must name. Default C(http.issuer), else
        C(http.public_base), of O(mas_config).
    type: str
  well_known_url:
    description:
      - The public URL of C(.well-known/matrix/client). Default Synapse's own C(/.well-known/matrix/client).
    type: str
  validate_certs:
    description:
      - Check TLS certificates of the checked URLs.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each HTTP answer.
    type: float
    default: 10
requirements:
  - psycopg2 and PyYAML on the host that runs the module (for O(data=true)); the live checks need only Python
seealso:
  - module: matrix.syn2mas.syn2mas_import
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Verify the import (Synapse still stopped); a mismatch fails the host
  matrix.syn2mas.syn2mas_verify:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml, /etc/matrix-synapse/conf.d]
    mas_config: [/etc/mas/config.yaml]

- name: Live checks once Synapse runs on MAS
  matrix.syn2mas.syn2mas_verify:
    data: false
    mas_config: [/etc/mas/config.yaml]
    synapse_url: http://localhost:8008
    mas_url: http://localhost:8080/
    well_known_url: https://example.org/.well-known/matrix/client
  register: live
"""

RETURN = r"""
verdict:
  description: One line per part that ran (data, live checks).
  returned: always
  type: list
  elements: str
  sample: ["verified: 1234 rows in 9 entities, 0 missing", "live checks passed: 5 of 6; not proven: mas_reachable"]
data:
  description: The data verification (with O(data=true)); C(entities) per stage with C(expected), C(found),
    C(missing), C(different), C(unexpected), C(changed_in_synapse), C(changed_in_mas), C(added_in_mas),
    C(skipped) (reason to count), C(examples) (per kind, each naming the user, device or token and, for a
    different row, its columns), C(columns) (the compared columns), C(remembered) (whether the import
    recorded what it wrote) and C(expected_from) (C(import) when MAS is compared with the digests the import
    recorded of the rows it wrote, Synapse being unchanged since, else C(synapse), read again); C(totals); C(schema) (the
    rebuilt constraints and indexes checked, C(problems));
    C(marker) (whether the import's marker is as written, C(problems)); C(notes) (what this verification cannot
    tell apart); C(damaged) (the entities with anything missing, different or unexpected, plus C(schema) or
    C(marker)); C(ok); C(exit_code) (0, or 12 on any damage).
  returned: when O(data=true)
  type: dict
live:
  description: The live checks (when O(synapse_url) is given); C(checks) each with C(check), C(level)
    (OK, WARN or ERROR), C(message), C(remedy) and C(url); C(ok), C(errors), C(warnings), C(passed).
  returned: when O(synapse_url) is given
  type: dict
ok:
  description: Nothing missing, different or unexpected, and no live check in error.
  returned: always
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import database_options, mas_reader, require_libraries

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import Syn2masError

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config import load_mas_config
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.migration.live_checks import (
        LiveOptions, mas_issuer, run_live_checks,
    )
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.migration.verify import VerifyOptions, run_verify
except ImportError:  # pragma: no cover - the library itself imports only the stdlib and the two below
    VERIFY_IMPORT_ERROR = traceback.format_exc()
else:
    VERIFY_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **database_options(synapse_required=False, mapping=False),
            data=dict(type="bool", default=True),
            fail_on_mismatch=dict(type="bool", default=True),
            recompute_from_synapse=dict(type="bool", default=False),
            synapse_url=dict(type="str"),
            mas_url=dict(type="str"),
            issuer=dict(type="str"),
            well_known_url=dict(type="str"),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="float", default=10),
        ),
        required_if=[("data", True, ("synapse_config",))],
        supports_check_mode=True,
    )
    require_libraries(module, VERIFY_IMPORT_ERROR, psycopg2=module.params["data"])
    params = module.params
    # Read-only: the same run in check mode and outside it.
    result = dict(changed=False, verdict=[], ok=True)
    try:
        if params["data"]:
            if not params["mas_config"] and not params["mas_database_uri"]:
                module.fail_json(msg="mas_config (or mas_database_uri) is needed to verify the data")
            data = run_verify(VerifyOptions(
                synapse_config=params["synapse_config"], mas_config=params["mas_config"], mas_reader=mas_reader(params),
                synapse_database_uri=params["synapse_database_uri"], mas_database_uri=params["mas_database_uri"],
                recompute=params["recompute_from_synapse"],
            ))
            result["data"] = data
            result["verdict"].append(data["verdict"])
            result["ok"] = data["ok"]
            if data["synapse_changed_since_import"]:
                module.warn(data["verdict"])
        if params["synapse_url"]:
            issuer = params["issuer"]
            if issuer is None and params["mas_config"]:
                issuer = mas_issuer(load_mas_config(params["mas_config"], mas_reader(params)).raw)
            live = run_live_checks(LiveOptions(
                synapse_url=params["synapse_url"], mas_url=params["mas_url"], issuer=issuer,
                well_known_url=params["well_known_url"], validate_certs=params["validate_certs"],
                timeout=params["timeout"],
            ))
            result["live"] = live
            result["verdict"].append(live["verdict"])
            result["ok"] = result["ok"] and live["ok"]
            for check in live["checks"]:
                if check["level"] == "WARN":
                    module.warn(f"{check['check']}: {check['message']}")
    except Syn2masError as exc:
        module.fail_json(msg=str(exc), **result)
    if params["fail_on_mismatch"] and not result["ok"]:
        module.fail_json(msg="; ".join(result["verdict"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
