# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of MAS's compatibility layer (reverse_proxy.py judges): the `compat` listener resource,
and whether the reverse proxy already sends the legacy login, logout and refresh routes to MAS."""

from __future__ import annotations

from ..host import reverse_proxy
from ..config.files import LOCAL_FILES
from .registry import MAS_CONFIG, REVERSE_PROXY, NotRun, check


@check("mas_compat_resource", MAS_CONFIG, "http.listeners resources: compat (legacy login, logout, refresh)")
def mas_compat_resource(f):
    return reverse_proxy.compat_listener_findings(f.mas.raw, f.mas.where)


@check("compat_routes_reach_mas", MAS_CONFIG, "the reverse proxy sends /login, /logout and /refresh to MAS "
       "(when its file or the public URL is given)", needs=(), remedied_by=REVERSE_PROXY)
def compat_routes_reach_mas(f):
    options = f.options
    if not (options.reverse_proxy_config or options.public_url) and MAS_CONFIG in f.missing:
        return NotRun(f.missing[MAS_CONFIG])  # nothing of the proxy given, and no MAS config either
    return reverse_proxy.proxy_routes_findings(options.reverse_proxy_config, options.public_url, options.mas_url,
                                               LOCAL_FILES.read_text, options.reverse_proxy_kind)
