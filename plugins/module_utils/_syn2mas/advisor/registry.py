# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The advisor's checks as declared units: each check is one function, registered with its id.

A check function takes the gathered `Facts` and returns None (nothing found), one finding, a list
of findings, or `NotRun(reason)`. `@check` records, next to the function, what the check needs
(the groups of facts it reads: the first is its group), what it looks at, and which module of
this collection remedies its findings during the runbook (`remedied_by`). `REGISTRY` is built
from these declarations alone; nothing else lists the checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ERROR, WARN, INFO = "ERROR", "WARN", "INFO"
SEVERITY_ORDER = {ERROR: 0, WARN: 1, INFO: 2}

# The groups of facts: a check whose group could not be read is reported as not run, with why.
SYNAPSE_CONFIG, SYNAPSE_DB, MAS_CONFIG, MAS_DB = "synapse_config", "synapse_database", "mas_config", "mas_database"
GROUPS = (SYNAPSE_CONFIG, SYNAPSE_DB, MAS_CONFIG, MAS_DB)
# Finer facts a check may need besides its group: Synapse's server_name, the snapshot of Synapse's
# data (the schema and the sessions are read before it), and a known provider mapping (from MAS's
# config or given explicitly).
SERVER_NAME, SYNAPSE_SNAPSHOT, MAPPING = "server_name", "synapse_snapshot", "provider_mapping"
# MAS's answers over HTTP (its health, OpenID configuration and compatibility login), asked when its URL is given.
MAS_HTTP = "mas_http"
NEEDS = GROUPS + (SERVER_NAME, SYNAPSE_SNAPSHOT, MAPPING, MAS_HTTP)

# The modules that remedy findings during the runbook (roles/auth_delegation runs all three).
SYNAPSE_AUTH_DELEGATION = "matrix.syn2mas.synapse_auth_delegation"
MAS_SYNAPSE_LINK = "matrix.syn2mas.mas_synapse_link"
MAS_UPSTREAM_PROVIDER = "matrix.syn2mas.mas_upstream_provider"
REVERSE_PROXY = "matrix.syn2mas.syn2mas_reverse_proxy"  # the reverse_proxy role, when syn2mas_reverse_proxy is set


@dataclass(frozen=True)
class Check:
    id: str
    group: str              # what it is about (one of GROUPS)
    needs: tuple            # the facts it reads; the first missing one is why it did not run
    looks_at: str           # what it reads, for the documentation
    judge: Callable | None  # None: reported while the facts are gathered (a config or database that cannot be read)
    remedied_by: str | None = None


@dataclass(frozen=True)
class NotRun:
    """What a check returns when it cannot judge (a fact it needs is missing), and why."""

    reason: str


REGISTRY: dict = {}


def _register(entry: Check) -> None:
    if entry.id in REGISTRY:
        raise ValueError(f"advisor check {entry.id!r} is declared twice")
    if entry.group not in GROUPS or any(need not in NEEDS for need in entry.needs):
        raise ValueError(f"advisor check {entry.id!r}: its group is one of {GROUPS}, its needs among {NEEDS}")
    if entry.id != entry.id.lower() or " " in entry.id or not entry.looks_at:
        raise ValueError(f"advisor check {entry.id!r}: ids are lower_snake_case and say what they look at")
    REGISTRY[entry.id] = entry


def check(check_id: str, group: str, looks_at: str, needs=None, remedied_by: str | None = None):
    """Declares the decorated function as the check `check_id`; it needs `needs` (by default its group)."""
    def register(judge):
        _register(Check(check_id, group, (group,) if needs is None else tuple(needs), looks_at, judge, remedied_by))
        judge.check_id = check_id
        return judge
    return register


def gathered(check_id: str, group: str, looks_at: str) -> str:
    """Declares a check that the gathering of facts reports (reading a config or a database)."""
    _register(Check(check_id, group, (group,), looks_at, None))
    return check_id


def finding(severity: str, message: str, where: str, remedy: str, check: str | None = None) -> dict:
    """A finding of the check that returns it, or of `check` (a declared id: a config error met on the way)."""
    if severity not in SEVERITY_ORDER:
        raise ValueError(severity)
    made = {"severity": severity, "message": message, "where": where, "remedy": remedy}
    if check is not None:
        made["check"] = check
    return made


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def examples(items) -> str:
    items = [str(i) for i in items if i is not None]
    return f" (e.g. {', '.join(items)})" if items else ""
