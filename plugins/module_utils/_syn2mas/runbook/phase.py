# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the runbook records of a host's run, step by step: when each phase started (the marks the fleet report
times the phases and the downtime by), the outcome, the error, the phase a failure happened in, and whether the
host was rolled back. These are the playbook's own facts that `fleet_report.RUN_FACTS` reads.

`record` is the one rule for them; the action matrix.syn2mas.syn2mas_phase applies it at each step of
migrate.yml. Not here: running the phases (the roles do) or reading the marks back (fleet_report does).
"""

from __future__ import annotations

from .fleet_report import DOWNTIME_END, DOWNTIME_START, PHASE_ORDER, RUN_FACTS

# A phase is marked when it starts; `synapse_healthy` (Synapse up again) ends the downtime and is no phase.
MARKS = PHASE_ORDER + (DOWNTIME_END,)
FIRST = PHASE_ORDER[0]  # marking it starts the host's run
ROLLBACK, END = "rollback", "end"
# Facts of the run that are the runbook's own bookkeeping, not read by the report.
STARTED, STOPPED = "syn2mas_host_started", "syn2mas_synapse_stopped"
FACTS = tuple(RUN_FACTS.values()) + (STARTED, STOPPED)


def failed_phase(marks: dict) -> str:
    """The phase a failure happened in: the last one marked (Synapse healthy again is no phase)."""
    started = sorted((float(at), name) for name, at in marks.items() if name != DOWNTIME_END)
    return started[-1][1] if started else FIRST


def record(facts: dict, now: float, phase=None, outcome=None, error=None, error_notes=(), rolled_back=None) -> dict:
    """The run's facts after this step (only those it sets), from `facts` (the host's current values of FACTS;
    absent ones missing) and `now` (epoch seconds).

    - `phase`: the phase that starts now. The first phase (backup) starts the host's run afresh; `synapse_stop`
      marks that Synapse may be going down from here on, so a failure rolls back; `rollback` is marked only then
      (a failure before it stopped nothing); `end` also gives the run's duration.
    - `outcome`: the host's outcome; `failed` also records the phase it failed in (before this step's mark).
    - `error`: the error; `error_notes`: more to say about it, each appended with "; " (empty ones skipped).
    - `rolled_back`: whether the rollback brought the host back.
    """
    if phase is not None and phase not in MARKS:
        raise ValueError(f"phase {phase!r} is not one of the runbook's: {', '.join(MARKS)}")
    out = {}
    marks = dict(facts.get(RUN_FACTS["marks"]) or {})
    stopped = bool(facts.get(STOPPED))
    if phase == FIRST:
        marks, stopped = {}, False
        out[STARTED] = now
    if outcome is not None:
        out[RUN_FACTS["outcome"]] = outcome
        if outcome == "failed":
            out[RUN_FACTS["failed_phase"]] = failed_phase(marks)
    if error is not None:
        out[RUN_FACTS["error"]] = error
    notes = [note for note in error_notes or () if note]
    if notes:
        error_so_far = out.get(RUN_FACTS["error"], facts.get(RUN_FACTS["error"]))
        out[RUN_FACTS["error"]] = "; ".join(part for part in [error_so_far, *notes] if part)
    if rolled_back is not None:
        out[RUN_FACTS["rolled_back"]] = bool(rolled_back)
    if phase is not None and not (phase == ROLLBACK and not stopped):
        marks[phase] = now
        stopped = stopped or phase == DOWNTIME_START
        if phase == END:
            started = facts.get(STARTED, out.get(STARTED))
            out[RUN_FACTS["duration_seconds"]] = None if started is None else round(now - float(started), 1)
    if phase is not None:
        out[RUN_FACTS["marks"]] = marks
        out[STOPPED] = stopped
    return out
