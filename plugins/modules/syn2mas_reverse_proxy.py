#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: syn2mas_reverse_proxy
short_description: Route legacy clients' login, logout and refresh to MAS in the reverse proxy
version_added: 0.2.0
description:
  - MAS's compatibility layer serves C(/_matrix/client/*/login), C(/logout) and C(/refresh) for clients that do not
    speak OAuth 2.0, and for the refresh tokens the import carried over; Synapse stops serving them once it delegates
    to MAS, so the reverse proxy must send them to MAS.
  - A managed proxy (nginx) has its operator's file edited; V(state=present) adds one marked C(location) block as the
    first thing in the homeserver's C(server) block of O(path), replacing an earlier one; V(state=absent) takes it
    out again, giving back the file as it was.
  - A shown proxy (Apache, Caddy, Traefik, HAProxy) gets its snippet rendered (RV(snippet)) and, when O(path) is
    given, written there as a file of its own for the operator's configuration to include; V(state=absent) removes
    that file.
  - V(state=candidate) changes nothing, in check mode or not; for a managed proxy it tests the configuration the
    proxy would have with the routes, O(path) as V(state=present) would write it, in a private copy of the
    configuration from O(main_config) (every file it includes, the copies' includes pointing to the copies), tested
    with O(candidate_test_command), then removed. The live proxy never reads the copy. It fails, with the proxy's
    words naming the operator's files, when the proxy refuses it.
  - V(state=probed) changes nothing; it asks O(public_url) for C(GET /_matrix/client/v3/login) and
    C(POST /_matrix/client/v3/refresh) and says whether MAS answered (compared with MAS's own answer at O(mas_url)
    when given).
  - It neither tests the live configuration nor reloads the proxy; it returns the commands that do
    (RV(test_command), RV(reload_command)), which the reverse_proxy role runs.
author:
  - syn2mas maintainers (@matrix-syn2mas)
options:
  kind:
    description: The reverse proxy.
    type: str
    choices: [nginx, apache, caddy, traefik, haproxy]
    default: nginx
  state:
    description:
      - V(present) adds the routes, V(absent) removes them, V(probed) only checks who answers them, V(candidate) only
        tests a configuration with them.
    type: str
    choices: [present, absent, probed, candidate]
    default: present
  path:
    description:
      - For nginx, the operator's file holding the homeserver's C(server) block (required for V(state=present) and
        V(state=candidate)).
      - For the other proxies, the snippet file to write (it must be included by the proxy's configuration); without
        it the snippet is only rendered.
      - A symlink (C(sites-enabled/) to C(sites-available/)) is followed; its target is edited and the link is kept.
    type: path
  mas_upstream:
    description: Where the proxy reaches MAS's listener with the C(compat) resource, for example C(http://127.0.0.1:8080).
    type: str
  server_name:
    description: The C(server_name) of the nginx C(server) block to add the routes to; needed when O(path) has several.
    type: str
    default: ""
  homeserver_url:
    description: The homeserver's public URL (Synapse's C(public_baseurl)); Traefik's rule matches its host name.
    type: str
    default: ""
  test_command:
    description:
      - The operator's command testing the proxy's configuration, returned as RV(test_command); empty for none.
      - Without it, the kind's own (nginx C(nginx -t); none for a shown proxy).
    type: str
  reload_command:
    description:
      - The operator's command reloading the proxy (a reload, never a restart), returned as RV(reload_command); empty
        for none.
      - Without it, the kind's own (nginx C(systemctl reload nginx); none for a shown proxy).
    type: str
  main_config:
    description:
      - The proxy's main configuration, which includes O(path) (V(state=candidate)); without it, the kind's own (nginx
        C(/etc/nginx/nginx.conf)).
    type: path
  candidate_test_command:
    description:
      - The command testing a candidate configuration (V(state=candidate)); C({config}) in it is replaced by the
        path of the candidate's main config. Without it, the kind's own (nginx C(nginx -t -q -c {config})); empty
        tests nothing (for example a proxy in a container, which cannot read the copy).
    type: str
  public_url:
    description: The homeserver's public URL to probe (V(state=probed)).
    type: str
  mas_url:
    description: MAS reached directly, to compare the answers with (V(state=probed)); empty judges them by their shape.
    type: str
    default: ""
  timeout:
    description: Seconds to wait for each answer (V(state=probed)).
    type: int
    default: 10
  validate_certs:
    description: Check the TLS certificates of O(public_url) and O(mas_url) (V(state=probed)).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: In check mode the file is not written; the result and the diff say what would change.
  diff_mode:
    support: full
    description: The diff of O(path).
  idempotent:
    support: full
    description: A second run with the same options reports RV(ignore:changed=false).
seealso:
  - module: matrix.syn2mas.syn2mas_advisor
notes:
  - Standard library only; it runs with the proxy host's own Python.
"""

EXAMPLES = r"""
- name: Send legacy logins to MAS (nginx)
  matrix.syn2mas.syn2mas_reverse_proxy:
    path: /etc/nginx/sites-available/matrix.example.com
    server_name: matrix.example.com
    mas_upstream: http://127.0.0.1:8080

- name: Render the Caddy snippet into a file the Caddyfile imports
  matrix.syn2mas.syn2mas_reverse_proxy:
    kind: caddy
    path: /etc/caddy/syn2mas-mas-compat.caddy
    mas_upstream: http://127.0.0.1:8080

- name: Test nginx's configuration with the routes, on a copy (nothing changed, nothing reloaded)
  matrix.syn2mas.syn2mas_reverse_proxy:
    state: candidate
    path: /etc/nginx/sites-available/matrix.example.com
    server_name: matrix.example.com
    mas_upstream: http://127.0.0.1:8080

- name: Check that legacy clients reach MAS through the public URL
  matrix.syn2mas.syn2mas_reverse_proxy:
    state: probed
    public_url: https://matrix.example.com
    mas_url: http://127.0.0.1:8080
"""

RETURN = r"""
path:
  description: The file edited or written.
  returned: unless state is probed
  type: str
managed:
  description: Whether O(kind) is managed (its operator's file edited, tested and reloaded) rather than shown.
  returned: unless state is probed
  type: bool
test_command:
  description: The command testing the proxy's configuration (O(test_command), else the kind's); empty for none.
  returned: when state is present or absent
  type: str
  sample: nginx -t
reload_command:
  description: The command reloading the proxy (O(reload_command), else the kind's); empty for none.
  returned: when state is present or absent
  type: str
  sample: systemctl reload nginx
tested:
  description: Whether a candidate was tested (V(false) for a shown proxy or an empty O(candidate_test_command)).
  returned: when state is candidate
  type: bool
output:
  description: What the candidate test said (warnings), the operator's paths in place of the copy's.
  returned: when state is candidate and a candidate was tested
  type: str
main_config:
  description: The main configuration the candidate was copied from.
  returned: when state is candidate
  type: str
snippet:
  description: The routes as rendered for O(kind).
  returned: when state is present
  type: str
routes:
  description: The routes MAS serves for legacy clients.
  returned: always
  type: list
  elements: str
  sample: [login, logout, refresh]
findings:
  description:
    - One per probed route, in the advisor's shape (C(severity), C(check), C(message), C(where), C(remedy)) plus
      C(route), C(status) and C(reached) (V(mas), V(not_mas) or V(unknown)).
  returned: when state is probed
  type: list
  elements: dict
reach_mas:
  description: Whether every probed route reached MAS.
  returned: when state is probed
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import exit_with, require_libraries

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host import reverse_proxy
except ImportError:  # pragma: no cover - the library imports only the standard library
    LIBRARY_IMPORT_ERROR = traceback.format_exc()
    KINDS = None  # not validated here: require_libraries fails the module first
else:
    LIBRARY_IMPORT_ERROR = None
    KINDS = list(reverse_proxy.KINDS)


def run(module):
    p = module.params
    if p["state"] == "probed":
        findings = reverse_proxy.probe_compat_routes(p["public_url"], p["mas_url"], p["timeout"], p["validate_certs"])
        return dict(changed=False, routes=list(reverse_proxy.ROUTES), findings=findings,
                    reach_mas=all(f["reached"] == "mas" for f in findings))
    if p["state"] == "candidate":
        # Only read and tested, in check mode too: the copy is private and removed, the live proxy never sees it.
        return reverse_proxy.test_candidate(
            p["kind"], p["path"], p["mas_upstream"], lambda command: module.run_command(command, use_unsafe_shell=True),
            p["server_name"], p["main_config"], p["candidate_test_command"])
    return reverse_proxy.apply(p["kind"], p["state"] == "present", p["path"] or "", p["mas_upstream"] or "",
                               p["server_name"], p["homeserver_url"], module.check_mode, module._diff,
                               p["test_command"], p["reload_command"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", choices=KINDS, default="nginx"),
            state=dict(type="str", choices=["present", "absent", "probed", "candidate"], default="present"),
            path=dict(type="path"),
            mas_upstream=dict(type="str"),
            server_name=dict(type="str", default=""),
            homeserver_url=dict(type="str", default=""),
            test_command=dict(type="str"),
            reload_command=dict(type="str"),
            main_config=dict(type="path"),
            candidate_test_command=dict(type="str"),
            public_url=dict(type="str"),
            mas_url=dict(type="str", default=""),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        required_if=[
            ("state", "present", ("mas_upstream",)),
            ("state", "candidate", ("mas_upstream",)),
            ("state", "probed", ("public_url",)),
        ],
        supports_check_mode=True,
    )
    require_libraries(module, LIBRARY_IMPORT_ERROR, yaml=False)
    exit_with(module, run)


if __name__ == "__main__":
    main()
