# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report (JSON and markdown) built from each host's phase results.

Every runbook role publishes one result per phase (its outcome, figures and findings: see each role's
meta/argument_specs.yml); the playbook's own facts (the outcome, the error, the phase marks) are the `run`
result. `build_report` turns them into one entry per host; `render_markdown` writes the table and a section
per host. A result that lacks a field the report needs is refused with the phase and the field named, so a
renamed field cannot silently empty a column. A new report field is added here (and in its unit test).

Not here: reading hosts (the common role passes the results in) or writing files (report_files.py, the action
syn2mas_report).
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re

from ..advisor.remedied import split_findings

# The phases in the order they run; each lasts from its mark to the next mark that was set (the rollback ends
# a failed run).
PHASE_ORDER = ("backup", "prepare", "synapse_stop", "mas_stop", "activate", "import", "reverse_proxy",
               "mas_start", "synapse_start", "well_known", "rollback", "end")
# The downtime window: from the stop of Synapse until it is healthy again; the preparation is before it.
WINDOW_PHASES = ("synapse_stop", "mas_stop", "activate", "import", "reverse_proxy", "mas_start", "synapse_start")
# The marks that are no phase of their own: Synapse healthy again ends the downtime.
DOWNTIME_START, DOWNTIME_END = "synapse_stop", "synapse_healthy"

# The fields each published result must hold for the report (its other fields are not read).
REQUIRED = {
    "preflight": ("state", "findings", "blocking"),
    "backup": ("path", "verified"),
    "import": ("dry_run", "already_imported", "duration_seconds", "counts"),
    "verify": ("ok", "verdict", "totals", "entities", "damaged"),
    "live": ("ok", "verdict", "passed", "errors", "warnings", "checks"),
    "post_advice": ("findings",),
    "reverse_proxy": ("reach_mas", "findings"),
    "rollback": ("state",),
}
# Where the results are among a host's variables: each role publishes one fact (documented in its
# meta/argument_specs.yml); the common role's is the host's state after the run; the playbook's own facts are the
# `run` result.
PUBLISHED = {"preflight": "preflight_result", "backup": "backup_result", "import": "import_result",
             "reverse_proxy": "reverse_proxy_result", "rollback": "rollback_result"}
STATE_AFTER = "common_result"
RUN_FACTS = {"outcome": "syn2mas_outcome", "error": "syn2mas_error", "failed_phase": "syn2mas_failed_phase",
             "rolled_back": "syn2mas_rolled_back", "marks": "syn2mas_marks",
             "duration_seconds": "syn2mas_duration_seconds", "mas_host": "syn2mas_mas_host"}


def results_of(host_vars) -> dict:
    """A host's phase results from its variables (any mapping with .get, such as Ansible's hostvars[host]):
    the published ones, and the playbook's facts as `run`."""
    results = {phase: host_vars.get(fact) for phase, fact in PUBLISHED.items()}
    results["state"] = (host_vars.get(STATE_AFTER) or {}).get("state")
    results["run"] = {key: host_vars.get(name) for key, name in RUN_FACTS.items()}
    return results


class ReportInputError(ValueError):
    """A phase result the report cannot read: names the host, the phase and the missing field."""


def _need(host: str, phase: str, result):
    """`result` checked against REQUIRED[phase]; None when the phase did not run (or published nothing)."""
    if result is None or result == {}:
        return None
    if not isinstance(result, dict):
        raise ReportInputError(f"{host}: the {phase} result is not a mapping ({type(result).__name__})")
    for field in REQUIRED[phase]:
        if field not in result:
            raise ReportInputError(f"{host}: the {phase} result has no field {field!r} "
                                   f"(it has: {', '.join(sorted(result)) or 'nothing'})")
    return result


def phase_seconds(marks: dict) -> list:
    """[{phase, seconds}] from the marks (phase name -> epoch seconds) that were set."""
    seen = [name for name in PHASE_ORDER if name in marks]
    return [{"phase": name, "seconds": round(float(marks[nxt]) - float(marks[name]), 1)}
            for name, nxt in zip(seen, seen[1:])]


def _verified(data):
    if data is None:
        return None
    totals = data["totals"]
    return {"ok": data["ok"], "rows": totals["found"], "entities": len(data["entities"]),
            "missing": totals["missing"], "different": totals["different"], "unexpected": totals["unexpected"],
            "changed_in_synapse": totals["changed_in_synapse"], "verdict": data["verdict"],
            "damaged": data["damaged"]}


def _live(live):
    if live is None:
        return None
    return {"ok": live["ok"], "verdict": live["verdict"], "passed": live["passed"], "errors": live["errors"],
            "warnings": live["warnings"], "findings": [c for c in live["checks"] if c.get("level") != "OK"]}


def _compat(probe):
    if probe is None:
        return None
    return {"reach_mas": probe["reach_mas"] or False,
            "routes": {f["route"]: f["reached"] for f in probe["findings"]},
            "findings": [f for f in probe["findings"] if f.get("severity") != "INFO"]}


def host_entry(host: str, results: dict, check_mode: bool, predicted_before=None) -> dict:
    """One host's report entry from its phase results (see REQUIRED); `predicted_before` is what the latest
    check-mode run predicted for it ({predicted_window_seconds, predicted_window}; a real run only)."""
    run = results.get("run") or {}
    marks = run.get("marks") or {}
    preflight = _need(host, "preflight", results.get("preflight"))
    rollback = _need(host, "rollback", results.get("rollback"))
    backup = _need(host, "backup", results.get("backup"))
    imported = results.get("import") or {}
    imp = _need(host, "import", imported.get("import"))
    verify = _need(host, "verify", imported.get("verify"))
    live = _need(host, "live", imported.get("live"))
    post = _need(host, "post_advice", imported.get("post_advice"))
    probe = _need(host, "reverse_proxy", results.get("reverse_proxy"))

    phases = phase_seconds(marks)
    window = (round(float(marks[DOWNTIME_END]) - float(marks[DOWNTIME_START]), 1)
              if DOWNTIME_START in marks and DOWNTIME_END in marks else None)
    # Check mode stops nothing and writes no backup: no downtime and no backup path to report.
    downtime = None if check_mode else window
    if check_mode:
        backup = None
    findings = split_findings((preflight or {}).get("findings") or [],
                              None if post is None else post["findings"])
    findings = {"errors": findings["errors"], "warnings": findings["warnings"], "remedied": findings["remedied"],
                "blocking": (preflight or {}).get("blocking") or [], "count": findings["count"]}
    before = preflight if preflight is not None else rollback
    imp = imp or {}
    earlier = predicted_before or {}
    service_measured = None
    if check_mode:  # the check run went through the window's tasks and the dry run did the import's work
        prediction = predict_window(window, imp.get("predicted_window"))
        predicted = imp.get("predicted_window_seconds") if prediction is None else prediction["seconds"]
        predicted_parts = None if prediction is None else prediction["parts"]
    else:
        predicted, predicted_parts = earlier.get("predicted_window_seconds"), earlier.get("predicted_window")
        # Only a window gone through to its end: a rolled-back run's downtime holds its rollback.
        if run.get("outcome") == "migrated":
            service_measured = service_seconds_measured(downtime, predicted_parts)
    return {
        "outcome": run.get("outcome") or "not run",
        "mas_host": run.get("mas_host") or host,
        "state": results.get("state"),
        "state_before": None if before is None else before["state"],
        "check_mode": check_mode,
        "counts": {stage: c["migrated"] for stage, c in (imp.get("counts") or {}).items()},
        "import_dry_run": imp.get("dry_run"),
        "import_already_done": imp.get("already_imported"),
        "import_seconds": imp.get("duration_seconds"),
        "duration_seconds": run.get("duration_seconds"),
        "downtime_seconds": downtime,
        "predicted_window_seconds": predicted,
        "predicted_window": predicted_parts,
        "window_service_seconds": service_measured,
        "synapse_down": DOWNTIME_START in marks and DOWNTIME_END not in marks and not check_mode,
        "phase_seconds": phases,
        "window_phases": [p["phase"] for p in phases if p["phase"] in WINDOW_PHASES],
        "failed_phase": run.get("failed_phase"),
        "backup_path": None if backup is None else backup["path"],
        "backup_verified": None if backup is None else backup["verified"],
        "findings": findings,
        "verified": _verified(verify),
        "live_checks": _live(live),
        "compat_routes": _compat(probe),
        "rolled_back": run.get("rolled_back") or False,
        "error": run.get("error"),
    }


def predict_window(check_window, dry_run_parts) -> dict | None:
    """The window a check run predicts, {seconds, parts}, made of what it measured: its own window (every task
    the window runs, as check mode runs them, the import's dry run among them), verify's reads after the commit
    (measured by the dry run: check mode verifies nothing), and what check mode does not do, the real stops of
    Synapse and MAS and their starts until healthy (the dry run's service seconds: syn2mas_window_service_seconds,
    a real run's `window_service_seconds`, or the import module's estimate). None when the check run did not go
    through the window or its dry run gave no parts."""
    if check_window is None or not isinstance(dry_run_parts, dict):
        return None
    # The dry run waited for its cross-check against Synapse inside the check run's window; the real run does not.
    check_window = float(check_window) - float(dry_run_parts.get("cross_check_wait_seconds") or 0.0)
    parts = {"check_window_seconds": round(max(check_window, 0.0), 3),
             "verify_seconds": round(float(dry_run_parts["verify_seconds"]), 3),
             "service_seconds": round(float(dry_run_parts["service_seconds"]), 3)}
    return {"seconds": round(sum(parts.values()), 1), "parts": parts}


def service_seconds_measured(downtime, predicted_parts) -> float | None:
    """A real run's window minus what the check run before it measured (its own window and verify's reads):
    the seconds only a real run spends (the real stops and starts until healthy, verify beyond its reads), the
    figure to give syn2mas_window_service_seconds for the next prediction on a host like this one."""
    if downtime is None or not isinstance(predicted_parts, dict) or "check_window_seconds" not in predicted_parts:
        return None
    return round(float(downtime) - float(predicted_parts["check_window_seconds"])
                 - float(predicted_parts["verify_seconds"]), 1)


def latest_predictions(report_dir: str, name: str = "migrate") -> dict:
    """{host: predicted_window_seconds} from the latest check-mode report in `report_dir` that predicted it
    (the run ids are UTC timestamps, so their order is their time)."""
    return {host: entry["predicted_window_seconds"] for host, entry in latest_predicted(report_dir, name).items()}


def latest_predicted(report_dir: str, name: str = "migrate") -> dict:
    """{host: {predicted_window_seconds, predicted_window}} from the latest check-mode report in `report_dir`
    that predicted the host's window (its parts None in a report that has none)."""
    predicted = {}
    for path in sorted(glob.glob(os.path.join(report_dir, "*", f"{name}.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                report = json.load(handle)
        except (OSError, ValueError):
            continue  # a report being written, or not ours: no prediction from it
        if not isinstance(report, dict) or report.get("check_mode") is not True:
            continue
        for host, entry in (report.get("hosts") or {}).items():
            seconds = entry.get("predicted_window_seconds") if isinstance(entry, dict) else None
            if seconds is not None:
                predicted[host] = {"predicted_window_seconds": seconds,
                                   "predicted_window": entry.get("predicted_window")}
    return predicted


def build_report(hosts: dict, run_id: str, name: str = "migrate", check_mode: bool = False,
                 report_dir: str | None = None, generated_at: str | None = None) -> dict:
    """The fleet report: {run_id, report, generated_at, check_mode, hosts: {host: entry}}, hosts sorted.
    `hosts` maps each host to its phase results; `report_dir` is where earlier reports are (predictions)."""
    predictions = latest_predicted(report_dir, name) if report_dir and not check_mode else {}
    if generated_at is None:
        generated_at = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()
    return {"run_id": run_id, "report": name, "generated_at": generated_at, "check_mode": check_mode,
            "hosts": {h: host_entry(h, hosts[h] or {}, check_mode, predictions.get(h)) for h in sorted(hosts)}}


def _text(value) -> str:
    return "" if value is None else str(value)


def _or_empty(value) -> str:
    return str(value) if value else ""


def render_markdown(report: dict) -> str:
    """The report as markdown: a table of every host, then a section per host with something to say."""
    hosts = report["hosts"]
    out = [f"# syn2mas {report['report']} report, run {report['run_id']}"
           f"{' (check mode: nothing changed)' if report['check_mode'] else ''}\n", "\n",
           f"Generated {report['generated_at']}.\n", "\n"]
    # The verification's columns only in a report with a host that was verified or checked live.
    proven = any(e["verified"] or e["live_checks"] for e in hosts.values())
    # MAS's host only in a report where MAS runs on a host of its own.
    mas_apart = any(e["mas_host"] != h for h, e in hosts.items())
    # The predicted window only in a report that has one.
    predicted = any(e.get("predicted_window_seconds") is not None for e in hosts.values())
    out.append("| Host | " + ("MAS host | " if mas_apart else "") + "Outcome | State | Users | Device sessions | "
               "Access tokens | " + ("Verified | Live checks | " if proven else "") + "Downtime (s) | "
               + ("Predicted (s) | " if predicted else "") + "Duration (s) | Backup | Errors | Warnings | Remedied |\n")
    out.append("|---|" + ("---|" if mas_apart else "") + "---|---|---|---|---|" + ("---|---|" if proven else "")
               + "---|" + ("---|" if predicted else "") + "---|---|---|---|---|\n")
    for h, e in hosts.items():
        cells = [h]
        if mas_apart:
            cells.append(e["mas_host"])
        cells += [e["outcome"], f"{e['state_before'] or '?'} → {e['state'] or '?'}",
                  _text(e["counts"].get("users", "")), _text(e["counts"].get("device_sessions", "")),
                  _text(e["counts"].get("access_tokens", ""))]
        if proven:
            cells += [_text(e["verified"]["verdict"]) if e["verified"] else "",
                      _text(e["live_checks"]["verdict"]) if e["live_checks"] else ""]
        cells.append("still down" if e["synapse_down"] else _text(e["downtime_seconds"]))
        if predicted:
            cells.append(_text(e.get("predicted_window_seconds")))
        cells += [_or_empty(e["duration_seconds"]), _or_empty(e["backup_path"]), str(len(e["findings"]["errors"])),
                  str(len(e["findings"]["warnings"])), str(len(e["findings"]["remedied"]))]
        out.append("| " + " | ".join(cells) + " |\n")
    for h, e in hosts.items():
        out += _host_section(h, e, report["check_mode"])
    return "".join(out)


def _host_section(h: str, e: dict, check_mode: bool) -> list:
    f = e["findings"]
    if not (e["error"] or f["errors"] or f["warnings"] or f["remedied"] or e["phase_seconds"] or e["verified"]
            or e["live_checks"] or e["compat_routes"]):
        return []
    out = ["\n", f"## {h}\n"]
    if e["error"]:
        if re.search("fail|mismatch", e["outcome"]):
            lead = "Failed" + (f" in the {e['failed_phase']} phase" if e["failed_phase"] else "")
        else:
            lead = "Note"
        rolled = " (rolled back)" if e["rolled_back"] and re.search("fail", e["outcome"]) else ""
        out += ["\n", f"{lead}: {e['error']}{rolled}\n"]
    if e["phase_seconds"]:
        out += ["\n", "Phases (s): " + ", ".join(f"{p['phase']} {p['seconds']}" for p in e["phase_seconds"]) + "\n"]
    if e["verified"]:
        out += ["\n", f"Data {e['verified']['verdict']}\n"]
    if e["live_checks"]:
        out += ["\n", f"Live checks: {e['live_checks']['verdict']}\n"]
        out += [f"- {c['level']} {c['check']}: {c['message']}{_remedy(c)}\n" for c in e["live_checks"]["findings"]]
    if e["compat_routes"]:
        routes = e["compat_routes"]
        out += ["\n", "Legacy clients' routes through the public URL "
                f"{'reach MAS' if routes['reach_mas'] else 'do not all reach MAS'}: "
                + ", ".join(f"{r} {reached}" for r, reached in routes["routes"].items()) + "\n"]
        out += [f"- {x['severity']} {x['check']}: {x['message']}{_remedy(x)}\n" for x in routes["findings"]]
    out += [f"- ERROR {line}\n" for line in f["errors"]]
    out += [f"- WARN {line}\n" for line in f["warnings"]]
    if f["remedied"]:
        out.append(f"- remedied by the run{' (would be)' if check_mode else ''}: {', '.join(f['remedied'])}\n")
    return out


def _remedy(item: dict) -> str:
    return f" -> {item['remedy']}" if item.get("remedy") else ""
