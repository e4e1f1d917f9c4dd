# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration advisor: every blocker and every needed action, before anything is touched.

`run_advisor` gathers the facts once (facts.py: both configs, both databases, read only), then
runs every declared check on them (checks_*.py, one function per check, see registry.py) and
returns findings, each with a severity (ERROR blocks the migration or locks users out, WARN needs
an action, INFO is for the record), a stable check id, a message with the numbers, where it was
found, the remedy, and the module of this collection that remedies it during the runbook
(`remedied_by`, or None).

The checks are those of MAS's `mas-cli syn2mas check` and of the older TypeScript advisor, plus
the ones neither has. Where the two tools disagree on a severity, the one that protects users is
chosen and the remedy says why.
"""

from __future__ import annotations

from . import checks_mas_config, checks_mas_database, checks_reverse_proxy, checks_sso_links  # noqa: F401
from . import checks_synapse_config, checks_synapse_database  # noqa: F401
from ..host import reverse_proxy
from .facts import APPLICATION_NAME, LOCK_TIMEOUT, AdvisorOptions, Facts, gather
from .registry import (
    ERROR, INFO, MAS_CONFIG, MAS_DB, REGISTRY, SEVERITY_ORDER, SYNAPSE_CONFIG, SYNAPSE_DB, WARN, NotRun,
)
from .report import EXIT_CLEAN, EXIT_ERRORS, EXIT_WARNINGS, exit_code, format_finding, format_human

# id -> (group, what it looks at), derived from the declarations.
CHECKS = {c.id: (c.group, c.looks_at) for c in REGISTRY.values()}


def judge(facts: Facts, only=None) -> tuple:
    """(findings, {check id: why not run}) of the declared checks (or of those in `only`) on `facts`."""
    findings, not_run = [], {}
    for entry in REGISTRY.values():
        if entry.judge is None or (only is not None and entry.id not in only):
            continue
        why = facts.lacks(entry.needs)
        if why is not None:
            not_run[entry.id] = why
            continue
        verdict = entry.judge(facts)
        if isinstance(verdict, NotRun):
            not_run[entry.id] = verdict.reason
            continue
        for item in [verdict] if isinstance(verdict, dict) else (verdict or []):
            findings.append(_complete(item, entry.id))
    return findings, not_run


def _complete(item: dict, check_id: str) -> dict:
    check_id = item.get("check", check_id)
    return {"severity": item["severity"], "check": check_id, "message": item["message"], "where": item["where"],
            "remedy": item["remedy"], "remedied_by": REGISTRY[check_id].remedied_by}


def run_advisor(options: AdvisorOptions) -> dict:
    """Runs every check; never raises for what it finds (a config or database error is a finding)."""
    facts, met = gather(options)
    findings, not_run = judge(facts)
    findings = [_complete(item, check_id) for check_id, item in met] + findings
    for entry in REGISTRY.values():  # the checks of what could not be read
        if entry.judge is None and entry.group in facts.missing:
            not_run.setdefault(entry.id, facts.missing[entry.group])
    return result(facts, findings, not_run)


def result(facts: Facts, findings: list, not_run: dict) -> dict:
    findings = sorted(findings, key=lambda f: SEVERITY_ORDER[f["severity"]])
    fired = {f["check"] for f in findings}
    not_run_list = [{"check": c, "reason": r} for c, r in not_run.items() if c not in fired]
    summary = {
        "errors": sum(1 for f in findings if f["severity"] == ERROR),
        "warnings": sum(1 for f in findings if f["severity"] == WARN),
        "info": sum(1 for f in findings if f["severity"] == INFO),
        "checks_run": len(CHECKS) - len(not_run_list),
        "not_run": not_run_list,
        "server_name": facts.server_name,
        "for_real_import": facts.options.for_real_import,
    }
    summary.update(facts.summary)
    summary.update(checks_synapse_database.counts_summary(facts))
    if facts.mas is not None:  # what the reverse proxy has to route (reverse_proxy.py)
        summary["reverse_proxy"] = reverse_proxy.proxy_needs(facts.settings.get("public_baseurl"), facts.mas.raw)
        # Where clients reach MAS: the runbook asks it from the controller before any stop.
        http = facts.mas.raw.get("http") if isinstance(facts.mas.raw, dict) else None
        public_base = http.get("public_base") if isinstance(http, dict) else None
        summary["mas_public_base"] = str(public_base) if public_base else None
    return {"findings": findings, "summary": summary}


__all__ = [
    "APPLICATION_NAME", "AdvisorOptions", "CHECKS", "ERROR", "EXIT_CLEAN", "EXIT_ERRORS", "EXIT_WARNINGS", "INFO",
    "LOCK_TIMEOUT", "MAS_CONFIG", "MAS_DB", "REGISTRY", "SYNAPSE_CONFIG", "SYNAPSE_DB", "WARN", "exit_code",
    "format_finding", "format_human", "gather", "judge", "run_advisor",
]
