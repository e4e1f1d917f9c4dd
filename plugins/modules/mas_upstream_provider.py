#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mas_upstream_provider
short_description: Turn Synapse's OIDC providers into MAS upstream providers
version_added: 0.1.0
description:
  - Converts Synapse's C(oidc_providers) entries (and the legacy C(oidc_config)) into entries of
    C(upstream_oauth2.providers) in the configuration file of Matrix Authentication Service (MAS).
  - Each MAS entry gets C(synapse_idp_id) set to what Synapse stored for its users
    (C(oidc-<idp_id>), or C(oidc) for the legacy section), so the import links users to it.
  - Issuer and discovery or explicit endpoints, client id, client secret (inline or C(client_secret_file)),
    token endpoint auth method, scopes, PKCE, userinfo use, back-channel logout and the user mapping
    templates (as C(claims_imports)) are converted.
  - Synapse options MAS has no equivalent for are reported as warnings, never silently dropped.
  - Provider ids are ULIDs and stable. An entry with the same C(synapse_idp_id) keeps its id and the
    keys this module does not manage; a new entry gets an id computed from Synapse's C(server_name), its
    C(synapse_idp_id), issuer and client id, the same on every run (a run repeated after a rollback gives it the
    id of the row C(mas-cli config sync) wrote before, so MAS's database keeps one row per provider).
  - Users must register the returned RV(providers[].redirect_uri) at each IdP, since Synapse's callback
    C(/_synapse/client/oidc/callback) stops working when MAS takes over.
author:
  - syn2mas maintainers (@matrix-syn2mas)
extends_documentation_fragment:
  - matrix.syn2mas.config_edit
  - matrix.syn2mas.config_edit.synapse_host
options:
  path:
    description:
      - MAS's configuration file (C(config.yaml)). It must exist.
    type: path
    required: true
  synapse_config:
    description:
      - Synapse's configuration files or directories, in the order Synapse loads them (its C(--config-path)s;
        a directory stands for its files named C(*.yaml), sorted). A later file replaces whole top-level keys
        of an earlier one.
      - Required with O(state=present), and with O(state=absent) when O(synapse_idp_id) is not set.
    type: list
    elements: path
  synapse_idp_id:
    description:
      - The one provider to manage, as MAS's C(synapse_idp_id) (C(oidc-google), C(oidc)) or as Synapse's
        C(idp_id) (C(google)).
      - When not set, all of Synapse's OIDC providers are managed. A legacy C(oidc_config) that Synapse
        ignores (its C(enabled) is not true) is then skipped with a warning.
    type: str
  state:
    description:
      - V(present) adds or updates the MAS entries, V(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
  public_base:
    description:
      - MAS's public URL, used to build the returned redirect URIs.
      - Defaults to C(http.public_base) of the MAS configuration.
    type: str
seealso:
  - module: matrix.syn2mas.synapse_auth_delegation
  - module: matrix.syn2mas.mas_synapse_link
  - name: MAS documentation on upstream providers
    description: Configuring upstream OAuth 2.0 / OIDC providers in MAS.
    link: https://element-hq.github.io/matrix-authentication-service/setup/sso.html
'''

EXAMPLES = r'''
- name: Configure every Synapse OIDC provider in MAS
  matrix.syn2mas.mas_upstream_provider:
    path: /etc/mas/config.yaml
    synapse_config:
      - /etc/matrix-synapse/homeserver.yaml
      - /etc/matrix-synapse/conf.d
    backup: true
  register: mas_providers

- name: Show the redirect URIs to register at the IdPs
  ansible.builtin.debug:
    msg: "{{ item.synapse_idp_id }}: {{ item.redirect_uri }}"
  loop: "{{ mas_providers.providers }}"

- name: Manage only the Google provider
  matrix.syn2mas.mas_upstream_provider:
    path: /etc/mas/config.yaml
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    synapse_idp_id: oidc-google

- name: Remove the MAS entry of a provider
  matrix.syn2mas.mas_upstream_provider:
    path: /etc/mas/config.yaml
    synapse_idp_id: oidc-google
    state: absent
'''

RETURN = r'''
providers:
  description: The providers handled, in the order of the Synapse configuration.
  returned: always
  type: list
  elements: dict
  contains:
    synapse_idp_id:
      description: The C(auth_provider) Synapse stored for the provider's users.
      type: str
      sample: oidc-google
    id:
      description: The MAS provider id (a ULID). Empty when an absent provider was not configured.
      type: str
      sample: 01JDR8N1QZ5F1T6GQ4B6V5S7XK
    action:
      description: V(added), V(updated), V(unchanged), V(removed) or V(absent) (nothing to remove).
      type: str
      sample: added
    human_name:
      description: The name shown on MAS's login page.
      type: str
      sample: Google
    issuer:
      description: The provider's issuer.
      type: str
      sample: https://accounts.google.com/
    redirect_uri:
      description:
        - MAS's callback for this provider, to register at the IdP. Null when MAS's public URL is unknown
          (set O(public_base) or C(http.public_base)).
      type: str
      sample: https://auth.example.com/upstream/callback/01JDR8N1QZ5F1T6GQ4B6V5S7XK
    source:
      description: Where the provider is in Synapse's configuration.
      type: str
      sample: "/etc/matrix-synapse/homeserver.yaml: oidc_providers[0]"
    warnings:
      description: Synapse options of this provider that were not converted, and why.
      type: list
      elements: str
redirect_uris:
  description: Map of C(synapse_idp_id) to the redirect URI to register at that IdP.
  returned: always
  type: dict
  sample: {"oidc-google": "https://auth.example.com/upstream/callback/01JDR8N1QZ5F1T6GQ4B6V5S7XK"}
backup_file:
  description: The backup copy, when O(backup=true) and the file changed.
  returned: changed and backup requested
  type: str
  sample: /etc/mas/config.yaml.2712.2025-01-31@12:00:00~
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._config_modules import (
    MAS_UPSTREAM_PROVIDER_SPEC, edit_mas_upstream_provider,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    exit_with, require_libraries, write_config_edit,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import LOCAL_FILES


def run(module):
    # The action plugin of the same name runs instead, on the controller; this runs only when
    # the module is executed on its own, on the host whose files it edits.
    return write_config_edit(module, edit_mas_upstream_provider(module.params, LOCAL_FILES))


def main():
    module = AnsibleModule(supports_check_mode=True, **MAS_UPSTREAM_PROVIDER_SPEC)
    require_libraries(module, ruamel=True)
    exit_with(module, run)


if __name__ == "__main__":
    main()
