"""The import benchmark: speed and peak memory of the real import and the dry run, side by side
with the raw-copy floor, at N users.

    .venv/bin/python bench/run.py [N ...] [--seed S] [--repeat R] [--profile] [--keep] [--no-plot]

(or `scripts/bench.sh [N ...]`, `make bench N=...`, which also install the bench's own packages).
For each N, on one throwaway PostgreSQL cluster:

1. a Synapse database with the real schema (matrix-synapse's own schema code, through the
   template of tests/support/synapse_schema) filled by tests/support/synapse_data.generate, then
   VACUUM ANALYZE (a live homeserver's tables are vacuumed; hint bits are set once, up front);
2. the advisor (`syn2mas --command advisor --output json`): it must report no error;
3. the dry run, then the real import, each into its own fresh MAS 1.22 database (the project's
   own fixture, with the `oidc-google` and `oidc-github` upstream providers that MAS's config maps
   with `synapse_idp_id`), each a `syn2mas --command migrate --output json` subprocess whose
   wall time and peak RSS (`ru_maxrss` of that child, from wait4) are measured;
4. the floor: the exact rows the import wrote (same columns, same bytes of COPY text) are first
   staged, untimed, as plain tables in a `bench_floor` schema of the Synapse database; then, timed,
   each is streamed with `COPY (SELECT cols FROM staged) TO STDOUT` into `COPY table (cols) FROM
   STDIN` of a scratch database made from the same MAS template, whose indexes and PK/UNIQUE/FK
   constraints were dropped (the set the import drops), and those are then rebuilt with the
   import's maintenance_work_mem in the transaction of the last load, as the import does. The COPY
   is done three ways (psql | psql; one process relaying through an OS pipe; the import's own
   thread/queue pipe) and the fastest counts, per table. The floor is what moving these bytes
   between two databases of this cluster and indexing them costs, with no computation at all: the
   import's own work on top of it (the joins and the id hashing on the Synapse side, the counts,
   the checks, the command's start-up) is what the ratio import / floor shows;
5. with --profile, where the import's time goes on the Synapse side: each stage's count query and
   its SELECT alone (streamed to nowhere), at the session's default work_mem and at 256MB.

Prints a table per N and a summary against the targets; appends the figures to
bench/results/results.json and redraws bench/results/bench.png (needs matplotlib, which only the
bench's environment has: requirements-bench.txt). Databases are dropped after each N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
_LIB = os.path.join(ROOT, "plugins", "module_utils")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)

import yaml  # noqa: E402

from _syn2mas.config import format_ulid  # noqa: E402
from tests.support import mas_schema, pgcluster, synapse_data, synapse_schema  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")
RESULTS_JSON = os.path.join(RESULTS_DIR, "results.json")
PLOT_PNG = os.path.join(RESULTS_DIR, "bench.png")
SYN2MAS = os.path.join(ROOT, "bin", "syn2mas")

SERVER_NAME = "bench.example"
MAS_VARIANT = "own-1.22"
PROVIDERS = {"oidc-google": uuid.UUID("01932d2e-8f6a-7c3b-9d1e-2f4a5b6c7e01"),
             "oidc-github": uuid.UUID("01932d2e-8f6a-7c3b-9d1e-2f4a5b6c7e02")}
# The import's default (ImportOptions.maintenance_work_mem); the floor rebuilds with the same.
MAINTENANCE_WORK_MEM = "512MB"
# MAS tables in the order the import fills them, and the import stages feeding each.
ENTITIES = (
    ("users", ("users",)),
    ("user_passwords", ("passwords",)),
    ("user_emails", ("emails",)),
    ("user_unsupported_third_party_ids", ("other_threepids",)),
    ("upstream_oauth_links", ("upstream_links",)),
    ("compat_sessions", ("device_sessions", "deviceless_sessions")),
    ("compat_access_tokens", ("access_tokens",)),
    ("compat_refresh_tokens", ("refresh_tokens",)),
)
# Targets of the issue (checked in the summary, never asserted).
TARGET_FLOOR_RATIO = 2.0
TARGET_RSS_MB_AT_1M = 300.0
TARGET_DRY_RUN_DEVIATION = 0.10
TARGET_SCALING_1M_OVER_100K = 12.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Environment: databases and config files
# ------------------------------------------------------------------------------------------

def write_configs(cluster, workdir: str, synapse_db: str, mas_db: str) -> tuple:
    homeserver = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"https://matrix.{SERVER_NAME}/",
        "database": {"name": "psycopg2", "args": {"user": cluster.superuser, "dbname": synapse_db,
                                                  "host": cluster.sockdir, "port": cluster.port}},
        "enable_registration": False,
        "oidc_providers": [
            {"idp_id": "google", "idp_name": "Google", "issuer": "https://accounts.google.com/",
             "client_id": "bench", "client_secret": "bench-secret"},
            {"idp_id": "github", "idp_name": "GitHub", "discover": False, "issuer": "https://github.com/",
             "client_id": "bench", "client_secret": "bench-secret",
             "authorization_endpoint": "https://github.com/login/oauth/authorize",
             "token_endpoint": "https://github.com/login/oauth/access_token",
             "userinfo_endpoint": "https://api.github.com/user"},
        ],
    }
    mas = {
        "http": {"public_base": f"https://auth.{SERVER_NAME}/"},
        "matrix": {"homeserver": SERVER_NAME, "secret": "bench-shared-secret",
                   "endpoint": "http://localhost:8008/"},
        "database": {"uri": cluster.uri(mas_db)},
        "passwords": {"enabled": True, "schemes": [{"version": 1, "algorithm": "bcrypt",
                                                    "unicode_normalization": True}]},
        "branding": {"tos_uri": f"https://{SERVER_NAME}/terms"},
        "upstream_oauth2": {"providers": [
            {"id": format_ulid(pid), "synapse_idp_id": idp, "issuer": f"https://{idp}.{SERVER_NAME}/",
             "client_id": "bench", "token_endpoint_auth_method": "none"} for idp, pid in PROVIDERS.items()]},
    }
    paths = (os.path.join(workdir, f"homeserver-{mas_db}.yaml"), os.path.join(workdir, f"mas-{mas_db}.yaml"))
    for path, data in zip(paths, (homeserver, mas)):
        with open(path, "w") as handle:
            yaml.safe_dump(data, handle)
    return paths


def create_mas_db(cluster, name: str) -> None:
    cluster.drop_database(name)
    cluster.create_database(name, template=mas_schema.create_template(cluster, MAS_VARIANT))
    conn = cluster.connect(name)
    try:
        for provider_id in PROVIDERS.values():  # what `mas-cli config sync` would have created
            mas_schema.insert_upstream_provider(conn, provider_id)
    finally:
        conn.close()


def db_bytes(cluster, dbname: str, tables) -> int:
    rows = cluster.execute("SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint "
                           "FROM unnest(%s::text[]) t", dbname, (list(tables),))
    return int(rows[0][0])


# ------------------------------------------------------------------------------------------
# Measured subprocesses
# ------------------------------------------------------------------------------------------

# Server settings for the measured subprocesses' sessions (libpq's PGOPTIONS, e.g.
# "-c work_mem=256MB"): for trying engine settings without changing the engine. Empty by default.
PGOPTIONS = ""


def run_measured(cmd: list, workdir: str, label: str) -> dict:
    """Runs cmd; returns its wall seconds, peak RSS (MB, from wait4), exit code, stdout, stderr."""
    out_path = os.path.join(workdir, f"{label}.out")
    err_path = os.path.join(workdir, f"{label}.err")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if PGOPTIONS:
        env["PGOPTIONS"] = PGOPTIONS
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path, encoding="utf-8", errors="replace") as handle:
        stdout = handle.read()
    with open(err_path, encoding="utf-8", errors="replace") as handle:
        stderr = handle.read()
    # Linux reports ru_maxrss in KiB.
    return {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0, "exit_code": proc.returncode,
            "loadavg_after": round(os.getloadavg()[0], 2),
            "user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime,
            "stdout": stdout, "stderr": stderr}


def run_json_command(command: str, who: str, homeserver: str, mas: str, workdir: str) -> tuple:
    """`syn2mas --command <command> --output json`, measured: (the run, its JSON result)."""
    run = run_measured([sys.executable, SYN2MAS, "--command", command, "--synapseConfigFile", homeserver,
                        "--masConfigFile", mas, "--output", "json"], workdir, command)
    try:
        return run, json.loads(run["stdout"])
    except ValueError:
        raise RuntimeError(f"{who} printed no JSON (exit {run['exit_code']}): {run['stderr'][-2000:]}")


def run_advisor(homeserver: str, mas: str, workdir: str) -> dict:
    run, result = run_json_command("advisor", "the advisor", homeserver, mas, workdir)
    findings = result.get("findings", [])
    return {
        "seconds": round(run["wall_seconds"], 3),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "exit_code": run["exit_code"],
        "errors": result["summary"]["errors"],
        "warnings": result["summary"]["warnings"],
        "error_checks": sorted(f["check"] for f in findings if f["severity"] == "ERROR"),
        "warning_checks": sorted(f["check"] for f in findings if f["severity"] == "WARN"),
        "error_messages": [f["message"] for f in findings if f["severity"] == "ERROR"],
    }


def run_import(homeserver: str, mas: str, workdir: str, dry_run: bool) -> dict:
    label = "dry-run" if dry_run else "import"
    cmd = [sys.executable, SYN2MAS, "--command", "migrate", "--synapseConfigFile", homeserver,
           "--masConfigFile", mas, "--output", "json"]
    if dry_run:
        cmd.append("--dryRun")
    run = run_measured(cmd, workdir, label)
    if run["exit_code"] != 0:
        raise RuntimeError(f"the {label} failed (exit {run['exit_code']}): {run['stderr'][-2000:]}")
    result = json.loads(run["stdout"])
    stages = result.get("stage_seconds", {})
    counts = result.get("counts", {})
    stage_sum = sum(v for k, v in stages.items() if k != "rebuild")
    duration = result.get("duration_seconds", 0.0)
    return {
        "wall_seconds": round(run["wall_seconds"], 3),
        "duration_seconds": duration,
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "cpu_seconds": round(run["user_seconds"] + run["system_seconds"], 3),
        # The machine's 1-minute load average right after: other work on it skews the times.
        "loadavg_after": run["loadavg_after"],
        "stage_seconds": stages,
        # Before the first stage: configs, locks, checks, and one count query per stage.
        # Verify's record: Synapse's fingerprint (and a dry run's cross-check) read during the rebuild, what
        # the rebuild and the digests did not cover coming after them; the digests of the rows written.
        "verify_record_seconds": result.get("verify_record_seconds"),
        "before_stages_seconds": round(duration - stage_sum - stages.get("rebuild", 0.0)
                                       - (result.get("verify_record_seconds") or {}).get("after_rebuild", 0.0)
                                       - (result.get("verify_record_seconds") or {}).get("written", 0.0), 3),
        # The subprocess's start-up (Python, imports) and exit.
        "startup_seconds": round(run["wall_seconds"] - duration, 3),
        "migrated": {name: entry["migrated"] for name, entry in counts.items()},
        "skipped": {name: entry["skipped"] for name, entry in counts.items()},
        "warnings": result.get("warnings", []),
        "errors": 0,
        "dry_run": result.get("dry_run"),
    }


def run_verify(homeserver: str, mas: str, workdir: str) -> dict:
    """`syn2mas --command verify` after the real import: it must find every row (exit 0)."""
    run, result = run_json_command("verify", "verify", homeserver, mas, workdir)
    if run["exit_code"] != 0:
        raise RuntimeError(f"verify failed (exit {run['exit_code']}): {result.get('verdict') or result.get('error')}")
    return {
        "wall_seconds": round(run["wall_seconds"], 3),
        "duration_seconds": result["duration_seconds"],
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "cpu_seconds": round(run["user_seconds"] + run["system_seconds"], 3),
        "loadavg_after": run["loadavg_after"],
        "rows": result["totals"]["found"],
        "verdict": result["verdict"],
        "entity_seconds": {name: e["seconds"] for name, e in result["entities"].items()},
    }


# ------------------------------------------------------------------------------------------
# The floor
# ------------------------------------------------------------------------------------------

def psql(cluster, dbname: str, sql: str) -> list:
    return [cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", cluster.sockdir,
            "-p", str(cluster.port), "-U", cluster.superuser, "-d", dbname, "-c", sql]


def shell_pipe(cluster, src_db: str, src_sql: str, dst_db: str, dst_sql: str, count_bytes: bool = False) -> int:
    """psql COPY TO STDOUT | psql COPY FROM STDIN; with count_bytes the bytes pass through here."""
    src = subprocess.Popen(psql(cluster, src_db, src_sql), stdout=subprocess.PIPE)
    if not count_bytes:
        dst = subprocess.Popen(psql(cluster, dst_db, dst_sql), stdin=src.stdout)
        src.stdout.close()  # dst owns the read end now
        total = -1
    else:
        dst = subprocess.Popen(psql(cluster, dst_db, dst_sql), stdin=subprocess.PIPE)
        total = 0
        while True:
            chunk = src.stdout.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            dst.stdin.write(chunk)
        dst.stdin.close()
        src.stdout.close()
    rc_dst, rc_src = dst.wait(), src.wait()
    if rc_src or rc_dst:
        raise RuntimeError(f"COPY pipe failed ({src_sql!r} -> {dst_sql!r}): exit {rc_src}/{rc_dst}")
    return total


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def written_columns(cluster, mas_db: str) -> dict:
    """table -> the columns the import writes on this MAS schema (read with the library's detection)."""
    from _syn2mas.migration import mas_schema as lib_schema

    conn = cluster.connect(mas_db, autocommit=False)
    try:
        schema = lib_schema.detect(conn)
        return {table: schema.target_columns(table) for table, _stages in ENTITIES}
    finally:
        conn.close()


def stage_floor_sources(cluster, mas_db: str, synapse_db: str, columns: dict) -> dict:
    """Copies, untimed, the imported rows into plain tables of Synapse's database; rows/bytes per table."""
    conn = cluster.connect(mas_db)
    with conn.cursor() as cur:
        definitions = {}
        for table, cols in columns.items():
            cur.execute("""SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                           WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped""",
                        (table,))
            types = dict(cur.fetchall())
            definitions[table] = ", ".join(f"{quote_ident(c)} {types[c]}" for c in cols)
    conn.close()
    cluster.execute("DROP SCHEMA IF EXISTS bench_floor CASCADE; CREATE SCHEMA bench_floor", synapse_db)
    sizes = {}
    for table, cols in columns.items():
        collist = ", ".join(quote_ident(c) for c in cols)
        cluster.execute(f"CREATE TABLE bench_floor.{quote_ident(table)} ({definitions[table]})", synapse_db)
        nbytes = shell_pipe(cluster, mas_db, f"COPY (SELECT {collist} FROM {quote_ident(table)}) TO STDOUT",
                            synapse_db, f"COPY bench_floor.{quote_ident(table)} ({collist}) FROM STDIN",
                            count_bytes=True)
        rows = cluster.execute(f"SELECT count(*) FROM bench_floor.{quote_ident(table)}", synapse_db)[0][0]
        sizes[table] = {"rows": rows, "bytes": nbytes}
    cluster.execute("VACUUM ANALYZE " + ", ".join(f"bench_floor.{quote_ident(t)}" for t in columns), synapse_db)
    return sizes


def drop_and_save_constraints(cluster, dbname: str, tables) -> list:
    """Drops what the import drops (PK/UNIQUE/FK on or pointing at the tables, their other indexes);
    returns the statements that rebuild them: indexes, then PK/UNIQUE, then FKs."""
    conn = cluster.connect(dbname)
    with conn.cursor() as cur:
        cur.execute("""
            SELECT con.conrelid::regclass::text, con.conname, con.contype, pg_get_constraintdef(con.oid)
            FROM pg_constraint con
            WHERE con.contype IN ('p', 'u', 'f')
              AND (con.conrelid = ANY(%(t)s::regclass[])
                   OR (con.contype = 'f' AND con.confrelid = ANY(%(t)s::regclass[])))
            ORDER BY con.contype = 'f' DESC, 1, 2""", {"t": list(tables)})
        constraints = cur.fetchall()
        cur.execute("""
            SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i
            WHERE i.indrelid = ANY(%(t)s::regclass[])
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid
                              AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x'))
            ORDER BY 1""", {"t": list(tables)})
        indexes = cur.fetchall()
        for table, name, _type, _definition in constraints:
            cur.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote_ident(name)}")
        for name, _definition in indexes:
            cur.execute(f"DROP INDEX {name}")
    conn.close()
    steps = list(indexes)
    steps += [(name, f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(name)} {definition}")
              for table, name, contype, definition in sorted(constraints, key=lambda c: c[2] == "f")]
    return steps


def relay_pipe(src, src_sql: str, dst, dst_sql: str) -> None:
    """The same COPY TO STDOUT -> COPY FROM STDIN between two open connections, relayed by this
    process through an OS pipe (a thread writes what Synapse's COPY sends, the other reads)."""
    read_fd, write_fd = os.pipe()
    errors = []

    def produce():
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 16) as sink, src.cursor() as cur:
                cur.copy_expert(src_sql, sink, size=1 << 16)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=1 << 16) as source, dst.cursor() as cur:
            cur.copy_expert(dst_sql, source, size=1 << 16)
    finally:
        thread.join()
    if errors:
        raise errors[0]


def rowpipe(src, src_sql: str, dst, dst_sql: str) -> None:
    """The same two COPYs through the import's own pipe (mas_writer.run_pipe: a reader thread and a
    bounded queue of 256 KiB chunks)."""
    from _syn2mas.migration.mas_writer import RowPipe, run_pipe

    def read(pipe):
        with src.cursor() as cur:
            cur.copy_expert(src_sql, pipe, size=65536)

    def write(pipe):
        with dst.cursor() as cur:
            cur.copy_expert(dst_sql, pipe, size=RowPipe.CHUNK)

    run_pipe(read, write)


# Ways the floor moves the rows; the fastest counts, per table.
FLOOR_METHODS = ("psql", "relay", "rowpipe")


def run_floor(cluster, synapse_db: str, scratch_db: str, columns: dict, sizes: dict) -> dict:
    """COPY | COPY of the staged rows into the stripped scratch tables, each of FLOOR_METHODS in
    turn (tables emptied in between), the fastest one per table counting; then the build.

    As in the import, the last load and the build share one transaction: the index builds then
    read rows their own transaction wrote, with no hint bits to set (a build after the load had
    committed would first rewrite every heap page to set them, which the import never pays)."""
    create_mas_db(cluster, scratch_db)
    steps = drop_and_save_constraints(cluster, scratch_db, [t for t, _s in ENTITIES])
    tables = {table: dict(sizes[table]) for table in columns}
    build = {}
    build_seconds = 0.0
    for method in FLOOR_METHODS:
        last = method == FLOOR_METHODS[-1]
        src = cluster.connect(synapse_db)
        dst = cluster.connect(scratch_db, autocommit=method == "psql")
        try:
            with dst.cursor() as cur:
                cur.execute("TRUNCATE " + ", ".join(quote_ident(t) for t in columns))
            for table, cols in columns.items():
                collist = ", ".join(quote_ident(c) for c in cols)
                src_sql = f"COPY (SELECT {collist} FROM bench_floor.{quote_ident(table)}) TO STDOUT"
                dst_sql = f"COPY {quote_ident(table)} ({collist}) FROM STDIN"
                started = time.monotonic()
                if method == "psql":
                    shell_pipe(cluster, synapse_db, src_sql, scratch_db, dst_sql)
                elif method == "relay":
                    relay_pipe(src, src_sql, dst, dst_sql)
                else:
                    rowpipe(src, src_sql, dst, dst_sql)
                tables[table][f"{method}_seconds"] = round(time.monotonic() - started, 3)
            if last:
                build_started = time.monotonic()
                with dst.cursor() as cur:
                    cur.execute("SET LOCAL maintenance_work_mem = %s", (MAINTENANCE_WORK_MEM,))
                    for name, statement in steps:
                        started = time.monotonic()
                        cur.execute(statement)
                        build[name] = round(time.monotonic() - started, 3)
                build_seconds = time.monotonic() - build_started
            if not dst.autocommit:
                dst.commit()
        finally:
            src.close()
            dst.close()
    for entry in tables.values():
        entry["method"] = min(FLOOR_METHODS, key=lambda m: entry[f"{m}_seconds"])
        entry["seconds"] = entry[f"{entry['method']}_seconds"]
    copy_seconds = sum(entry["seconds"] for entry in tables.values())
    return {"tables": tables, "copy_seconds": round(copy_seconds, 3), "build_seconds": round(build_seconds, 3),
            "total_seconds": round(copy_seconds + build_seconds, 3), "build": build,
            "copy_seconds_by_method": {m: round(sum(e[f"{m}_seconds"] for e in tables.values()), 3)
                                       for m in FLOOR_METHODS},
            "method": "per table, the fastest of three ways to run `COPY (SELECT cols FROM staged) TO STDOUT` "
                      "into `COPY table (cols) FROM STDIN`: psql | psql; one process relaying through an OS pipe; "
                      "the import's own thread/queue pipe (mas_writer.run_pipe); then the dropped indexes and "
                      "PK/UNIQUE/FK constraints rebuilt in the transaction of the last load, as the import does"}


# ------------------------------------------------------------------------------------------
# Profile: the Synapse side of each stage
# ------------------------------------------------------------------------------------------

class _Sink:
    def __init__(self):
        self.bytes = 0

    def write(self, data):
        self.bytes += len(data)


def profile_synapse_side(cluster, synapse_db: str, mas_db: str) -> dict:
    """Per stage: the count query and the SELECT streamed to nowhere, at default and 256MB work_mem."""
    import secrets

    from _syn2mas.migration import mas_schema as lib_schema
    from _syn2mas.migration.stages import STAGES, stage_params

    conn = cluster.connect(mas_db, autocommit=False)
    schema = lib_schema.detect(conn)
    conn.close()
    params = stage_params(SERVER_NAME, seed=secrets.randbits(62), run_ms=int(time.time() * 1000))
    params.update(map_providers=list(PROVIDERS), map_ids=[str(p) for p in PROVIDERS.values()])
    out = {}
    conn = cluster.connect(synapse_db, autocommit=False)
    try:
        for setting in ("default", "256MB"):
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                if setting != "default":
                    cur.execute("SET LOCAL work_mem = %s", (setting,))
                cur.execute("SHOW work_mem")
                shown = cur.fetchone()[0]
                for stage in STAGES:
                    started = time.monotonic()
                    cur.execute(stage.count(), params)
                    cur.fetchall()
                    count_seconds = time.monotonic() - started
                    sink = _Sink()
                    query = cur.mogrify(stage.select(schema.target_columns(stage.table)), params).decode()
                    started = time.monotonic()
                    cur.copy_expert(f"COPY (\n{query}\n) TO STDOUT", sink, size=65536)
                    out.setdefault(stage.name, {})[setting] = {
                        "work_mem": shown, "count_seconds": round(count_seconds, 3),
                        "select_seconds": round(time.monotonic() - started, 3), "select_bytes": sink.bytes}
            conn.rollback()
    finally:
        conn.close()
    return out


# ------------------------------------------------------------------------------------------
# One size
# ------------------------------------------------------------------------------------------

def engine_version() -> dict:
    """The checkout's commit, and whether the import's library differs from it (work in progress)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    library = ("migration/importer", "migration/stages", "migration/synapse_reader", "migration/mas_writer",
               "migration/mas_schema", "db")
    status = git("status", "--porcelain", "--", *(f"plugins/module_utils/_syn2mas/{name}.py" for name in library))
    return {"commit": git("rev-parse", "--short", "HEAD"), "library_modified": bool(status) if status is not None else None}


def machine_info(cluster) -> dict:
    settings = dict(cluster.execute(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)", "postgres",
        (["shared_buffers", "work_mem", "maintenance_work_mem", "max_parallel_maintenance_workers",
          "fsync", "synchronous_commit", "full_page_writes", "wal_level"],)))
    mem_kb = 0
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "postgresql": cluster.execute("SHOW server_version")[0][0], "pg_settings": settings,
            "synapse_schema": synapse_schema.LATEST, "mas_schema": MAS_VARIANT, "pgoptions": PGOPTIONS,
            "engine": engine_version(), "loadavg_before": round(os.getloadavg()[0], 2)}


def run_size(cluster, n_users: int, seed: int = 0, workdir: str | None = None, profile: bool = False,
             keep: bool = False, advisor: bool = True, repeats: int | None = None, verify: bool = True) -> dict:
    workdir = workdir or tempfile.mkdtemp(prefix="syn2mas-bench-")
    tag = f"n{n_users}_{os.getpid()}"
    synapse_db, mas_db, dry_db, scratch_db = (f"bench_{kind}_{tag}" for kind in ("synapse", "mas", "dry", "floor"))
    record = {"n_users": n_users, "seed": seed,
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(cluster)}
    try:
        record.update(generate_synapse_db(cluster, synapse_db, n_users, seed))

        dry_configs = write_configs(cluster, workdir, synapse_db, dry_db)
        real_configs = write_configs(cluster, workdir, synapse_db, mas_db)
        if advisor:
            create_mas_db(cluster, mas_db)
            log(f"N={n_users:,}: advisor")
            record["advisor"] = run_advisor(*real_configs, workdir)
            if record["advisor"]["errors"]:
                raise RuntimeError(f"the advisor found errors: {record['advisor']['error_messages']}")

        # Small sizes run in about a second, where noise dominates: the median of a few runs.
        repeats = repeats or (3 if n_users <= 20_000 else 1)
        dry_runs, real_runs = [], []
        for attempt in range(repeats):
            create_mas_db(cluster, dry_db)
            create_mas_db(cluster, mas_db)
            log(f"N={n_users:,}: dry run{f' ({attempt + 1}/{repeats})' if repeats > 1 else ''}")
            dry_runs.append(run_import(*dry_configs, workdir, dry_run=True))
            log(f"N={n_users:,}: dry run {dry_runs[-1]['wall_seconds']:.1f}s; real import")
            real_runs.append(run_import(*real_configs, workdir, dry_run=False))
            log(f"N={n_users:,}: import {real_runs[-1]['wall_seconds']:.1f}s")
        record["dry_run"] = _median_run(dry_runs)
        record["import"] = _median_run(real_runs)
        if verify:
            log(f"N={n_users:,}: verify")
            record["verify"] = run_verify(*real_configs, workdir)
            log(f"N={n_users:,}: verify {record['verify']['wall_seconds']:.1f}s: {record['verify']['verdict']}")
        cluster.drop_database(dry_db)
        log(f"N={n_users:,}: staging the floor's rows")

        columns = written_columns(cluster, mas_db)
        sizes = stage_floor_sources(cluster, mas_db, synapse_db, columns)
        record["mas_bytes"] = db_bytes(cluster, mas_db, [t for t, _s in ENTITIES])
        log(f"N={n_users:,}: floor")
        record["floor"] = run_floor(cluster, synapse_db, scratch_db, columns, sizes)
        log(f"N={n_users:,}: floor {record['floor']['total_seconds']:.1f}s")
        if profile:
            log(f"N={n_users:,}: profiling")
            try:
                record["profile"] = {"synapse_side": profile_synapse_side(cluster, synapse_db, mas_db)}
            except Exception as exc:  # the library's internals moved: keep the measured run
                log(f"N={n_users:,}: profile failed: {exc!r}")
                record["profile"] = {"error": repr(exc)}
        summarize(record)
        return record
    finally:
        if not keep:
            for name in (synapse_db, mas_db, dry_db, scratch_db):
                cluster.drop_database(name)


def generate_synapse_db(cluster, synapse_db: str, n_users: int, seed: int) -> dict:
    """Synapse's database of n_users generated users (the real schema), vacuumed and analyzed: the
    record's synapse_rows, generate_seconds, vacuum_seconds and synapse_bytes."""
    log(f"N={n_users:,}: generating the Synapse database")
    cluster.drop_database(synapse_db)
    cluster.create_database(synapse_db, template=synapse_schema.create_template(cluster, synapse_schema.LATEST))
    conn = cluster.connect(synapse_db)
    out = {}
    started = time.monotonic()
    out["synapse_rows"] = synapse_data.generate(conn, n_users, seed=seed, server_name=SERVER_NAME)
    out["generate_seconds"] = round(time.monotonic() - started, 3)
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE " + ", ".join(synapse_data.TABLES))
    out["vacuum_seconds"] = round(time.monotonic() - started, 3)
    conn.close()
    out["synapse_bytes"] = db_bytes(cluster, synapse_db, synapse_data.TABLES)
    log(f"N={n_users:,}: generated in {out['generate_seconds']}s: "
        + ", ".join(f"{t}={c:,}" for t, c in out["synapse_rows"].items()))
    return out


def _median_run(runs: list) -> dict:
    """The run of median wall time, with every run's wall time alongside."""
    chosen = dict(sorted(runs, key=lambda r: r["wall_seconds"])[len(runs) // 2])
    chosen["runs"] = len(runs)
    chosen["wall_seconds_all"] = [r["wall_seconds"] for r in runs]
    return chosen


def summarize(record: dict) -> None:
    """Adds per-entity rows, seconds and ratios, and the whole-run ratios, to the record."""
    imp, dry, floor = record["import"], record["dry_run"], record["floor"]
    entities = []
    for table, stages in ENTITIES:
        rows = sum(imp["migrated"].get(s, 0) for s in stages)
        seconds = sum(imp["stage_seconds"].get(s, 0.0) for s in stages)
        dry_seconds = sum(dry["stage_seconds"].get(s, 0.0) for s in stages)
        f = floor["tables"][table]
        if f["rows"] != rows:
            raise RuntimeError(f"the floor copied {f['rows']} rows of {table} but the import wrote {rows}")
        entities.append({"entity": table, "stages": list(stages), "rows": rows, "bytes": f["bytes"],
                         "import_seconds": round(seconds, 3), "dry_run_seconds": round(dry_seconds, 3),
                         "floor_seconds": f["seconds"], "ratio": _ratio(seconds, f["seconds"])})
    record["entities"] = entities
    rows = sum(e["rows"] for e in entities)
    record["totals"] = {
        "rows": rows, "bytes": sum(e["bytes"] for e in entities),
        "import_seconds": imp["wall_seconds"], "dry_run_seconds": dry["wall_seconds"],
        "floor_seconds": floor["total_seconds"],
        "import_rows_per_second": round(rows / imp["wall_seconds"]) if imp["wall_seconds"] else None,
        "floor_rows_per_second": round(rows / floor["total_seconds"]) if floor["total_seconds"] else None,
    }
    record["ratios"] = {
        "import_over_floor": _ratio(imp["wall_seconds"], floor["total_seconds"]),
        "import_copy_over_floor_copy": _ratio(sum(e["import_seconds"] for e in entities), floor["copy_seconds"]),
        "import_rebuild_over_floor_build": _ratio(imp["stage_seconds"].get("rebuild", 0.0), floor["build_seconds"]),
        "dry_run_over_import": _ratio(dry["wall_seconds"], imp["wall_seconds"]),
        # The dry run as the rehearsal it is for the window: less the wait for its cross-check against
        # Synapse, which the real import does not make (README.md, "Verifying the import").
        "dry_run_rehearsal_over_import": _ratio(
            dry["wall_seconds"] - ((dry.get("verify_record_seconds") or {}).get("after_rebuild") or 0.0),
            imp["wall_seconds"]),
    }


def _ratio(a: float, b: float):
    return round(a / b, 3) if b else None


# ------------------------------------------------------------------------------------------
# Output: table, summary, results file, plot
# ------------------------------------------------------------------------------------------

def _rate(rows, seconds) -> str:
    return f"{rows / seconds:,.0f}" if seconds and rows else "-"


def format_table(record: dict) -> str:
    imp, dry, floor = record["import"], record["dry_run"], record["floor"]
    lines = [f"N = {record['n_users']:,} users (seed {record['seed']}); Synapse "
             + ", ".join(f"{t} {c:,}" for t, c in record["synapse_rows"].items())
             + f"; generated in {record['generate_seconds']:.1f}s"]
    if record.get("advisor"):
        a = record["advisor"]
        lines.append(f"advisor: {a['errors']} errors, {a['warnings']} warnings "
                     f"({', '.join(a['warning_checks'])}) in {a['seconds']:.1f}s")
    head = (f"{'entity (MAS table)':<34}{'rows':>11}{'MB':>8}{'import s':>10}{'rows/s':>11}"
            f"{'floor s':>9}{'rows/s':>11}{'imp/floor':>10}")
    lines += [head, "-" * len(head)]
    for e in record["entities"]:
        lines.append(f"{e['entity']:<34}{e['rows']:>11,}{e['bytes'] / 1e6:>8.1f}{e['import_seconds']:>10.2f}"
                     f"{_rate(e['rows'], e['import_seconds']):>11}{e['floor_seconds']:>9.2f}"
                     f"{_rate(e['rows'], e['floor_seconds']):>11}{_fmt_ratio(e['ratio']):>10}")
    copy_imp = sum(e["import_seconds"] for e in record["entities"])
    rows, nbytes = record["totals"]["rows"], record["totals"]["bytes"]
    lines.append(f"{'  all COPY stages':<34}{rows:>11,}{nbytes / 1e6:>8.1f}{copy_imp:>10.2f}{_rate(rows, copy_imp):>11}"
                 f"{floor['copy_seconds']:>9.2f}{_rate(rows, floor['copy_seconds']):>11}"
                 f"{_fmt_ratio(record['ratios']['import_copy_over_floor_copy']):>10}")
    rebuild = imp["stage_seconds"].get("rebuild", 0.0)
    lines.append(f"{'  index/constraint build':<34}{'':>11}{'':>8}{rebuild:>10.2f}{'':>11}"
                 f"{floor['build_seconds']:>9.2f}{'':>11}"
                 f"{_fmt_ratio(record['ratios']['import_rebuild_over_floor_build']):>10}")
    record_side = imp.get("verify_record_seconds")
    if record_side:
        if "written" in record_side:
            lines.append(f"{'  digests of the rows written':<34}{'':>11}{'':>8}{record_side['written']:>10.2f}")
        lines.append(f"{'  verify record after the rebuild':<34}{'':>11}{'':>8}{record_side['after_rebuild']:>10.2f}"
                     f"   (Synapse's fingerprint: {record_side['total']:.2f} s, from the rebuild's start)")
    lines.append(f"{'  before the stages (checks, counts)':<34}{'':>11}{'':>8}{imp['before_stages_seconds']:>10.2f}")
    lines.append(f"{'  process start-up and exit':<34}{'':>11}{'':>8}{imp['startup_seconds']:>10.2f}")
    lines.append("-" * len(head))
    lines.append(f"{'TOTAL, end to end':<34}{rows:>11,}{nbytes / 1e6:>8.1f}{imp['wall_seconds']:>10.2f}"
                 f"{_rate(rows, imp['wall_seconds']):>11}{floor['total_seconds']:>9.2f}"
                 f"{_rate(rows, floor['total_seconds']):>11}{_fmt_ratio(record['ratios']['import_over_floor']):>10}")
    lines.append(f"dry run: {dry['wall_seconds']:.2f}s end to end ({_fmt_ratio(record['ratios']['dry_run_over_import'])}"
                 f" of the import); peak RSS: import {imp['peak_rss_mb']:.1f} MB, dry run {dry['peak_rss_mb']:.1f} MB"
                 f"; import CPU {imp['cpu_seconds']:.1f}s")
    if record.get("verify"):
        v = record["verify"]
        lines.append(f"verify: {v['rows']:,} rows in {v['wall_seconds']:.2f}s end to end "
                     f"({_fmt_ratio(_ratio(v['wall_seconds'], imp['wall_seconds']))} of the import), "
                     f"{_rate(v['rows'], v['wall_seconds'])} rows/s, peak RSS {v['peak_rss_mb']:.1f} MB, "
                     f"CPU {v['cpu_seconds']:.1f}s")
    by_method = floor.get("copy_seconds_by_method", {})
    if by_method:
        lines.append("floor COPY by way (the fastest per table counts): "
                     + ", ".join(f"{m} {v:.2f}s" for m, v in by_method.items()))
    if record.get("profile", {}).get("synapse_side"):
        prof = record["profile"]
        lines.append("profile, Synapse side alone (seconds): count query and SELECT streamed to nowhere, "
                     "at work_mem default -> 256MB, next to the stage's import seconds")
        for stage, p in prof["synapse_side"].items():
            d, big = p["default"], p["256MB"]
            lines.append(f"  {stage:<22} count {d['count_seconds']:6.2f} -> {big['count_seconds']:6.2f}   "
                         f"select {d['select_seconds']:6.2f} -> {big['select_seconds']:6.2f}   "
                         f"import {imp['stage_seconds'].get(stage, 0.0):6.2f}")
    return "\n".join(lines)


def _fmt_ratio(value) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def check_targets(records: list) -> list:
    """[(target, measured, holds)] over the sizes of this run."""
    by_n = {r["n_users"]: r for r in records}
    checks = []
    for n in (100_000, 1_000_000):
        if n in by_n:
            ratio = by_n[n]["ratios"]["import_over_floor"]
            checks.append((f"import <= {TARGET_FLOOR_RATIO:g}x floor at {n:,}", f"{ratio:.2f}x",
                           ratio <= TARGET_FLOOR_RATIO))
    if 1_000_000 in by_n:
        rss = by_n[1_000_000]["import"]["peak_rss_mb"]
        checks.append((f"peak RSS < {TARGET_RSS_MB_AT_1M:g} MB at 1,000,000", f"{rss:.1f} MB",
                       rss < TARGET_RSS_MB_AT_1M))
    sizes = sorted(by_n)
    if len(sizes) >= 2:
        lo, hi = by_n[sizes[0]]["import"]["peak_rss_mb"], by_n[sizes[-1]]["import"]["peak_rss_mb"]
        growth = hi / lo if lo else float("inf")
        checks.append((f"peak RSS grows no faster than the users ({sizes[0]:,} -> {sizes[-1]:,}: "
                       f"x{sizes[-1] / sizes[0]:g})", f"x{growth:.2f}", growth <= sizes[-1] / sizes[0]))
    for n in sizes:
        ratios = by_n[n]["ratios"]
        rehearsal = ratios.get("dry_run_rehearsal_over_import") or ratios["dry_run_over_import"]
        checks.append((f"dry run within {TARGET_DRY_RUN_DEVIATION:.0%} of the import at {n:,} (less its cross-check's "
                       f"wait; all of it: {ratios['dry_run_over_import']:.2f}x)", f"{rehearsal:.2f}x",
                       abs(rehearsal - 1) <= TARGET_DRY_RUN_DEVIATION))
    for n in sizes:
        if by_n[n].get("verify"):
            ratio = by_n[n]["verify"]["wall_seconds"] / by_n[n]["import"]["wall_seconds"]
            checks.append((f"verify takes no longer than the import at {n:,}", f"{ratio:.2f}x", ratio <= 1))
    if 100_000 in by_n and 1_000_000 in by_n:
        scale = by_n[1_000_000]["import"]["wall_seconds"] / by_n[100_000]["import"]["wall_seconds"]
        checks.append((f"1,000,000 takes <= {TARGET_SCALING_1M_OVER_100K:g}x the time of 100,000", f"{scale:.2f}x",
                       scale <= TARGET_SCALING_1M_OVER_100K))
    return checks


def format_summary(records: list) -> str:
    head = f"{'users':>11}{'rows':>12}{'import s':>10}{'dry run s':>11}{'floor s':>9}{'imp/floor':>10}" \
           f"{'rows/s':>10}{'RSS MB':>8}{'dry RSS':>9}"
    lines = [head, "-" * len(head)]
    for r in sorted(records, key=lambda r: r["n_users"]):
        lines.append(f"{r['n_users']:>11,}{r['totals']['rows']:>12,}{r['import']['wall_seconds']:>10.2f}"
                     f"{r['dry_run']['wall_seconds']:>11.2f}{r['floor']['total_seconds']:>9.2f}"
                     f"{_fmt_ratio(r['ratios']['import_over_floor']):>10}"
                     f"{r['totals']['import_rows_per_second']:>10,}{r['import']['peak_rss_mb']:>8.1f}"
                     f"{r['dry_run']['peak_rss_mb']:>9.1f}")
    lines += format_targets(check_targets(records))
    return "\n".join(lines)


def format_targets(checks: list, heading: str = "targets:", markdown: bool = False) -> list:
    """The lines of the targets' verdicts ([(target, measured, holds)]): under `heading`, none without a check;
    or, with `markdown`, as the README's table."""
    if markdown:
        return ["| target | measured | |", "|---|---|---|"] + [
            f"| {target} | {measured} | {'holds' if holds else 'missed'} |" for target, measured, holds in checks]
    return [heading] + [f"  [{'ok' if holds else 'MISS'}] {target}: {measured}"
                        for target, measured, holds in checks] if checks else []


def format_markdown(records: list) -> str:
    """The README's tables (summary per size, entities of the largest size) from result records."""
    lines = ["| users | rows written | import s (median; range) | dry run s | floor s | import / floor | rows/s "
             "| peak RSS MB (import, dry run) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: r["n_users"]):
        imp = r["import"]
        runs = imp.get("wall_seconds_all") or [imp["wall_seconds"]]
        lines.append(f"| {r['n_users']:,} | {r['totals']['rows']:,} | {imp['wall_seconds']:.2f} "
                     f"({min(runs):.2f}-{max(runs):.2f}) | {r['dry_run']['wall_seconds']:.2f} "
                     f"| {r['floor']['total_seconds']:.2f} | {r['ratios']['import_over_floor']:.2f}x "
                     f"| {r['totals']['import_rows_per_second']:,} | {imp['peak_rss_mb']:.1f}, "
                     f"{r['dry_run']['peak_rss_mb']:.1f} |")
    big = max(records, key=lambda r: r["n_users"])
    imp, floor = big["import"], big["floor"]
    lines += ["", f"Per entity at {big['n_users']:,} users:", "",
              "| MAS table | rows | MB | import s | rows/s | floor s | rows/s | import / floor |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in big["entities"]:
        name = e["entity"] + (f" ({len(e['stages'])} stages)" if len(e["stages"]) > 1 else "")
        lines.append(f"| {name} | {e['rows']:,} | {e['bytes'] / 1e6:.1f} | {e['import_seconds']:.2f} "
                     f"| {_rate(e['rows'], e['import_seconds'])} | {e['floor_seconds']:.2f} "
                     f"| {_rate(e['rows'], e['floor_seconds'])} | {_fmt_ratio(e['ratio'])} |")
    rows, nbytes = big["totals"]["rows"], big["totals"]["bytes"]
    copy_imp = sum(e["import_seconds"] for e in big["entities"])
    lines += [
        f"| *all COPY stages* | {rows:,} | {nbytes / 1e6:.1f} | {copy_imp:.2f} | {_rate(rows, copy_imp)} "
        f"| {floor['copy_seconds']:.2f} | {_rate(rows, floor['copy_seconds'])} "
        f"| {_fmt_ratio(big['ratios']['import_copy_over_floor_copy'])} |",
        f"| *index/constraint build* | | | {imp['stage_seconds'].get('rebuild', 0.0):.2f} | | "
        f"{floor['build_seconds']:.2f} | | {_fmt_ratio(big['ratios']['import_rebuild_over_floor_build'])} |",
        f"| *before the stages (checks)* | | | {imp['before_stages_seconds']:.2f} | | | | |",
        f"| *process start-up and exit* | | | {imp['startup_seconds']:.2f} | | | | |",
        f"| **total, end to end** | {rows:,} | {nbytes / 1e6:.1f} | **{imp['wall_seconds']:.2f}** "
        f"| {_rate(rows, imp['wall_seconds'])} | **{floor['total_seconds']:.2f}** "
        f"| {_rate(rows, floor['total_seconds'])} | **{_fmt_ratio(big['ratios']['import_over_floor'])}** |",
    ]
    lines += [""] + format_targets(check_targets(records), markdown=True)
    return "\n".join(lines)


def append_results(path: str, records: list) -> None:
    existing = []
    if os.path.exists(path):
        with open(path) as handle:
            existing = json.load(handle)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        json.dump(existing + records, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(path + ".tmp", path)


def latest_by_size(records: list, kind: str = "import") -> list:
    """The newest record of each size, of one kind: "import" (this file's) or "runbook" (bench/runbook.py's)."""
    latest = {}
    for r in records:
        if r.get("kind", "import") == kind:
            latest[r["n_users"]] = r  # appended in time order: the last one wins
    return [latest[n] for n in sorted(latest)]


def plot(results_path: str, png_path: str) -> bool:
    """Time and peak RSS against N, from the newest record of each size; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (scripts/bench.sh installs requirements-bench.txt): no plot")
        return False
    with open(results_path) as handle:
        everything = json.load(handle)
    records = latest_by_size(everything)
    runbooks = latest_by_size(everything, kind="runbook")
    if not records:
        return False
    ns = [r["n_users"] for r in records]
    if runbooks:
        fig, (ax_t, ax_m, ax_w) = plt.subplots(1, 3, figsize=(16, 4.2))
        plot_runbook(ax_w, runbooks)
    else:
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_t.plot(ns, [r["import"]["wall_seconds"] for r in records], "o-", label="import")
    ax_t.plot(ns, [r["dry_run"]["wall_seconds"] for r in records], "s--", label="dry run")
    ax_t.plot(ns, [r["floor"]["total_seconds"] for r in records], "^-", label="raw-copy floor (COPY | COPY + build)")
    ax_t.plot(ns, [2 * r["floor"]["total_seconds"] for r in records], ":", color="grey", label="2x floor (target)")
    _style_axes(ax_t, "Import time", "seconds, end to end")
    ax_m.plot(ns, [r["import"]["peak_rss_mb"] for r in records], "o-", label="import")
    ax_m.plot(ns, [r["dry_run"]["peak_rss_mb"] for r in records], "s--", label="dry run")
    ax_m.axhline(TARGET_RSS_MB_AT_1M, color="grey", linestyle=":", label=f"{TARGET_RSS_MB_AT_1M:g} MB (target at 1M)")
    ax_m.set_ylim(0, max(TARGET_RSS_MB_AT_1M * 1.1, max(r["import"]["peak_rss_mb"] for r in records) * 1.2))
    _style_axes(ax_m, "Peak RSS of the importing process", "MB", log_y=False)
    machine = records[-1]["machine"]
    fig.suptitle(f"syn2mas import, {machine['cpus']} CPUs, PostgreSQL {machine['postgresql']}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True


def plot_runbook(ax, runbooks: list) -> None:
    """The runbook benchmark's window per size, beside the import and verify inside it and the floor."""
    ns = [r["n_users"] for r in runbooks]
    series = (("window (Synapse stopped -> healthy)", "window_seconds", "o-"),
              ("predicted by the dry run", "predicted_window_seconds", "x--"),
              ("import (in the window)", "import_seconds", "s-"),
              ("verify (in the window)", "verify_seconds", "v-"),
              ("raw-copy floor", "floor_seconds", "^-"))
    for label, key, style in series:
        points = [(n, r["summary"].get(key)) for n, r in zip(ns, runbooks) if r["summary"].get(key)]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    ax.axhline(90, color="grey", linestyle=":", label="90 s (target at 1M)")
    _style_axes(ax, "Runbook window (migrate.yml; MAS a stand-in)", "seconds", legend_size=7)


def _style_axes(ax, title: str, ylabel: str, log_y: bool = True, legend_size: int = 8) -> None:
    """A panel of the plot: users on a log scale, its title, labels, grid and legend."""
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("Synapse users")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)


def bench_arguments(doc: str, default_sizes: str) -> argparse.ArgumentParser:
    """The options of both benchmarks (this one and bench/runbook.py): the sizes, the seed, --keep, and where
    the figures go."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("sizes", nargs="*", type=int, help=f"numbers of users (default: {default_sizes})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the databases and the cluster (prints where)")
    parser.add_argument("--results", default=RESULTS_JSON, help="results file to append to")
    parser.add_argument("--plot", default=PLOT_PNG, help="plot to redraw from the results file")
    parser.add_argument("--no-plot", action="store_true")
    return parser


def run_sizes(sizes: list, prefix: str, keep: bool, results: str, measure, format_record) -> list:
    """Each size measured on one throwaway cluster (`measure(cluster, n)` returns its record), appended to the
    `results` file and its table (`format_record`) printed as it ends; then the cluster is stopped (with `keep`,
    kept and named)."""
    # A plain `kill` still stops the cluster and drops the work directories (finally blocks run).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    cluster = pgcluster.start_cluster(prefix=prefix)
    log(f"PostgreSQL {cluster.bindir} on {cluster.sockdir}:{cluster.port}")
    records = []
    try:
        for n in sizes:
            record = measure(cluster, n)
            records.append(record)
            append_results(results, [record])
            print(format_record(record) + "\n", flush=True)
    finally:
        if keep:
            log(f"kept: cluster {cluster.sockdir}:{cluster.port} (stop it with pg_ctl -D {cluster.datadir} stop)")
        else:
            cluster.stop()
    return records


def print_where(args) -> None:
    """Where a run's figures went: the results file, and the plot redrawn (unless --no-plot or no matplotlib)."""
    print(f"results appended to {os.path.relpath(args.results, ROOT)}", flush=True)
    if not args.no_plot and plot(args.results, args.plot):
        print(f"plot: {os.path.relpath(args.plot, ROOT)}", flush=True)


def main(argv=None) -> int:
    parser = bench_arguments(__doc__, "10000 100000")
    parser.add_argument("--profile", action="store_true", help="also time each stage's Synapse side alone")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of the dry run and the import per size, median kept (default 3 up to 20,000 users, else 1)")
    parser.add_argument("--pgoptions", default="",
                        help="PGOPTIONS for the import's sessions, to try settings (e.g. \"-c work_mem=256MB\")")
    parser.add_argument("--no-advisor", action="store_true", help="skip the advisor run")
    parser.add_argument("--no-verify", action="store_true", help="skip verify after the import")
    parser.add_argument("--markdown", action="store_true",
                        help="run nothing: print the README's tables from the newest record of each size in --results")
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.results) as handle:
            print(format_markdown(latest_by_size(json.load(handle))))
        return 0
    sizes = args.sizes or [10_000, 100_000]
    global PGOPTIONS
    PGOPTIONS = args.pgoptions

    with tempfile.TemporaryDirectory(prefix="syn2mas-bench-") as workdir:
        records = run_sizes(sizes, "syn2mas-bench-", args.keep, args.results,
                            lambda cluster, n: run_size(cluster, n, seed=args.seed, workdir=workdir,
                                                        profile=args.profile, keep=args.keep,
                                                        advisor=not args.no_advisor, repeats=args.repeat,
                                                        verify=not args.no_verify),
                            format_table)
    if records:
        print(format_summary(records) + "\n", flush=True)
        print_where(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
