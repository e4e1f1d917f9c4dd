# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probing the two databases for the runbook: which they are, whether they answer, their size and
their other clients, MAS's upstream provider rows, and the free space a backup needs.

PRIVATE to the collection: the module syn2mas_probe is its API.
"""

from __future__ import annotations

import os
import time

from ..config import format_ulid, load_mas_config, load_synapse_config
from ..db import OTHER_CLIENTS, connect, database_conninfo, describe, other_clients, secrets_of
from ..errors import ConfigError, DatabaseError, Syn2masError, with_result
from ..config.files import LOCAL_FILES
from .runtime import postgres_major

APPLICATION_NAME = "syn2mas-runbook"


# -- database targets ---------------------------------------------------------------------------

def database_targets(synapse_config=None, mas_config=None, synapse_database_uri=None, mas_database_uri=None,
                     errors: dict | None = None, mas_reader=LOCAL_FILES) -> dict:
    """{'synapse': conninfo, 'mas': conninfo} for the databases the config files (or URIs) name.

    `mas_reader` reads MAS's config files (a files.FilesRead when they are on MAS's own host).

    With `errors` given, a database whose configuration cannot be read is left out and its error kept
    there by name, instead of raised (the advisor reports such errors as findings of its own).
    """
    targets = {}
    for name, paths, uri, load, label in (
            ("synapse", synapse_config, synapse_database_uri, load_synapse_config, "the given Synapse database URI"),
            ("mas", mas_config, mas_database_uri, lambda paths: load_mas_config(paths, mas_reader),
             "the given MAS database URI")):
        if not (paths or uri):
            continue
        try:
            targets[name] = database_conninfo(None if uri else load(paths), uri, label)
        except Syn2masError as exc:
            if errors is None:
                raise
            errors[name] = str(exc)
    return targets


def all_secrets(targets: dict) -> list:
    found = []
    for conninfo in targets.values():
        found.extend(secrets_of(conninfo))
    return found


# -- probe --------------------------------------------------------------------------------------

def _not_reached(database: str | None, error: str | None = None) -> dict:
    """A database's probe before (or instead of) reaching it."""
    return {"reachable": False, "database": database, "error": error, "size_bytes": None, "other_clients": [],
            "server_version": None, "server_version_num": None, "server_major": None}


def probe_database(conninfo: dict, what: str) -> dict:
    info = _not_reached(describe(conninfo))
    try:
        conn = connect(conninfo, APPLICATION_NAME, what)
    except DatabaseError as exc:
        info["error"] = str(exc)
        return info
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database()), current_setting('server_version'), "
                        "current_setting('server_version_num')::int")
            info["size_bytes"], info["server_version"], info["server_version_num"] = cur.fetchone()
        # What pg_dump and pg_restore are compared with: they refuse a server of a newer major version.
        info["server_major"] = postgres_major(info["server_version_num"])
        conn.rollback()
        info["other_clients"] = [client.as_dict() for client in other_clients(conn)]
        info["reachable"] = True
    finally:
        conn.close()
    return info


def database_activity(conninfo: dict, what: str) -> list:
    """What the other clients of the database are doing, for a Synapse that does not stop: each
    session's transaction age, what it waits for and who blocks it (e.g. Synapse's index build
    waiting behind a backup's long transaction). Only a query's first word is kept: the rest may
    hold a secret."""
    conn = connect(conninfo, APPLICATION_NAME, what)
    try:
        with conn.cursor() as cur:
            cur.execute(f"""
                SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(a.usename::text, ''),
                       COALESCE(host(a.client_addr), ''), COALESCE(a.state, ''),
                       floor(EXTRACT(EPOCH FROM now() - a.xact_start))::int,
                       CASE WHEN a.state = 'active' AND a.wait_event_type IN ('Lock', 'LWLock', 'IO', 'IPC', 'BufferPin')
                            THEN a.wait_event_type || ' ' || a.wait_event END,
                       pg_blocking_pids(a.pid),
                       upper(substring(ltrim(a.query) from '^[A-Za-z]+'))
                FROM pg_stat_activity a WHERE {OTHER_CLIENTS} ORDER BY a.xact_start NULLS LAST, a.pid""")
            rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    return [{"pid": pid, "application_name": app, "user": user, "address": address, "state": state,
             "transaction_seconds": xact, "waiting_for": waiting, "blocked_by": list(blocked or []),
             "command": command or ""}
            for pid, app, user, address, state, xact, waiting, blocked, command in rows]


def describe_activity(activity: list) -> str:
    """One line for what `database_activity` found: who is on the database, and what each waits for."""
    if not activity:
        return "no other client is connected"
    parts = []
    for s in activity:
        line = f"pid {s['pid']} {s['application_name'] or 'unnamed'} (user {s['user']}, from {s['address'] or 'local socket'})"
        line += f" {s['state'] or 'unknown state'}"
        if s["command"]:
            line += f" ({s['command']})"
        if s["transaction_seconds"] is not None:
            line += f", in a transaction for {s['transaction_seconds']} s"
        if s["waiting_for"]:
            line += f", waiting for {s['waiting_for']}"
        if s["blocked_by"]:
            line += ", blocked by pid " + ", ".join(str(pid) for pid in s["blocked_by"])
        parts.append(line)
    return "; ".join(parts)


def mas_provider_rows(conninfo: dict, mas_config, mas_reader=LOCAL_FILES) -> dict:
    """The upstream providers MAS's config defines, and which of them MAS's database lacks."""
    mas = load_mas_config(mas_config, mas_reader)
    configured = {str(p.id): p for p in mas.upstream_providers()}
    conn = connect(conninfo, APPLICATION_NAME, "MAS")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT upstream_oauth_provider_id::text FROM upstream_oauth_providers")
            present = {row[0] for row in cur.fetchall()}
        conn.rollback()
    finally:
        conn.close()
    missing = [{"id": format_ulid(p.id), "synapse_idp_id": p.synapse_idp_id}
               for key, p in configured.items() if key not in present]
    return {"configured": len(configured), "missing": missing}


def wait_idle(conninfo: dict, what: str, timeout: float, interval: float = 0.5) -> dict:
    """Waits until no other client is connected to the database; returns the last probe. Asked every `interval`
    seconds (one short connection and query), so that the window goes on the moment the last client left."""
    deadline = time.monotonic() + timeout
    while True:
        info = probe_database(conninfo, what)
        if not info["reachable"]:
            return info
        if not info["other_clients"] or time.monotonic() >= deadline:
            info["waited_seconds"] = round(timeout - max(0.0, deadline - time.monotonic()), 1)
            return info
        time.sleep(interval)


def free_bytes(path: str) -> tuple:
    """Free bytes for an unprivileged writer at `path` or its nearest existing parent."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize, probe


# -- the probe module's run ---------------------------------------------------------------------

def probe_targets(targets: dict, wait_synapse_idle: bool = False, timeout: float = 120, space_path: str | None = None,
                  mas_config=None, check_providers: bool = False, fail_on_unreachable: bool = True,
                  config_errors: dict | None = None, activity: bool = False, mas_reader=LOCAL_FILES) -> dict:
    """syn2mas_probe's result: each database's probe (after waiting for Synapse's to go idle, when
    asked), their total size, the free space at `space_path`, and MAS's missing provider rows.
    `config_errors` (from database_targets) are reported as databases that could not be reached.
    With `activity`, each database that answers also gets `activity` (database_activity) and its one-line
    `activity_summary`.

    Raises a Syn2masError whose `result` holds what was found, when a database does not answer (and
    `fail_on_unreachable`) or Synapse's database stays busy.
    """
    result: dict = {"changed": False, "databases_bytes": 0}
    problems = []
    for name, error in (config_errors or {}).items():
        result[name] = _not_reached(None, error)
        problems.append(error)
    for name, conninfo in targets.items():
        what = "Synapse" if name == "synapse" else "MAS"
        if name == "synapse" and wait_synapse_idle:
            info = wait_idle(conninfo, what, timeout)
            if info["reachable"] and info["other_clients"]:
                listing = "; ".join(f"pid {c['pid']} {c['application_name'] or 'unnamed'} from "
                                    f"{c['address'] or 'local socket'}" for c in info["other_clients"])
                problems.append(f"clients are still connected to Synapse's database after {timeout}s: {listing}")
        else:
            info = probe_database(conninfo, what)
        if activity and info["reachable"]:
            info["activity"] = database_activity(conninfo, what)
            info["activity_summary"] = describe_activity(info["activity"])
        result[name] = info
        if not info["reachable"]:
            problems.append(info["error"])
        else:
            result["databases_bytes"] += info["size_bytes"] or 0
    if space_path:
        result["free_bytes"], result["space_checked_at"] = free_bytes(space_path)
    if check_providers:
        if "mas" not in targets or not mas_config:
            raise with_result(ConfigError("check_providers needs mas_config"), result)
        if result["mas"]["reachable"]:
            result["providers"] = mas_provider_rows(targets["mas"], mas_config, mas_reader)
    if problems and fail_on_unreachable:
        raise with_result(DatabaseError("; ".join(problems)), result)
    return result
