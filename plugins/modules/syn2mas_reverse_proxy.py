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
  - For nginx (V(state=present)), adds one marked C(location) block as the first thing in the homeserver's C(server)
    block of O(path), replacing an earlier one; V(state=absent) takes it out again, giving back the file as it was.
  - For Apache, Caddy, Traefik and HAProxy, renders the snippet (RV(snippet)) and, when O(path) is given, writes it
    there as a file of its own for the operator's configuration to include; V(state=absent) removes that file.
  - V(state=probed) changes nothing; it asks O(public_url) for C(GET /_matrix/client/v3/login) and
    C(POST /_matrix/client/v3/refresh) and says whether MAS answered (compared with MAS's own answer at O(mas_url)
    when given).
  - It neither tests nor reloads the proxy; the reverse_proxy role does (C(nginx -t), then a reload).
author:
  - syn2mas maintainers (@matrix-syn2mas)
options:
  kind:
    description: The reverse proxy.
    type: str
    choices: [nginx, apache, caddy, traefik, haproxy]
    default: nginx
  state:
    description: V(present) adds the routes, V(absent) removes them, V(probed) only checks who answers them.
    type: str
    choices: [present, absent, probed]
    default: present
  path:
    description:
      - For nginx, the operator's file holding the homeserver's C(server) block (required unless V(state=probed)).
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

import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas import reverse_proxy
    from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import Syn2masError
except ImportError:  # pragma: no cover - the library imports only the standard library
    LIBRARY_IMPORT_ERROR = traceback.format_exc()
else:
    LIBRARY_IMPORT_ERROR = None


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(module, path, text):
    # Atomically, keeping the file's owner and mode (atomic_move copies them from the old file). A
    # symlink (Debian's sites-enabled -> sites-available) stays one: its target gets the new text.
    target = os.path.realpath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".syn2mas-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if not os.path.exists(target):
        os.chmod(tmp, 0o644)  # a proxy's config is not secret, and the proxy's own user reads it
    module.atomic_move(tmp, target)


def _new_text(params, before, snippet):
    kind, state = params["kind"], params["state"]
    if kind == "nginx":
        if before is None:
            raise Syn2masError(f"{params['path']}: file not found (the nginx file with the homeserver's server block)")
        if state == "absent":
            return reverse_proxy.nginx_remove_routes(before)
        return reverse_proxy.nginx_add_routes(before, params["mas_upstream"], params["server_name"], params["path"])
    if state == "absent":
        # Only a file this module wrote is removed.
        return None if before is not None and reverse_proxy.BEGIN_MARK in before else before
    return snippet  # the other proxies' snippets have no indentation to fit


def run(module):
    params = module.params
    result = dict(changed=False, routes=list(reverse_proxy.ROUTES))
    if params["state"] == "probed":
        findings = reverse_proxy.probe_compat_routes(params["public_url"], params["mas_url"], params["timeout"],
                                                     params["validate_certs"])
        result.update(findings=findings, reach_mas=all(f["reached"] == "mas" for f in findings))
        return result
    path = params["path"]
    if params["state"] == "present":
        result["snippet"] = reverse_proxy.render(params["kind"], params["mas_upstream"], params["homeserver_url"])
    if not path:
        return result
    result["path"] = path
    before = _read(path)
    after = _new_text(params, before, result.get("snippet"))
    if after == before:
        return result
    result["changed"] = True
    if module._diff:
        result["diff"] = dict(before_header=path, after_header=path, before=before or "", after=after or "")
    if not module.check_mode:
        if after is None:
            os.unlink(path)
        else:
            _write(module, path, after)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", choices=["nginx", "apache", "caddy", "traefik", "haproxy"], default="nginx"),
            state=dict(type="str", choices=["present", "absent", "probed"], default="present"),
            path=dict(type="path"),
            mas_upstream=dict(type="str"),
            server_name=dict(type="str", default=""),
            homeserver_url=dict(type="str", default=""),
            public_url=dict(type="str"),
            mas_url=dict(type="str", default=""),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        required_if=[
            ("state", "present", ("mas_upstream",)),
            ("state", "probed", ("public_url",)),
        ],
        supports_check_mode=True,
    )
    if LIBRARY_IMPORT_ERROR:
        module.fail_json(msg="cannot import the matrix.syn2mas library", exception=LIBRARY_IMPORT_ERROR)
    if module.params["kind"] == "nginx" and module.params["state"] != "probed" and not module.params["path"]:
        module.fail_json(msg="path is required for nginx: the file with the homeserver's server block")
    try:
        result = run(module)
    except Syn2masError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
