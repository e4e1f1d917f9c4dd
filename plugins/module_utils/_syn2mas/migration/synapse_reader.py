# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading Synapse: one read-only snapshot, streamed stage by stage (the stages: stages.py).

Nothing but the stream's buffer is held in memory: each stage's rows go from Synapse's
`COPY ... TO STDOUT` to MAS's `COPY ... FROM STDIN` unparsed.
"""

from __future__ import annotations

from ..db import OTHER_CLIENTS, Client, first_line, lock_refusal, lock_tables, other_clients
from ..errors import DatabaseError, PrivilegeError, RefusedError
from .stages import Stage

# The Synapse tables the import reads. Locked in SHARE mode for a real import, so Synapse
# cannot write to them while the snapshot is read.
SYNAPSE_TABLES = ("users", "user_threepids", "user_external_ids", "devices", "access_tokens", "refresh_tokens")

# Synapse 1.136.0, the oldest release MAS supports (and this collection imports from), has
# database schema version 92.
OLDEST_SCHEMA_VERSION = 92
OLDEST_SYNAPSE = "1.136.0"


def _synapse_lock_refusal(holders, waited: float) -> RefusedError:
    return lock_refusal(
        holders, waited,
        by_client="Synapse's tables are being written to by another session: {holders} (waited {waited}s): stop "
                  "Synapse and its workers before the import",
        by_other="Synapse's tables stayed locked by {holders} for {waited}s: run the import again once it is done "
                 "(or run VACUUM on Synapse's tables first)",
    )


class SynapseReader:
    """Synapse's database, read in one REPEATABLE READ, READ ONLY snapshot.

    The session is read-only, so nothing it runs can write to Synapse.
    """

    def __init__(self, conn, server_name: str, work_mem: str = "64MB"):
        self.conn = conn
        self.server_name = server_name
        with conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.execute("SET client_encoding = 'UTF8'")
            # The stages hash-join users and devices: enough memory keeps those joins off disk.
            cur.execute("SET work_mem = %s", (work_mem,))
            # ...and with joins that fit in memory the planner drops parallel plans unless parallel
            # workers look cheap: the stages' per-row work (ids, IP checks) is what parallelism speeds up.
            cur.execute("SET parallel_tuple_cost = 0.001")
            cur.execute("SET parallel_setup_cost = 100")
            # JIT compiles each stage's expressions once per process: at a million users the stages cost
            # enough for inlining and optimization, seconds per stage (EXPLAIN ANALYZE: 3.4-7.1 s of JIT
            # for the session, token and refresh stages), far more than it saves on one pass of cheap rows.
            cur.execute("SET jit = off")
        conn.commit()

    def cursor(self):
        return self.conn.cursor()

    def other_clients(self) -> list:
        """Other sessions on Synapse's database: a running Synapse, workers, admin shells."""
        return other_clients(self.conn)

    def check_privileges(self, lock: bool) -> None:
        """Names what Synapse's database role may not do, before anything waits or fails on it."""
        with self.cursor() as cur:
            cur.execute("""
                SELECT current_user,
                       array_agg(t ORDER BY t) FILTER (WHERE NOT has_table_privilege(t, 'SELECT')),
                       array_agg(t ORDER BY t) FILTER (WHERE NOT has_table_privilege(t, 'UPDATE, DELETE, TRUNCATE'))
                FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL""", (list(SYNAPSE_TABLES),))
            user, unreadable, unlockable = cur.fetchone()
        self.conn.rollback()
        if unreadable:
            raise PrivilegeError(
                f"Synapse's database role {user!r} lacks the SELECT privilege on {', '.join(unreadable)}: "
                "run the import as Synapse's own database role (or GRANT SELECT on them)"
            )
        if lock and unlockable:
            raise PrivilegeError(
                f"Synapse's database role {user!r} may read but not lock {', '.join(unlockable)}: the import "
                "locks Synapse's tables in SHARE mode so that nothing writes to them while it reads, which "
                "needs the UPDATE, DELETE or TRUNCATE privilege (or ownership). Run the import as Synapse's "
                "own database role"
            )

    def begin_snapshot(self, lock: bool, lock_wait_seconds: float = 60) -> None:
        """Starts the snapshot every later read sees; `lock` blocks Synapse's writes meanwhile.

        The lock is the transaction's first statement, before the snapshot is taken, so that a
        write the lock waited for is in the snapshot rather than lost between the two."""
        self.conn.rollback()
        with self.cursor() as cur:
            missing = self.missing_tables(cur)
            if missing:
                raise RefusedError(
                    f"Synapse's database lacks the table(s) {', '.join(missing)}: is this the database "
                    "of a Synapse 1.136 or newer?"
                )
            version = self.schema_version()
            if version is not None and version < OLDEST_SCHEMA_VERSION:
                raise RefusedError(
                    f"Synapse's database has schema version {version}, older than Synapse {OLDEST_SYNAPSE} "
                    f"(version {OLDEST_SCHEMA_VERSION}): upgrade Synapse to {OLDEST_SYNAPSE} or newer and start it "
                    "once, then migrate"
                )
        self.conn.rollback()

        def begin(cur):
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

        if not lock:
            with self.cursor() as cur:
                begin(cur)
            return
        try:
            lock_tables(self.conn, begin, f"LOCK TABLE {', '.join(SYNAPSE_TABLES)} IN SHARE MODE",
                        SYNAPSE_TABLES, lock_wait_seconds, _synapse_lock_refusal)
        except PrivilegeError as exc:
            raise PrivilegeError(f"Synapse's database role may not lock its tables ({exc}): run the import "
                                 "as Synapse's own database role") from None

    def fingerprint(self) -> dict:
        """table -> {"rows", "digest"} of every table the import reads, in the current snapshot: an
        order-independent sum of a hash of each whole row, so any insert, update or delete shows."""
        with self.cursor() as cur:
            cur.execute(" UNION ALL ".join(
                f"SELECT '{table}', count(*), md5(COALESCE(sum(hashtextextended(x::text, 0)), 0)::text) FROM {table} x"
                for table in SYNAPSE_TABLES))
            return {table: {"rows": rows, "digest": digest[:16]} for table, rows, digest in cur.fetchall()}

    def sessions_since_lock(self) -> list:
        """Sessions that would write to Synapse once the snapshot ends: those waiting for its
        locks, and clients that connected since the import checked (in the snapshot's transaction,
        which this leaves open)."""
        with self.cursor() as cur:
            # pg_stat_activity is read once per transaction unless its snapshot is cleared.
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(f"""
                SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(a.usename::text, ''),
                       COALESCE(host(a.client_addr), ''), pg_backend_pid() = ANY(pg_blocking_pids(a.pid))
                FROM pg_stat_activity a WHERE {OTHER_CLIENTS} ORDER BY a.pid""")
            rows = cur.fetchall()
        return [(Client(pid, name, user, address, "waiting to write" if waiting else "connected"))
                for pid, name, user, address, waiting in rows]

    def missing_tables(self, cur) -> list:
        cur.execute("SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind = 'r' "
                    "AND pg_table_is_visible(c.oid)", (list(SYNAPSE_TABLES),))
        present = {row[0] for row in cur.fetchall()}
        return [t for t in SYNAPSE_TABLES if t not in present]

    def end_snapshot(self) -> None:
        self.conn.rollback()

    def end_snapshot_after_commit(self) -> str | None:
        """Ends the snapshot once MAS committed: every read was done and checked before the commit,
        so a lost connection here is harmless; returns a note saying so, or None."""
        try:
            self.conn.rollback()
        except Exception as exc:  # the server released the snapshot and its locks with the session
            return f"the connection to Synapse's database was lost after the import committed (harmless: " \
                   f"everything was read and checked before the commit): {first_line(exc)}"
        return None

    def schema_version(self) -> int | None:
        with self.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT version FROM schema_version")
            row = cur.fetchone()
        return int(row[0]) if row else None

    def estimated_rows(self) -> dict:
        """Row estimates from the planner's statistics (exact counts take minutes on large servers)."""
        with self.cursor() as cur:
            cur.execute("SELECT relname, GREATEST(reltuples, 0)::bigint FROM pg_class "
                        "WHERE relname = ANY(%s) AND relkind = 'r' AND pg_table_is_visible(oid)",
                        (list(SYNAPSE_TABLES),))
            return dict(cur.fetchall())

    def users_with_wrong_server_name(self) -> tuple:
        """(count, examples) of local users whose MXID is not @localpart:server_name."""
        with self.cursor() as cur:
            cur.execute("""
                SELECT count(*), min(name), max(name) FROM users
                WHERE appservice_id IS NULL
                  AND NOT (left(name, 1) = '@' AND strpos(name, ':') > 2
                           AND substr(name, strpos(name, ':') + 1) = %(server_name)s)""",
                        {"server_name": self.server_name})
            count, first, last = cur.fetchone()
        return count, sorted({x for x in (first, last) if x is not None})

    def auth_providers_in_use(self) -> dict:
        """auth_provider -> number of SSO links of migrated (non-appservice) users."""
        with self.cursor() as cur:
            cur.execute("""
                SELECT x.auth_provider, count(*) FROM user_external_ids x
                JOIN users u ON u.name = x.user_id AND u.appservice_id IS NULL
                GROUP BY x.auth_provider ORDER BY x.auth_provider""")
            return dict(cur.fetchall())

    def stage_counts(self, stage: Stage, params: dict) -> list:
        """[(reason or None, count, first example, last example, fixed count)] for a stage."""
        with self.cursor() as cur:
            try:
                cur.execute(stage.count(), params)
            except Exception as exc:
                raise DatabaseError(f"reading Synapse's {stage.name} failed: {first_line(exc)}") from None
            return cur.fetchall()

    def copy_stage(self, stage: Stage, target_columns, params: dict, sink) -> None:
        """Streams the stage's MAS rows, in COPY text format, into sink.write(bytes)."""
        with self.cursor() as cur:
            query = cur.mogrify(stage.select(target_columns), params).decode("utf-8")
            cur.copy_expert(f"COPY (\n{query}\n) TO STDOUT", sink, size=65536)
