# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which findings a runbook run remedies: the rule beside `remedied_by`, for the fleet report.

Before the run (or in a run that never got to the advisor's second pass), a finding is remedied when its
check names a module of this collection that fixes it (`remedied_by`). After the run's second pass, the
findings left are what is left to do, and a finding of the first pass that the second no longer has was
remedied by the run. Each ERROR or WARN finding is either remedied or listed, never both.
"""

from __future__ import annotations

from .registry import ERROR, WARN

# The import the run itself made: no finding after the run (the marker it leaves is the check's finding).
MADE_BY_THE_RUN = frozenset({"mas_already_imported"})

_ACTIONABLE = (ERROR, WARN)


def split_findings(before: list, after: list | None = None) -> dict:
    """{errors, warnings, remedied, count}: `errors`/`warnings` are `check: message` lines of what is left,
    `remedied` the check ids the run remedies (or remedied), `count` every finding left (INFO included).
    `before` is the first pass (the preflight's advisor), `after` the second (None when it did not run)."""
    if after is None:
        findings, remedied, gone = list(before), [], None
    else:
        findings = [f for f in after if f["check"] not in MADE_BY_THE_RUN]
        left = {f["check"] for f in findings if f["severity"] in _ACTIONABLE}
        remedied = [f["check"] for f in before if f["severity"] in _ACTIONABLE and f["check"] not in left]
        gone = set(remedied)
    lines = {ERROR: [], WARN: []}
    for f in findings:
        if f["severity"] not in _ACTIONABLE:
            continue
        if (f.get("remedied_by") is not None) if gone is None else (f["check"] in gone):
            remedied.append(f["check"])
        else:
            lines[f["severity"]].append(f"{f['check']}: {f['message']}")
    return {"errors": lines[ERROR], "warnings": lines[WARN], "remedied": list(dict.fromkeys(remedied)),
            "count": len(findings)}
