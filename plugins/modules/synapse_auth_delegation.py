#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: synapse_auth_delegation
short_description: Make Synapse delegate authentication to MAS
version_added: 0.1.0
description:
  - Rewrites Synapse's C(homeserver.yaml) so that Matrix Authentication Service (MAS) handles logins.
  - Adds C(matrix_authentication_service) (C(enabled), C(endpoint), C(secret) or C(secret_path)). For
    Synapse older than 1.136.0 it writes the equivalent C(experimental_features.msc3861) block instead.
    From 1.136.0 an old C(msc3861) block is removed (Synapse 1.157.0 and later refuse it).
  - Turns off or removes every setting Synapse refuses to start with under MAS, and reports each one
    in RV(changes) - password login (C(password_config.enabled)), C(enable_registration),
    C(user_consent), C(oidc_providers), C(oidc_config), C(saml2_config), C(cas_config), C(jwt_config),
    C(password_providers), C(enable_registration_captcha), C(login_via_existing_session),
    C(refresh_token_lifetime), C(nonrefreshable_access_token_lifetime), C(session_lifetime) and
    C(enable_3pid_changes). Switches are set to C(false) (C(password_config.pepper) and the SSO
    sections' other settings stay); C(user_consent), C(oidc_providers), C(password_providers) and the
    lifetimes are removed.
  - With O(override_path), C(homeserver.yaml) is left untouched and all of this goes into one override
    file instead, to be loaded after the other configuration files. Synapse merges files by top-level
    key only, so a changed section (for example C(password_config)) is copied whole into the override,
    and a removed one is set to null.
author:
  - syn2mas maintainers (@matrix-syn2mas)
extends_documentation_fragment:
  - matrix.syn2mas.config_edit
options:
  path:
    description:
      - Synapse's main configuration file, C(homeserver.yaml). It is rewritten unless O(override_path) is set.
    type: path
    required: true
  extra_config_paths:
    description:
      - Further Synapse configuration files or directories loaded after O(path), in Synapse's order (its
        C(--config-path)s). A directory such as C(conf.d) is read as Synapse reads it - its files named
        C(*.yaml), sorted. They are read, never written; in the override mode, the override file is left out
        even when it is in one of these directories.
      - Without O(override_path), a setting that must change but lives in one of them makes the module fail
        with the file's name.
    type: list
    elements: path
    default: []
  override_path:
    description:
      - Write the changes to this file instead of O(path) (the conf.d mode). Synapse must load it last,
        for example as C(conf.d/zz-mas.yaml) or with a final C(--config-path).
      - A new override file gets the owner and group of O(path) and mode C(0640) (it may hold secrets, so it
        is never world-readable), so that Synapse's user, which reads its configuration by group on Debian
        (C(matrix-synapse)), can read it. O(owner), O(group) and O(mode) change that.
    type: path
  endpoint:
    description:
      - The URL where Synapse reaches MAS (an internal URL is fine). It must serve MAS's C(discovery) and
        C(oauth) resources.
    type: str
    required: true
  secret:
    description:
      - The secret shared with MAS (MAS's C(matrix.secret)), written inline.
      - With the C(msc3861) form it is the C(admin_token).
    type: str
  secret_path:
    description:
      - A file holding the shared secret, read by Synapse at start-up (instead of O(secret)).
      - With the C(msc3861) form it is the C(admin_token_path).
    type: path
  synapse_version:
    description:
      - The Synapse version the configuration is for, for example C(1.163.2). It decides between
        C(matrix_authentication_service) (1.136.0 and later) and C(experimental_features.msc3861).
      - When not set, it is detected by running O(synapse_python) on the managed host.
    type: str
  synapse_python:
    description:
      - The Python interpreter Synapse runs with on the managed host, to detect its version.
      - Defaults to C(/opt/venvs/matrix-synapse/bin/python) when it exists there (the packages of
        packages.matrix.org), otherwise the interpreter Ansible runs modules with on that host.
    type: path
  issuer:
    description:
      - C(msc3861) form only (Synapse older than 1.136.0). MAS's issuer, its public URL.
    type: str
  client_id:
    description:
      - C(msc3861) form only. The id of Synapse's client in MAS's C(clients) section.
    type: str
    default: 0000000000000000000SYNAPSE
  client_auth_method:
    description:
      - C(msc3861) form only. How Synapse authenticates to MAS.
    type: str
    default: client_secret_basic
    choices: [client_secret_basic, client_secret_post]
  client_secret:
    description:
      - C(msc3861) form only. The secret of Synapse's client in MAS's C(clients) section.
    type: str
  client_secret_path:
    description:
      - C(msc3861) form only. A file holding O(client_secret).
    type: path
  account_management_url:
    description:
      - C(msc3861) form only. The URL of MAS's account page.
    type: str
  introspection_endpoint:
    description:
      - C(msc3861) form only. MAS's introspection endpoint, to bypass a reverse proxy.
    type: str
seealso:
  - module: matrix.syn2mas.mas_synapse_link
  - module: matrix.syn2mas.mas_upstream_provider
  - name: Synapse configuration manual, matrix_authentication_service
    description: The section this module writes.
    link: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#matrix_authentication_service
'''

EXAMPLES = r'''
- name: Delegate authentication to MAS in homeserver.yaml
  matrix.syn2mas.synapse_auth_delegation:
    path: /etc/matrix-synapse/homeserver.yaml
    endpoint: http://localhost:8080/
    secret_path: /etc/matrix-synapse/mas_secret
    synapse_version: 1.163.2
    backup: true
  register: delegation

- name: Show what was turned off
  ansible.builtin.debug:
    var: delegation.changes

- name: Leave homeserver.yaml alone, write a conf.d override instead
  matrix.syn2mas.synapse_auth_delegation:
    path: /etc/matrix-synapse/homeserver.yaml
    extra_config_paths:
      - /etc/matrix-synapse/conf.d
    override_path: /etc/matrix-synapse/conf.d/zz-mas.yaml
    endpoint: http://localhost:8080/
    secret: "{{ mas_shared_secret }}"
    group: matrix-synapse
'''

RETURN = r'''
path:
  description: The file written (or that would be written in check mode).
  returned: always
  type: str
  sample: /etc/matrix-synapse/homeserver.yaml
edit_mode:
  description: V(in_place) (homeserver.yaml rewritten) or V(override) (override file written).
  returned: always
  type: str
  sample: in_place
synapse_version:
  description: The Synapse version the configuration was written for.
  returned: always
  type: str
  sample: 1.163.2
config_form:
  description: V(matrix_authentication_service) or V(experimental_features.msc3861).
  returned: always
  type: str
  sample: matrix_authentication_service
changes:
  description: Each setting added, turned off or removed, with the reason. Empty when nothing was needed.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The setting, as a dotted path.
      type: str
      sample: password_config.enabled
    action:
      description: V(set), V(disabled) or V(removed).
      type: str
      sample: disabled
    reason:
      description: Why.
      type: str
backup_file:
  description: The backup copy, when O(backup=true) and the file changed.
  returned: changed and backup requested
  type: str
  sample: /etc/matrix-synapse/homeserver.yaml.2712.2025-01-31@12:00:00~
'''

import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._config_modules import (
    SYNAPSE_AUTH_DELEGATION_SPEC, edit_synapse_auth_delegation,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    exit_with, require_libraries, write_config_edit,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import LOCAL_FILES
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.synapse_auth_delegation import detect_synapse_version


def run(module):
    # The action plugin of the same name runs instead, on the controller; this runs only when
    # the module is executed on its own, on the host whose files it edits.
    edit = edit_synapse_auth_delegation(module.params, LOCAL_FILES,
                                        lambda python: detect_synapse_version(python or sys.executable))
    return write_config_edit(module, edit)


def main():
    module = AnsibleModule(supports_check_mode=True, **SYNAPSE_AUTH_DELEGATION_SPEC)
    require_libraries(module, ruamel=True)
    exit_with(module, run)


if __name__ == "__main__":
    main()
