#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mas_synapse_link
short_description: Make MAS's configuration match the Synapse it takes over from
version_added: 0.1.0
description:
  - Edits the configuration file of Matrix Authentication Service (MAS) so that it fits the Synapse
    homeserver whose users it imports.
  - Sets C(matrix.homeserver) to Synapse's C(server_name), C(matrix.endpoint) (where MAS reaches
    Synapse) and the secret shared with Synapse (C(matrix.secret) or C(matrix.secret_file)).
  - Makes password scheme version 1 verify the hashes Synapse wrote - C(bcrypt) with
    C(unicode_normalization) on (Synapse NFKC-normalises passwords, so non-ASCII passwords would
    fail without it) and C(secret) set to Synapse's C(password_config.pepper) (or C(secret_file)).
    C(cost) follows Synapse's C(bcrypt_rounds) when that is set.
  - Adds version 2 with C(argon2id) unless a higher version exists, so hashes are upgraded when users
    log in. Other existing schemes are kept; a non-bcrypt scheme that had version 1 (MAS's default
    configuration has argon2id there) is renumbered to the next free version.
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
        a directory stands for its files named C(*.yaml), sorted).
    type: list
    elements: path
    required: true
  endpoint:
    description:
      - Where MAS reaches Synapse's client API, for example C(http://localhost:8008/).
      - When not set, an existing C(matrix.endpoint) is kept; without one, Synapse's C(public_baseurl) is
        used (the reverse proxy must then forward C(/_synapse/mas) with the Authorization header).
    type: str
  secret:
    description:
      - The secret shared with Synapse (its C(matrix_authentication_service.secret)), written inline as
        C(matrix.secret).
      - When neither this nor O(secret_file) is set, the existing one is kept; the module fails if there is none.
    type: str
  secret_file:
    description:
      - A file holding the shared secret, written as C(matrix.secret_file) (MAS trims it, as Synapse does).
    type: path
  pepper_file:
    description:
      - Write Synapse's pepper as C(secret_file) of password scheme version 1 instead of inline.
      - The file must already hold exactly the pepper, without a trailing newline (MAS reads it untrimmed);
        the module reads it on the managed host to check that, and fails otherwise.
    type: path
  kind:
    description:
      - C(matrix.kind), how MAS talks to Synapse. Not changed when not set.
    type: str
    choices: [synapse, synapse_modern, synapse_legacy, synapse_read_only]
seealso:
  - module: matrix.syn2mas.synapse_auth_delegation
  - module: matrix.syn2mas.mas_upstream_provider
  - name: MAS migration guide
    description: Local passwords and the Synapse pepper.
    link: https://element-hq.github.io/matrix-authentication-service/setup/migration.html
'''

EXAMPLES = r'''
- name: Link MAS to Synapse and accept Synapse's password hashes
  matrix.syn2mas.mas_synapse_link:
    path: /etc/mas/config.yaml
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    endpoint: http://localhost:8008/
    secret: "{{ mas_shared_secret }}"
    backup: true

- name: Keep the pepper out of config.yaml
  matrix.syn2mas.mas_synapse_link:
    path: /etc/mas/config.yaml
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
    secret_file: /etc/mas/synapse_secret
    pepper_file: /etc/mas/synapse_pepper
'''

RETURN = r'''
matrix:
  description: The C(matrix) section after the change, without the secret.
  returned: always
  type: dict
  contains:
    homeserver:
      description: Synapse's server_name.
      type: str
      sample: example.com
    endpoint:
      description: Where MAS reaches Synapse.
      type: str
      sample: http://localhost:8008/
    kind:
      description: C(matrix.kind), null when not set (MAS's default, C(synapse)).
      type: str
    secret_file:
      description: C(matrix.secret_file), null when the secret is inline.
      type: str
    has_secret:
      description: Whether a shared secret is configured.
      type: bool
password_schemes:
  description: The password schemes after the change, without secret values.
  returned: always
  type: list
  elements: dict
  sample:
    - {version: 1, algorithm: bcrypt, unicode_normalization: true, has_secret: true}
    - {version: 2, algorithm: argon2id, unicode_normalization: false, has_secret: false}
changes:
  description: What was changed, and why.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The setting.
      type: str
      sample: passwords.schemes[version 1]
    action:
      description: V(set), V(added) or V(renumbered).
      type: str
    reason:
      description: Why.
      type: str
backup_file:
  description: The backup copy, when O(backup=true) and the file changed.
  returned: changed and backup requested
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.syn2mas.plugins.module_utils._config_modules import (
    MAS_SYNAPSE_LINK_SPEC, edit_mas_synapse_link,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._module_support import (
    exit_with, require_libraries, write_config_edit,
)
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import LOCAL_FILES


def run(module):
    # The action plugin of the same name runs instead, on the controller; this runs only when
    # the module is executed on its own, on the host whose files it edits.
    return write_config_edit(module, edit_mas_synapse_link(module.params, LOCAL_FILES))


def main():
    module = AnsibleModule(supports_check_mode=True, **MAS_SYNAPSE_LINK_SPEC)
    require_libraries(module, ruamel=True)
    exit_with(module, run)


if __name__ == "__main__":
    main()
