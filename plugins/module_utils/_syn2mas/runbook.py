# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the runbook roles need beyond the import: probing the two databases, verified backups and
their restore, and the per-host state record (legacy -> migrated -> delegated).

PRIVATE to the collection: the modules syn2mas_probe, syn2mas_backup and syn2mas_state are its API.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

from .config import format_ulid, load_mas_config, load_synapse_config, synapse_config_files
from .db import connect, database_conninfo, describe, other_clients, parsed, redact, secrets_of
from .errors import ConfigError, DatabaseError, RefusedError
from .host_runtime import postgres_major

APPLICATION_NAME = "syn2mas-runbook"
MARKER_PREFIX = "matrix.syn2mas import: "
STATES = ("legacy", "migrated", "delegated")
# (from, to) pairs the state record accepts; staying in a state is always accepted.
TRANSITIONS = {
    ("legacy", "migrated"),  # the import committed
    ("migrated", "delegated"),  # Synapse runs delegated (and .well-known is published)
    ("migrated", "legacy"),  # rolled back
    ("delegated", "legacy"),  # rolled back
}
MANIFEST = "manifest.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- database targets ---------------------------------------------------------------------------

def database_targets(synapse_config=None, mas_config=None, synapse_database_uri=None, mas_database_uri=None) -> dict:
    """{'synapse': conninfo, 'mas': conninfo} for the databases the config files (or URIs) name."""
    targets = {}
    if synapse_config or synapse_database_uri:
        config = None if synapse_database_uri else load_synapse_config(synapse_config)
        targets["synapse"] = database_conninfo(config, synapse_database_uri)
    if mas_config or mas_database_uri:
        config = None if mas_database_uri else load_mas_config(mas_config)
        targets["mas"] = database_conninfo(config, mas_database_uri)
    return targets


def all_secrets(targets: dict) -> list:
    found = []
    for conninfo in targets.values():
        found.extend(secrets_of(conninfo))
    return found


# -- probe --------------------------------------------------------------------------------------

def probe_database(conninfo: dict, what: str) -> dict:
    info = {"reachable": False, "database": describe(conninfo), "error": None, "size_bytes": None,
            "other_clients": [], "server_version": None, "server_version_num": None, "server_major": None}
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


def mas_provider_rows(conninfo: dict, mas_config) -> dict:
    """The upstream providers MAS's config defines, and which of them MAS's database lacks."""
    mas = load_mas_config(mas_config)
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


def wait_idle(conninfo: dict, what: str, timeout: float, interval: float = 1.0) -> dict:
    """Waits until no other client is connected to the database; returns the last probe."""
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


# -- backups ------------------------------------------------------------------------------------

def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pg_env_and_dbname(conninfo: dict) -> tuple:
    """libpq settings for pg_dump/pg_restore: secrets only in the environment, never in argv."""
    params = parsed(conninfo)
    env = dict(os.environ)
    for key, var in (("password", "PGPASSWORD"), ("sslpassword", "PGSSLPASSWORD")):
        if params.get(key):
            env[var] = str(params.pop(key))
        else:
            params.pop(key, None)
    params.setdefault("application_name", APPLICATION_NAME)

    def quote(value) -> str:
        text = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"'{text}'"

    dbname = " ".join(f"{k}={quote(v)}" for k, v in params.items())
    return env, dbname


def _run(argv: list, env: dict, secrets: list, what: str) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = redact((proc.stderr or proc.stdout or "").strip(), secrets)
        raise DatabaseError(f"{what} failed (exit {proc.returncode}): {err[-2000:]}")
    return proc.stdout


def _bin(bindir: str | None, name: str) -> str:
    if bindir:
        return os.path.join(bindir, name)
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} was not found on PATH: install PostgreSQL's client programs or set pg_bindir")
    return found


def _fsync(path: str) -> None:
    """Flushes a file, or a directory's entries, to disk: a backup counts only once it would survive a
    power cut, and a rename or a new file is durable only when its directory is synced too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_synced(path: str, mode: int) -> None:
    """os.makedirs, then each directory made is made durable in its parent."""
    made = []
    probe = os.path.abspath(path)
    while not os.path.isdir(probe):
        made.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(path, mode=mode, exist_ok=True)
    for directory in reversed(made):
        _fsync(os.path.dirname(directory))


def _private_copy(src: str, dest: str) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out)
    os.chmod(dest, 0o600)


def verify_backup(path: str, bindir: str | None = None) -> dict:
    """Checks every file of a backup against its manifest and lists each dump with pg_restore."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        return {"verified": False, "problems": [f"{manifest_path} is missing"], "manifest": None}
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    problems = []
    for entry in manifest.get("files", []) + manifest.get("databases", []):
        if entry.get("absent"):
            continue
        stored = os.path.join(path, entry["stored_as"])
        if not os.path.isfile(stored):
            problems.append(f"{stored} is missing")
        elif _sha256(stored) != entry["sha256"]:
            problems.append(f"{stored}: sha256 differs from the manifest")
    for entry in manifest.get("databases", []):
        stored = os.path.join(path, entry["stored_as"])
        if os.path.isfile(stored):
            proc = subprocess.run([_bin(bindir, "pg_restore"), "--list", stored], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                problems.append(f"{stored}: pg_restore --list failed: {proc.stderr.strip()[-500:]}")
            elif "TABLE DATA" not in proc.stdout and "TABLE " not in proc.stdout:
                problems.append(f"{stored}: pg_restore --list shows no table")
    return {"verified": not problems, "problems": problems, "manifest": manifest}


def make_backup(dest: str, run_id: str, targets: dict, files: list, bindir: str | None = None,
                keep: int = 0, check_mode: bool = False) -> dict:
    """Dumps each target database (custom format) and copies `files` into <dest>/<run_id>, writes a
    sha256 manifest and verifies it; then keeps the `keep` newest backups (0: all)."""
    path = os.path.join(dest, run_id)
    result = {"changed": False, "path": path, "verified": False, "removed": [], "files": [], "databases": []}
    if os.path.isfile(os.path.join(path, MANIFEST)):
        check = verify_backup(path, bindir)
        if check["verified"]:
            result.update(verified=True, manifest=check["manifest"])
            result["files"] = [f["path"] for f in check["manifest"]["files"]]
            result["databases"] = [d["name"] for d in check["manifest"]["databases"]]
            return result
        raise RefusedError(f"the backup {path} exists but does not verify: {'; '.join(check['problems'])}")
    result["changed"] = True
    result["files"] = list(files)
    result["databases"] = sorted(targets)
    if check_mode:
        result["removed"] = _expired(dest, keep, extra=1)
        return result

    _makedirs_synced(dest, 0o700)
    partial = tempfile.mkdtemp(prefix=f".{run_id}.", dir=dest)
    os.chmod(partial, 0o700)
    secrets = all_secrets(targets)
    try:
        manifest = {"run_id": run_id, "created_at": _now(), "host": os.uname()[1], "files": [], "databases": []}
        for name, conninfo in sorted(targets.items()):
            stored = f"{name}.pgdump"
            env, dbname = _pg_env_and_dbname(conninfo)
            # --no-sync: the dump is synced below with every other file of the backup
            _run([_bin(bindir, "pg_dump"), "--format=custom", "--no-sync", f"--file={os.path.join(partial, stored)}",
                  f"--dbname={dbname}"], env, secrets, f"pg_dump of the {name} database ({describe(conninfo)})")
            os.chmod(os.path.join(partial, stored), 0o600)
            _fsync(os.path.join(partial, stored))
            manifest["databases"].append({"name": name, "database": describe(conninfo), "stored_as": stored,
                                          "sha256": _sha256(os.path.join(partial, stored)),
                                          "size": os.path.getsize(os.path.join(partial, stored))})
        files, directories = expand_config_paths(files)
        manifest["directories"] = directories
        used = set()
        for index, src in enumerate(files):
            base = os.path.basename(src) or f"file{index}"
            stored = base if base not in used else f"{index}-{base}"
            used.add(stored)
            stored = os.path.join("files", stored)
            entry = {"path": src, "stored_as": stored}
            if not os.path.lexists(src):
                entry["absent"] = True
            else:
                st = os.stat(src)
                os.makedirs(os.path.join(partial, "files"), mode=0o700, exist_ok=True)
                _private_copy(src, os.path.join(partial, stored))
                _fsync(os.path.join(partial, stored))
                entry.update(sha256=_sha256(os.path.join(partial, stored)), size=st.st_size,
                             mode=f"{st.st_mode & 0o7777:04o}", uid=st.st_uid, gid=st.st_gid)
            manifest["files"].append(entry)
        manifest_path = os.path.join(partial, MANIFEST)
        fd = os.open(manifest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        _fsync(manifest_path)
        if os.path.isdir(os.path.join(partial, "files")):
            _fsync(os.path.join(partial, "files"))
        _fsync(partial)
        check = verify_backup(partial, bindir)
        if not check["verified"]:
            raise DatabaseError(f"the backup did not verify: {'; '.join(check['problems'])}")
        os.rename(partial, path)
        _fsync(dest)  # the rename itself
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result.update(verified=True, manifest=manifest)
    result["removed"] = _expired(dest, keep)
    for old in result["removed"]:
        shutil.rmtree(old, ignore_errors=True)
    return result


def expand_config_paths(paths: list) -> tuple:
    """The files to back up for `paths`, and the configuration directories among them: a directory
    stands for the *.yaml files Synapse reads from it (a rollback removes any it did not hold)."""
    files, directories, seen = [], [], set()
    for path in paths:
        if os.path.isdir(path):
            candidates = synapse_config_files([path])
            directories.append({"path": path, "members": [os.path.basename(c) for c in candidates]})
        else:
            candidates = [path]
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files, directories


def _expired(dest: str, keep: int, extra: int = 0) -> list:
    """Backups beyond the `keep` newest (run ids sort by time); `extra` counts one about to be made."""
    if keep <= 0 or not os.path.isdir(dest):
        return []
    runs = sorted(d for d in os.listdir(dest)
                  if not d.startswith(".") and os.path.isfile(os.path.join(dest, d, MANIFEST)))
    excess = len(runs) + extra - keep
    return [os.path.join(dest, d) for d in runs[:max(0, excess)]]


def restore_files(path: str, check_mode: bool = False, only=None) -> list:
    """Puts every file of the backup back where it was (a file absent then is removed); returns
    the paths that changed."""
    manifest = verify_backup(path)["manifest"]
    changed = []
    for entry in manifest["files"]:
        dest = entry["path"]
        if only is not None and dest not in only:
            continue
        if entry.get("absent"):
            if os.path.lexists(dest):
                changed.append(dest)
                if not check_mode:
                    os.unlink(dest)
            continue
        stored = os.path.join(path, entry["stored_as"])
        if os.path.isfile(dest) and _sha256(dest) == entry["sha256"]:
            continue
        changed.append(dest)
        if check_mode:
            continue
        directory = os.path.dirname(dest) or "."
        fd, tmp = tempfile.mkstemp(prefix=".syn2mas-restore.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out, open(stored, "rb") as inp:
                shutil.copyfileobj(inp, out)
            os.chmod(tmp, int(entry.get("mode", "0600"), 8))
            if os.geteuid() == 0:
                os.chown(tmp, entry.get("uid", 0), entry.get("gid", 0))
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    # A configuration file that appeared in a backed-up directory since (a conf.d override) is
    # removed, so that Synapse reads exactly what it read before.
    handled = {os.path.realpath(entry["path"]) for entry in manifest["files"]}
    for directory in manifest.get("directories", []):
        if only is not None and directory["path"] not in only:
            continue
        if not os.path.isdir(directory["path"]):
            continue
        for extra in synapse_config_files([directory["path"]]):
            if os.path.basename(extra) not in directory["members"] and os.path.realpath(extra) not in handled:
                changed.append(extra)
                if not check_mode:
                    os.unlink(extra)
    return changed


def restore_database(path: str, name: str, conninfo: dict, bindir: str | None = None) -> None:
    """Replaces the database's content with the dump `name` of the backup (one transaction)."""
    stored = os.path.join(path, f"{name}.pgdump")
    env, dbname = _pg_env_and_dbname(conninfo)
    _run([_bin(bindir, "pg_restore"), "--clean", "--if-exists", "--single-transaction", "--no-owner",
          f"--dbname={dbname}", stored], env, secrets_of(conninfo), f"pg_restore of the {name} database")


# -- MAS activity and the state record ----------------------------------------------------------

def mas_activity(conninfo: dict) -> dict:
    """What MAS's database says about the import and about logins through MAS since then."""
    conn = connect(conninfo, APPLICATION_NAME, "MAS")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT obj_description(to_regclass('users'), 'pg_class'), "
                        "(SELECT count(*) FROM users)")
            comment, users = cur.fetchone()
            marker = None
            if comment and comment.startswith(MARKER_PREFIX):
                try:
                    marker = json.loads(comment[len(MARKER_PREFIX):])
                except ValueError:
                    marker = None
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
