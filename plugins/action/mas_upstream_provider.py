# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turns Synapse's OIDC providers into MAS upstream providers: the edit runs on the controller (see plugin_utils._config_edit_action)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.matrix.syn2mas.plugins.module_utils._config_modules import MAS_UPSTREAM_PROVIDER_SPEC, edit_mas_upstream_provider
from ansible_collections.matrix.syn2mas.plugins.plugin_utils._config_edit_action import ConfigEditAction


class ActionModule(ConfigEditAction):
    SPEC = MAS_UPSTREAM_PROVIDER_SPEC

    def edit(self, params, host):
        return edit_mas_upstream_provider(params, host)

    def reads(self, params):
        # MAS's config, and Synapse's when it is on this host.
        return [params["path"], *([] if params.get("synapse_host") else params["synapse_config"] or [])]
