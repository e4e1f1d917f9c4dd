# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing into MAS: one transaction holding the whole import, or nothing.

The written tables are locked, their constraints and indexes dropped, the rows bulk loaded with
COPY, then the indexes and constraints rebuilt and validated once, all inside a single
transaction: PostgreSQL's transactional DDL means that a failure, a lost connection or a killed
importer at any point leaves MAS exactly as it was, with nothing to clean up.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
import time

from ..db import connection_lost, first_line, lock_refusal, lock_tables
from ..errors import ConnectionLostError, DataError, DatabaseError, PrivilegeError, RefusedError
from .mas_schema import WRITTEN_TABLES
from .stages import STATUS_REPAIRED, STATUS_SEPARATOR

# Session-level advisory lock taken for the whole run: a second import is refused at once.
ADVISORY_LOCK_KEY = 0x73796E326D6173  # "syn2mas"
# A row of pg_locks (aliased `l`) that is a running import's lock: pg_locks splits the bigint key in two.
IMPORT_LOCK_HELD = ("l.locktype = 'advisory' AND l.granted "
                    f"AND ((l.classid::bigint << 32) | l.objid::bigint) = {ADVISORY_LOCK_KEY}")
MARKER_PREFIX = "matrix.syn2mas import: "
# Tables whose values are secrets: their constraint errors never quote the offending value.
SECRET_TABLES = ("compat_access_tokens", "compat_refresh_tokens", "user_passwords")
# Tables that are not written but whose rows mean MAS is in use (a registration in progress).
IN_USE_TABLES = ("user_registrations",)


def _mas_lock_refusal(holders, waited: float) -> RefusedError:
    return lock_refusal(
        holders, waited,
        by_client="MAS's tables are in use by another session: {holders} (waited {waited}s): stop MAS during the import",
        by_other="MAS's tables stayed locked by {holders} for {waited}s (autovacuum cleans up after an aborted "
                 "import): run the import again once it is done, or run VACUUM on MAS's database first",
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def marker_digest(payload: dict) -> str:
    """The digest the marker carries of itself (its `digest` key aside): a marker edited by hand
    (its run time, its high-water mark) no longer matches it."""
    body = {k: v for k, v in payload.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def read_marker(conn) -> dict | None:
    """What a previous successful import recorded on MAS's users table, if any (read-only)."""
    with conn.cursor() as cur:
        cur.execute("SELECT obj_description(to_regclass('users'), 'pg_class')")
        row = cur.fetchone()
    text = row[0] if row else None
    if not text or not text.startswith(MARKER_PREFIX):
        return None
    try:
        return json.loads(text[len(MARKER_PREFIX):])
    except ValueError:
        return None


def tables_with_data(conn) -> list:
    """Written tables, and tables pointing at users, that hold rows: MAS is not fresh then (read-only)."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT DISTINCT c.relname FROM pg_class c
            WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid)
              AND (c.relname = ANY(%s) OR c.oid IN (
                    SELECT conrelid FROM pg_constraint WHERE contype = 'f'
                    AND confrelid = to_regclass('users')))
            ORDER BY c.relname""", (list(WRITTEN_TABLES) + list(IN_USE_TABLES),))
        tables = [row[0] for row in cur.fetchall()]
        found = []
        for table in tables:
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)})")
            if cur.fetchone()[0]:
                found.append(table)
    return found


def row_rewriters(conn) -> list:
    """The triggers and rules on the tables the import writes that would fire on its rows (enabled, and not
    PostgreSQL's own for constraints): [(table, "trigger" or "rule", name)] (read-only). MAS has none there."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT c.relname, 'trigger', t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
              AND c.relname = ANY(%(tables)s) AND pg_table_is_visible(c.oid)
            UNION ALL
            SELECT c.relname, 'rule', r.rulename FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
            WHERE r.rulename <> '_RETURN' AND r.ev_enabled IN ('O', 'A')
              AND c.relname = ANY(%(tables)s) AND pg_table_is_visible(c.oid)
            ORDER BY 1, 2, 3""", {"tables": list(WRITTEN_TABLES)})
        return [tuple(row) for row in cur.fetchall()]


def existing_providers(conn, ids) -> set:
    """Which of these upstream provider ids MAS's database holds (read-only)."""
    with conn.cursor() as cur:
        cur.execute("SELECT upstream_oauth_provider_id::text FROM upstream_oauth_providers "
                    "WHERE upstream_oauth_provider_id = ANY(%s::uuid[])", ([str(i) for i in ids],))
        return {row[0] for row in cur.fetchall()}


class StreamClosed(Exception):
    pass


class SynapseReadError(DatabaseError):
    """Reading a stage from Synapse failed; `detail` is the driver's first line."""

    def __init__(self, detail: str):
        super().__init__(f"reading from Synapse failed, and MAS was left as it was: {detail}")
        self.detail = detail


class RowPipe:
    """Carries COPY text from the Synapse reader thread to the MAS COPY, with bounded memory.

    The reader side counts rows (one newline per row in COPY text format) for progress.
    """

    CHUNK = 1 << 18

    def __init__(self, on_rows=None):
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._buffer: list = []
        self._buffered = 0
        self._closed = False
        self.error: BaseException | None = None
        self.rows = 0
        self.bytes = 0
        self.on_rows = on_rows

    # Synapse side (psycopg2 calls write() once per row).
    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._put(b"".join(self._buffer))
            self._buffer, self._buffered = [], 0

    def _put(self, item) -> None:
        while True:
            if self._closed:
                raise StreamClosed("the MAS side stopped reading")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self, error: BaseException | None = None) -> None:
        try:
            if error is None:
                self._flush()
        except StreamClosed:
            return
        self.error = error
        try:
            self._put(None)
        except StreamClosed:
            pass

    # MAS side (psycopg2 calls read(size) until it gets b"").
    def read(self, size: int = -1) -> bytes:
        item = self._queue.get()
        if item is None:
            if self.error is not None:
                raise IOError(f"reading from Synapse failed: {first_line(self.error)}")
            return b""
        rows = item.count(b"\n")
        self.rows += rows
        self.bytes += len(item)
        if self.on_rows:
            self.on_rows(self.rows)
        return item

    def close(self) -> None:
        self._closed = True
        # Unblock a writer waiting on a full queue.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass


class MasWriter:
    """MAS's database during the import; see the module docstring for the transaction's shape."""

    def __init__(self, conn):
        self.conn = conn
        self.locked = False
        self.saved_constraints: list = []  # (table, name, contype, definition)
        self.saved_indexes: list = []  # (name, definition, table)

    # -- before the transaction ---------------------------------------------------------------

    def try_lock(self) -> None:
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
            if cur.fetchone()[0]:
                self.locked = True
                return
            cur.execute(f"""
                SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), 'local socket'),
                       a.backend_start
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE {IMPORT_LOCK_HELD}""")
            holder = cur.fetchone()
        who = ""
        if holder:
            who = f" (pid {holder[0]}, {holder[1] or 'unnamed client'} from {holder[2]}, started {holder[3]:%Y-%m-%d %H:%M:%S})"
        raise RefusedError(f"another syn2mas import is already running against this MAS database{who}")

    def unlock(self) -> None:
        if self.locked:
            try:
                self.conn.rollback()
                self.conn.autocommit = True
                with self.conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
            except Exception:  # the connection may be gone; the server releases the lock then
                pass
            self.locked = False

    def add_provisional_providers(self, ids) -> None:
        """Rows standing in for upstream providers a dry run's rolled-back transaction needs: every
        column that has no default and may not be null gets a placeholder of its type."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = 'upstream_oauth_providers' "
                        "AND is_nullable = 'NO' AND column_default IS NULL "
                        "AND column_name <> 'upstream_oauth_provider_id' ORDER BY ordinal_position")
            required = cur.fetchall()
            placeholders = {"uuid": "gen_random_uuid()", "jsonb": "'{}'::jsonb", "json": "'{}'::json",
                            "boolean": "false", "integer": "0", "bigint": "0", "smallint": "0",
                            "timestamp with time zone": "now()", "timestamp without time zone": "now()"}
            columns = ", ".join(["upstream_oauth_provider_id"] + [name for name, _type in required])
            values = ", ".join(["%s::uuid"] + [placeholders.get(data_type, "'syn2mas dry run'")
                                               for _name, data_type in required])
            for provider_id in ids:
                cur.execute(f"INSERT INTO upstream_oauth_providers ({columns}) VALUES ({values})", (str(provider_id),))

    def check_privileges(self) -> None:
        """The import drops and rebuilds constraints of the written tables and of the tables pointing
        at them, which only their owner may do: a role that does not own them is named at once."""
        with self.conn.cursor() as cur:
            cur.execute("""
                SELECT current_user, array_agg(c.relname::text ORDER BY c.relname)
                FROM pg_class c
                WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid)
                  AND (c.relname = ANY(%(t)s) OR c.oid IN (
                        SELECT conrelid FROM pg_constraint WHERE contype = 'f'
                        AND confrelid IN (SELECT to_regclass(x) FROM unnest(%(t)s::text[]) x)))
                  AND NOT pg_has_role(current_user, c.relowner, 'USAGE')""", {"t": list(WRITTEN_TABLES)})
            user, not_owned = cur.fetchone()
        if not_owned:
            raise PrivilegeError(
                f"MAS's database role {user!r} does not own {', '.join(not_owned)}: the import drops and rebuilds "
                "their constraints and indexes, which only their owner may do. Run the import as the role MAS "
                "itself uses (the one `mas-cli database migrate` created the tables with)"
            )

    # -- the transaction ------------------------------------------------------------------------

    def begin(self, maintenance_work_mem: str, lock_wait_seconds: float = 60) -> None:
        self.conn.autocommit = False

        def settings(cur):
            cur.execute("SET LOCAL maintenance_work_mem = %s", (maintenance_work_mem,))
            cur.execute("SET LOCAL client_encoding = 'UTF8'")

        try:
            lock_tables(self.conn, settings, f"LOCK TABLE {', '.join(WRITTEN_TABLES)} IN ACCESS EXCLUSIVE MODE",
                        WRITTEN_TABLES, lock_wait_seconds, _mas_lock_refusal)
        except PrivilegeError as exc:
            raise PrivilegeError(f"MAS's database role may not lock MAS's tables ({exc}): run the import as "
                                 "the role MAS itself uses") from None

    def drop_constraints_and_indexes(self) -> None:
        """Saves, then drops, every PK/UNIQUE/FK on or pointing at the written tables and their indexes."""
        tables = list(WRITTEN_TABLES)
        with self.conn.cursor() as cur:
            cur.execute("""
                SELECT con.conrelid::regclass::text, con.conname, con.contype, pg_get_constraintdef(con.oid)
                FROM pg_constraint con
                WHERE con.contype IN ('p', 'u', 'f')
                  AND (con.conrelid = ANY(%(t)s::regclass[])
                       OR (con.contype = 'f' AND con.confrelid = ANY(%(t)s::regclass[])))
                ORDER BY con.contype = 'f' DESC, con.conrelid::regclass::text, con.conname""", {"t": tables})
            self.saved_constraints = cur.fetchall()
            cur.execute("""
                SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indrelid::regclass::text
                FROM pg_index i
                WHERE i.indrelid = ANY(%(t)s::regclass[])
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                  WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                                    AND c.contype IN ('p', 'u', 'x'))
                ORDER BY 1""", {"t": tables})
            self.saved_indexes = cur.fetchall()
            # Foreign keys first (they depend on the unique indexes), then PK/UNIQUE, then indexes.
            for table, name, _contype, _definition in self.saved_constraints:
                cur.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote_ident(name)}")
            for name, _definition, _table in self.saved_indexes:
                cur.execute(f"DROP INDEX {name}")

    def copy_into(self, table: str, columns, pipe: RowPipe) -> int:
        with self.conn.cursor() as cur:
            cols = ", ".join(quote_ident(c) for c in columns)
            cur.copy_expert(f"COPY {quote_ident(table)} ({cols}) FROM STDIN", pipe, size=RowPipe.CHUNK)
            return cur.rowcount

    def rebuild(self, on_step=None) -> dict:
        """Recreates the saved indexes, then PK/UNIQUE, then FKs; returns seconds per object."""
        timings = {}
        steps = list(self.saved_indexes)
        ordered = sorted(self.saved_constraints, key=lambda c: c[2] == "f")
        steps += [(name, f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(name)} {definition}", table)
                  for table, name, _contype, definition in ordered]
        with self.conn.cursor() as cur:
            for index, (name, statement, table) in enumerate(steps):
                if on_step:
                    on_step(name, index, len(steps))
                started = time.monotonic()
                try:
                    cur.execute(statement)
                except Exception as exc:
                    raise self._rebuild_error(name, table, exc) from None
                timings[name] = time.monotonic() - started
        return timings

    def _rebuild_error(self, name: str, table: str | None, exc: Exception) -> Exception:
        if connection_lost(self.conn, exc):
            return ConnectionLostError(
                f"lost the connection to MAS's database while rebuilding {name}: {first_line(exc)}. "
                "Nothing was written to MAS"
            )
        diag = getattr(exc, "diag", None)
        detail = getattr(diag, "message_detail", None) or ""
        table = table or getattr(diag, "table_name", None) or ""
        if table.strip('"') in SECRET_TABLES:
            detail = "the values are secrets and not shown"
        where = f"{name}{' on ' + table if table else ''}"
        code = getattr(exc, "pgcode", None) or ""
        if code.startswith("23"):  # integrity constraint violation: the data, not the database
            return DataError(f"the imported rows break MAS's constraint {where}: {first_line(exc)}"
                             f"{' (' + detail + ')' if detail else ''}. Nothing was written to MAS")
        # Anything else is the database's (out of disk, a timeout...), not the rows'.
        return DatabaseError(f"rebuilding MAS's {where} failed: {first_line(exc)}. Nothing was written to MAS")

    def set_marker(self, payload: dict) -> None:
        with self.conn.cursor() as cur:
            payload = dict(payload, digest=marker_digest(payload))
            cur.execute("COMMENT ON TABLE users IS %s", (MARKER_PREFIX + json.dumps(payload),))

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:
            pass


class StatusRowPipe(RowPipe):
    """A RowPipe for rows whose last column is their status (see stages.Stage.select):
    rows with no status go to MAS without that column; repaired ones too, and are counted;
    skipped ones stay behind, counted per reason with the first and last example."""

    _MIGRATED = b"\t\\N\n"  # the row ends with a NULL status

    def __init__(self, on_rows=None):
        super().__init__(on_rows=on_rows)
        self.repaired = 0  # rows repaired by the stage's `fixed` rule
        self._skipped: dict = {}  # reason -> [count, first example, last example], as COPY text
        self._clamped: dict = {}  # label -> [count, first example, last example], as COPY text

    def write(self, data: bytes) -> None:
        if data.endswith(self._MIGRATED):
            self._buffer.append(data[:-4])
        else:
            cut = data.rfind(b"\t")
            status = data[cut + 1:-1]
            if not status.startswith(REPAIRED):
                self._skip(status, self._skipped)
                return
            if status == REPAIRED:
                self.repaired += 1
            else:
                self._skip(status[len(REPAIRED):], self._clamped)
            self._buffer.append(data[:cut])
        self._buffered += len(data)
        if self._buffered >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._buffer.append(b"")
            self._put(b"\n".join(self._buffer))
            self._buffer, self._buffered = [], 0

    @staticmethod
    def _skip(status: bytes, counts: dict) -> None:
        # Kept as COPY text bytes (cheap to compare); decoded once, for the report.
        reason, _sep, example = status.partition(SEPARATOR)
        entry = counts.get(reason)
        if entry is None:
            counts[reason] = [1, example, example]
        else:
            entry[0] += 1
            if example < entry[1]:
                entry[1] = example
            elif example > entry[2]:
                entry[2] = example

    @property
    def skipped(self) -> dict:
        """reason -> [count, first example, last example], as text."""
        return self._as_text(self._skipped)

    @property
    def clamped(self) -> dict:
        """label -> [count, first example, last example] of values replaced, as text."""
        return self._as_text(self._clamped)

    @staticmethod
    def _as_text(counts: dict) -> dict:
        return {copy_unescape(reason.decode("utf-8")): [count, copy_unescape(first.decode("utf-8")),
                                                        copy_unescape(last.decode("utf-8"))]
                for reason, (count, first, last) in counts.items()}


REPAIRED = STATUS_REPAIRED.encode()
SEPARATOR = STATUS_SEPARATOR.encode()
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def copy_unescape(text: str) -> str:
    """A field of COPY's text format as the value it stands for."""
    return _COPY_ESCAPE_RE.sub(lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), text)


def run_pipe(read_into, write_from, on_rows=None, pipe=None) -> tuple:
    """Runs read_into(pipe) in a thread and write_from(pipe) here; returns (write result, pipe)."""
    pipe = pipe or RowPipe(on_rows=on_rows)

    def produce():
        try:
            read_into(pipe)
        except BaseException as exc:  # handed to the consumer, which raises it
            pipe.finish(exc)
        else:
            pipe.finish()

    thread = threading.Thread(target=produce, name="synapse-reader", daemon=True)
    thread.start()
    try:
        result = write_from(pipe)
    except BaseException:
        pipe.close()
        thread.join(timeout=30)
        if pipe.error is not None and not isinstance(pipe.error, StreamClosed):
            raise SynapseReadError(first_line(pipe.error)) from None
        raise
    thread.join()
    if pipe.error is not None:
        raise SynapseReadError(first_line(pipe.error))
    return result, pipe
