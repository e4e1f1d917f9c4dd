# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reads configuration files on the host (the module syn2mas_read_config); with mas_secret_files, also the
files MAS's config names that the collection reads (its database password file, say), on that same host.

The host's bare Python cannot parse YAML, so MAS's config is parsed here, on the controller, to find those
paths; they are read by a second run of the module there. Nothing is written anywhere.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config import load_mas_config
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.errors import Syn2masError
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.config.files import FilesRead

MODULE = "matrix.syn2mas.syn2mas_read_config"


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused
        args = dict(self._task.args)
        follow = boolean(args.pop("mas_secret_files", False), strict=False)
        read = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        result.update(read)
        if read.get("failed") or not follow:
            return result
        try:
            # In the order the module read them (the order MAS merges them in).
            mas = load_mas_config(list(read["files"]), FilesRead(read.get("host"), read["files"], read.get("dirs"),
                                                                 read.get("errors")))
            wanted = [path for path in mas.secret_files() if path not in read["files"]]
        except Syn2masError:  # a config that does not parse: the modules that use it say where
            wanted = []
        result["secret_files"] = wanted
        if wanted:
            more = self._execute_module(module_name=MODULE, module_args={"paths": wanted}, task_vars=task_vars)
            if more.get("failed"):
                result.update(failed=True, msg=f"reading the files MAS's config names failed: {more.get('msg')}")
                return result
            result["files"] = dict(read["files"], **more.get("files", {}))
            result["errors"] = dict(read.get("errors") or {}, **more.get("errors", {}))
        return result
