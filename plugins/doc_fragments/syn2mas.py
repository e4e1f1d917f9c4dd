# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The configuration files and database overrides shared by syn2mas_import and syn2mas_advisor.
    DOCUMENTATION = r"""
options:
  synapse_config:
    description:
      - Paths of Synapse's configuration files (C(homeserver.yaml) and any split files), merged as Synapse
        merges them (a later file replaces a whole top-level key). A directory stands for its files named
        C(*.yaml), sorted, as Synapse reads a directory given as C(--config-path).
      - They give C(server_name), the database connection (psycopg2 C(args), or the C(databases) entry holding
        the C(main) data store) and the OIDC providers.
    type: list
    elements: path
    required: true
  mas_config:
    description:
      - Paths of MAS's configuration files, merged as MAS merges them.
      - They give the database connection (C(uri) or the split fields, C(password_file), C(socket), TLS
        options), C(matrix.homeserver) and the C(synapse_idp_id) of each upstream provider.
    type: list
    elements: path
    default: []
  synapse_database_uri:
    description:
      - A PostgreSQL URI for Synapse's database that replaces the one in O(synapse_config), for unusual setups.
    type: str
  mas_database_uri:
    description:
      - A PostgreSQL URI for MAS's database that replaces the one in O(mas_config).
    type: str
  upstream_provider_mapping:
    description:
      - Explicit C(SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID) pairs (the id as a ULID or UUID), as the documented
        C(--upstreamProviderMapping) flag; they win over C(synapse_idp_id) in MAS's config.
    type: list
    elements: str
    default: []
requirements:
  - psycopg2 (or psycopg2-binary) on the host that runs the module
  - PyYAML
"""

    # Only the database overrides, for the modules that document their configuration files their own way
    # (syn2mas_verify, syn2mas_backup, syn2mas_probe).
    DATABASE_URIS = r"""
options:
  synapse_database_uri:
    description: A PostgreSQL URI replacing the database of O(synapse_config).
    type: str
  mas_database_uri:
    description: A PostgreSQL URI replacing the database of O(mas_config).
    type: str
"""

    # MAS's config files as read on MAS's own host: every module that reads MAS's config extends this too.
    # (Each fragment is one string literal: ansible-test's yamllint reads them without running the code.)
    MAS_HOST = r"""
options:
  mas_host:
    description:
      - The inventory host that holds MAS's config files, when it is not the host this module runs on (MAS on a
        VM or in a container of its own). O(mas_config) is then read from O(mas_config_files), as read there
        (M(matrix.syn2mas.syn2mas_read_config) delegated to that host), and never from this host.
      - Errors name the path and this host.
    type: str
  mas_config_files:
    description:
      - With O(mas_host), the text of each of MAS's config files as read on O(mas_host), by path.
      - They hold secrets (database password, shared secret), kept out of logs and output.
    type: dict
  mas_config_errors:
    description:
      - With O(mas_host), why a file of O(mas_config) could not be read there, by path (a missing file is reported
        as missing on O(mas_host)).
    type: dict
    default: {}
"""
