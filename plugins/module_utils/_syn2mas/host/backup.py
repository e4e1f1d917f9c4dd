# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified backups of the two databases and of Synapse's and MAS's config files, and their restore.

A backup is a directory holding custom-format dumps, copies of the files and a manifest of their
checksums; it only counts once it verifies. PRIVATE to the collection: the module syn2mas_backup
is its API.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from ..config import synapse_config_files
from ..db import describe, parsed, redact, secrets_of
from ..errors import ConfigError, DatabaseError, RefusedError, with_result
from .probe import APPLICATION_NAME, all_secrets

MANIFEST = "manifest.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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


# Longer than a screen on purpose: the steps of one durable backup, in order, inside the one try
# that removes the partial directory when any of them fails.
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


def purge(dest: str, run_id: str | None = None, check_mode: bool = False) -> dict:
    """syn2mas_backup's `state: absent`: removes the backup `run_id` of `dest`, or every backup there (and
    leftovers of interrupted ones), once the migration is accepted. Backups hold password hashes, access
    and refresh tokens and the configs' secrets: kept longer than needed they are a liability."""
    result = {"changed": False, "path": dest, "removed": []}
    if not os.path.isdir(dest):
        return result
    if run_id is not None:
        wanted = [check_run_id(run_id)] if os.path.isdir(os.path.join(dest, run_id)) else []
    else:
        # Only what the backups made: a run's directory with its manifest, or a partial one (".<run>.<random>").
        wanted = sorted(d for d in os.listdir(dest) if os.path.isdir(os.path.join(dest, d)) and (
            os.path.isfile(os.path.join(dest, d, MANIFEST)) or (d.startswith(".") and d.count(".") >= 2)))
    result["removed"] = [os.path.join(dest, d) for d in wanted]
    result["changed"] = bool(wanted)
    if not check_mode:
        for path in result["removed"]:
            shutil.rmtree(path)
        if wanted:
            _fsync(dest)
    return result


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
        # A symlinked file (sites-enabled -> sites-available) stays a symlink: its target is restored.
        dest = os.path.realpath(dest)
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


# -- the backup module's runs -------------------------------------------------------------------

def check_run_id(run_id: str) -> str:
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ConfigError(f"run_id {run_id!r} must be a plain directory name")
    return run_id


def restore(dest: str, run_id: str, targets: dict, files: bool = True, databases=(), bindir: str | None = None,
            check_mode: bool = False) -> dict:
    """syn2mas_backup's `state: restored`: puts back the files and the named databases of a verified backup."""
    path = os.path.join(dest, check_run_id(run_id))
    check = verify_backup(path, bindir)
    if not check["verified"]:
        raise with_result(RefusedError(f"cannot restore from {path}: {'; '.join(check['problems'])}"),
                          {"path": path, "verified": False})
    result = {"changed": False, "path": path, "verified": True, "manifest": check["manifest"], "restored_files": [],
              "restored_databases": []}
    if files:
        result["restored_files"] = restore_files(path, check_mode)
    for name in databases:
        if name not in targets:
            raise with_result(ConfigError(f"restoring the {name} database needs its config or URI"), result)
        if not check_mode:
            restore_database(path, name, targets[name], bindir)
        result["restored_databases"].append(name)
    result["changed"] = bool(result["restored_files"] or result["restored_databases"])
    return result
