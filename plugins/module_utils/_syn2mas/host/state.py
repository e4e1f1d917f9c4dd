# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-host state record (legacy -> migrated -> delegated) and what MAS's database says about
logins since the import, which decides whether the import may run again.

PRIVATE to the collection: the module syn2mas_state is its API.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile

from ..db import connect
from ..errors import ConfigError, RefusedError
from ..migration.mas_writer import read_marker
from .probe import APPLICATION_NAME

STATES = ("legacy", "migrated", "delegated")
# Where the record lives unless the play says otherwise (the roles share it as syn2mas_state_file).
DEFAULT_STATE_FILE = "/var/lib/syn2mas/state.json"
# (from, to) pairs the state record accepts; staying in a state is always accepted.
TRANSITIONS = {
    ("legacy", "migrated"),  # the import committed
    ("migrated", "delegated"),  # Synapse runs delegated (and .well-known is published)
    ("migrated", "legacy"),  # rolled back
    ("delegated", "legacy"),  # rolled back
}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- MAS activity and the state record ----------------------------------------------------------

def mas_activity(conninfo: dict) -> dict:
    """What MAS's database says about the import and about logins through MAS since then."""
    conn = connect(conninfo, APPLICATION_NAME, "MAS")
    try:
        marker = read_marker(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
            users = cur.fetchone()[0]
            activity = {"imported": marker is not None, "imported_at": (marker or {}).get("imported_at"),
                        "users": users, "browser_sessions": 0, "oauth2_sessions": 0,
                        "compat_sessions_since_import": 0, "passwords_since_import": 0}
            for key, table in (("browser_sessions", "user_sessions"), ("oauth2_sessions", "oauth2_sessions")):
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
                if cur.fetchone()[0]:
                    cur.execute(f"SELECT count(*) FROM {table}")
                    activity[key] = cur.fetchone()[0]
            if marker and marker.get("imported_at"):
                for key, table in (("compat_sessions_since_import", "compat_sessions"),
                                   ("passwords_since_import", "user_passwords")):
                    cur.execute(f"SELECT count(*) FROM {table} WHERE created_at > %s", (marker["imported_at"],))
                    activity[key] = cur.fetchone()[0]
        conn.rollback()
    finally:
        conn.close()
    activity["logins_since_import"] = (activity["browser_sessions"] + activity["oauth2_sessions"]
                                       + activity["compat_sessions_since_import"])
    return activity


def read_state(path: str) -> dict:
    if not os.path.isfile(path):
        return {"state": "legacy", "history": [], "record": {}, "exists": False}
    with open(path) as handle:
        data = json.load(handle)
    if data.get("state") not in STATES:
        raise ConfigError(f"{path}: unknown state {data.get('state')!r} (expected one of {', '.join(STATES)})")
    data.setdefault("history", [])
    data.setdefault("record", {})
    data["exists"] = True
    return data


def check_transition(current: str, wanted: str, activity: dict | None, force: bool) -> None:
    if current == wanted:
        return
    if (current, wanted) not in TRANSITIONS:
        hint = {("legacy", "delegated"): "import first (state migrated)",
                ("delegated", "migrated"): "the host is already delegated to MAS; roll back first"}.get(
                    (current, wanted), "")
        raise RefusedError(f"illegal state change {current} -> {wanted}{': ' + hint if hint else ''}")
    if wanted == "migrated" and activity and activity.get("imported") and activity.get("logins_since_import") \
            and not force:
        raise RefusedError(
            f"users logged in through MAS since the import of {activity.get('imported_at')} "
            f"({activity['browser_sessions']} browser session(s), {activity['oauth2_sessions']} OAuth 2.0 "
            f"session(s), {activity['compat_sessions_since_import']} compatibility session(s)): importing "
            "again would silently drop what happened in Synapse or in MAS since then. Keep MAS, or restore "
            "MAS's empty database (rollback with the MAS database emptied, force) and start over"
        )


def write_state(path: str, current: dict, wanted: str, run_id: str | None, details: dict) -> dict:
    data = {"state": wanted, "updated_at": _now(), "history": list(current.get("history", [])),
            "record": dict(current.get("record", {}))}
    data["history"].append({"from": current["state"], "to": wanted, "at": data["updated_at"], "run_id": run_id,
                            **({"details": details} if details else {})})
    data["record"].update(details or {})
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".syn2mas-state.", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return data


# -- the state module's run ---------------------------------------------------------------------

def move(path: str, wanted: str | None = None, mas_conninfo: dict | None = None, run_id: str | None = None,
         details: dict | None = None, force: bool = False, check_mode: bool = False, diff: bool = False) -> dict:
    """syn2mas_state's result: the record at `path`, moved to `wanted` when that change is legal.

    `mas_conninfo`: MAS's database, asked whether users logged in through MAS since the import.
    """
    try:
        current = read_state(path)
        result = {"changed": False, "state": current["state"], "previous_state": current["state"],
                  "history": current["history"], "record": current["record"]}
        activity = None
        if mas_conninfo is not None:
            activity = result["mas_activity"] = mas_activity(mas_conninfo)
        if wanted is None or wanted == current["state"]:
            return result
        check_transition(current["state"], wanted, activity, force)
        result.update(changed=True, state=wanted)
        if diff:
            result["diff"] = {"before": f"state: {current['state']}\n", "after": f"state: {wanted}\n",
                              "before_header": path, "after_header": path}
        if not check_mode:
            data = write_state(path, current, wanted, run_id, details or {})
            result.update(history=data["history"], record=data["record"])
        return result
    except (OSError, ValueError) as exc:  # an unreadable or unwritable record, or one that is not JSON
        raise ConfigError(f"{path}: {exc}") from None
