# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Makes Synapse delegate authentication to MAS: the edit runs on the controller (see plugin_utils._config_edit_action)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.matrix.syn2mas.plugins.module_utils._config_modules import (
    SYNAPSE_AUTH_DELEGATION_SPEC, edit_synapse_auth_delegation,
)
from ansible_collections.matrix.syn2mas.plugins.plugin_utils._config_edit_action import ConfigEditAction


class ActionModule(ConfigEditAction):
    SPEC = SYNAPSE_AUTH_DELEGATION_SPEC

    def edit(self, params, host):
        return edit_synapse_auth_delegation(params, host, host.synapse_version)

    def reads(self, params):
        # Synapse's configuration, and the override file (when it is one already there).
        return [params["path"], *params["extra_config_paths"], params.get("override_path")]
