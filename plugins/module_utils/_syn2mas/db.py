# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL plumbing shared by the reader, the writer and the checks: connect, describe, redact."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

from .errors import DatabaseError, PrivilegeError, RefusedError, redact, remember_secret

try:
    import psycopg2
    import psycopg2.extensions

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by the adapters with missing_required_lib
    import traceback

    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()

SECRET_KEYS = ("password", "sslpassword")


class InvalidUriError(DatabaseError):
    """A connection URI or string libpq cannot parse (its text is never quoted)."""


def database_conninfo(config, override_uri: str | None, override_name: str = "") -> dict:
    """Where a database is: an explicit URI (for unusual setups) wins, and then the config file
    (a SynapseConfig or MasConfig) is not even read for it. The result is checked to parse; an
    error names where the URI came from (`override_name`, e.g. --masDatabaseUri, or the config key)."""
    if override_uri:
        conninfo, source = {"dsn": override_uri}, override_name or "the database URI given"
    else:
        if config is None:
            return {}
        conninfo = config.database_conninfo()
        source = config.where("database")
    try:
        parsed(conninfo)
    except InvalidUriError as exc:
        raise InvalidUriError(f"{source}: {exc}") from None
    except DatabaseError:  # no psycopg2: connect() reports it
        pass
    return conninfo


def _uri_password(dsn: str) -> str | None:
    """The password part of a URI that may not even parse: between `user:` and the last `@`."""
    match = re.match(r"^\s*[a-z][a-z0-9+.-]*://([^/?#]*)@", dsn, re.IGNORECASE | re.DOTALL)
    if not match:
        # No `@` in the authority: libpq may still read one from a malformed URI's remainder.
        match = re.match(r"^\s*[a-z][a-z0-9+.-]*://(.*)@", dsn, re.IGNORECASE | re.DOTALL)
    if not match:
        keyword = re.search(r"\b(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn, re.IGNORECASE)
        return keyword.group(1).strip("'") if keyword else None
    if ":" not in match.group(1):
        return None
    return match.group(1).split(":", 1)[1]


def parsed(conninfo: dict) -> dict:
    """The effective libpq keywords: a `dsn` (URI or key=value string) merged with the others."""
    result = {}
    for key in SECRET_KEYS:
        remember_secret(conninfo.get(key))
    dsn = conninfo.get("dsn")
    if dsn:
        password = _uri_password(dsn)
        remember_secret(password)
        # An unencoded `@` in the password: libpq splits at the first one, and the password's
        # remainder becomes the host, which messages show. Each part is a secret then.
        for part in (password or "").split("@")[1:]:
            remember_secret(part)
        try:
            result.update(psycopg2.extensions.parse_dsn(dsn))
        except psycopg2.ProgrammingError as exc:
            # libpq quotes the string it could not parse: only its reason is kept, never the string.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparsable"
            reason = reason.replace(dsn, "<the URI>")
            reason = re.sub(r'\s+in (?:URI|connection info string)?:?\s*".*$', "", reason)
            raise InvalidUriError(f"invalid database URI: {reason.replace('invalid dsn: ', '')}") from None
        for key in SECRET_KEYS:
            remember_secret(result.get(key))
    keywords = {k: v for k, v in conninfo.items() if k != "dsn"}
    if keywords and psycopg2 is not None:
        try:  # an unknown keyword (a typo in the config) named here, not as a failed connection
            psycopg2.extensions.make_dsn(**keywords)
        except psycopg2.ProgrammingError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparsable"
            raise InvalidUriError(f"invalid connection settings: {reason.replace('invalid dsn: ', '')}") from None
    result.update(keywords)
    return result


def same_database(conn, other) -> bool:
    """Whether `other` is connected to the very database that `conn` is (found by conn's session)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        pid, started = cur.fetchone()
    with other.cursor() as cur:
        # backend_start is hidden from a role without rights on conn's session: then the pid decides.
        cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND datname = current_database() "
                    "AND (backend_start = %s OR backend_start IS NULL)", (pid, started))
        return cur.fetchone() is not None


def describe(conninfo: dict) -> str:
    """A one-line description for messages, never containing a password."""
    params = parsed(conninfo)
    host = params.get("host") or "(libpq default host)"
    port = params.get("port") or "5432"
    parts = [f"host={host}", f"port={port}"]
    if params.get("dbname"):
        parts.append(f"dbname={params['dbname']}")
    if params.get("user"):
        parts.append(f"user={params['user']}")
    # A password with an unencoded `@` in a URI: libpq reads its remainder as the host (parsed()
    # remembered each part as a secret).
    return redact(" ".join(parts))


def secrets_of(conninfo: dict) -> list:
    """Secret values in a conninfo, for scrubbing them out of any error text."""
    params = parsed(conninfo)
    return [str(params[k]) for k in SECRET_KEYS if params.get(k)]


# Session settings of a run of our own, whatever the database role's defaults (some DBAs set
# idle_in_transaction_session_timeout or statement_timeout on every role): the import keeps its
# snapshot open between stages and verify reads for as long as the data takes, so neither may be
# ended by a timeout meant for forgotten shells. Lock waits stay bounded (`lock_timeout`, which
# the caller sets; the import's LOCK TABLE waits are bounded by lock_tables itself).
OWN_SESSION = {"statement_timeout": "0", "idle_in_transaction_session_timeout": "0"}


def own_session(conn, lock_timeout: str | None = None) -> None:
    """Sets OWN_SESSION (and idle_session_timeout on PostgreSQL 14 and newer) for the session,
    and `lock_timeout` when given ('10s'), overriding the role's and the database's defaults."""
    settings = dict(OWN_SESSION)
    if conn.server_version >= 140000:
        settings["idle_session_timeout"] = "0"
    if lock_timeout is not None:
        settings["lock_timeout"] = lock_timeout
    with conn.cursor() as cur:
        for name, value in settings.items():
            cur.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.commit()


def connect(conninfo: dict, application_name: str, what: str, lock_timeout: str | None = None):
    """A psycopg2 connection (UTC, ISO dates, the session settings of a run of our own: see
    own_session) or a DatabaseError naming `what` and where."""
    if psycopg2 is None:
        raise DatabaseError("psycopg2 is required to connect to PostgreSQL")
    params = parsed(conninfo)
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", "30")
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        # parsed() remembered the passwords: the error's own redaction masks them wherever quoted.
        raise DatabaseError(f"cannot connect to the {what} database ({describe(conninfo)}): {first_line(exc)}") \
            from None
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'")
    conn.commit()
    own_session(conn, lock_timeout)
    return conn


def first_line(exc: BaseException) -> str:
    """An exception's first line, redacted (a driver's message may quote a connection string)."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__


@dataclass
class Client:
    """Another session on a database: a running Synapse or MAS, a worker, an admin shell."""

    pid: int
    application_name: str
    user: str
    address: str
    state: str

    def __str__(self) -> str:
        name = self.application_name or "unnamed client"
        return f"{name} (pid {self.pid}, user {self.user}, from {self.address or 'local socket'})"

    def as_dict(self) -> dict:
        return asdict(self)


# "Another client" of the connected database, as every check of who else is connected reads it
# (pg_stat_activity aliased `a`): client sessions only, so autovacuum and WAL senders never count.
OTHER_CLIENTS = ("a.datname = current_database() AND a.pid <> pg_backend_pid() "
                 "AND a.backend_type = 'client backend'")


def other_clients(conn) -> list:
    """The client sessions on the connected database other than this one."""
    with conn.cursor() as cur:
        cur.execute(f"""
            SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(a.usename::text, ''),
                   COALESCE(host(a.client_addr), ''), COALESCE(a.state, '')
            FROM pg_stat_activity a WHERE {OTHER_CLIENTS} ORDER BY a.pid""")
        rows = cur.fetchall()
    conn.rollback()
    return [Client(*row) for row in rows]


# SQLSTATEs of a connection that is gone: class 08 (connection exception) and the server
# shutting the session down (admin shutdown, crash shutdown, cannot connect now); an
# idle-in-transaction or idle-session timeout ends the session too.
_LOST_CODES = ("57P01", "57P02", "57P03", "25P03", "57P05")


def connection_lost(conn, exc: BaseException) -> bool:
    """Whether `exc` means that `conn` is gone (rather than a statement failing on a live one)."""
    if conn is not None and getattr(conn, "closed", 0):
        return True
    if psycopg2 is None or not isinstance(exc, psycopg2.Error):
        return False
    code = getattr(exc, "pgcode", None) or ""
    if code.startswith("08") or code in _LOST_CODES:
        return True
    # libpq's own "server closed the connection unexpectedly" carries no SQLSTATE.
    return isinstance(exc, (psycopg2.InterfaceError, psycopg2.OperationalError)) and not code


@dataclass
class LockHolder:
    """A session holding a lock that conflicts with the import's (autovacuum, a client, MAS)."""

    pid: int
    backend_type: str
    application_name: str
    user: str
    address: str
    tables: str
    activity: str  # what an autovacuum worker is doing; never a client's query (it may hold secrets)

    @property
    def is_client(self) -> bool:
        return self.backend_type == "client backend"

    def __str__(self) -> str:
        if self.is_client:
            who = (f"{self.application_name or 'unnamed client'} (pid {self.pid}, user {self.user}, "
                   f"from {self.address or 'local socket'})")
        else:
            who = f"{self.backend_type} (pid {self.pid}{', ' + self.activity if self.activity else ''})"
        return f"{who} on {self.tables}"


def lock_holders(conn, tables) -> list:
    """The other sessions holding granted locks on `tables` (names), with who they are."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT a.pid, COALESCE(a.backend_type, ''), COALESCE(a.application_name, ''),
                   COALESCE(a.usename::text, ''), COALESCE(host(a.client_addr), ''),
                   string_agg(DISTINCT c.relname, ', ' ORDER BY c.relname),
                   CASE WHEN a.backend_type LIKE 'autovacuum%%' THEN left(COALESCE(a.query, ''), 120) ELSE '' END
            FROM pg_locks l
            JOIN pg_class c ON c.oid = l.relation
            JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.granted AND l.pid <> pg_backend_pid() AND l.database = (
                    SELECT oid FROM pg_database WHERE datname = current_database())
              AND c.relname = ANY(%s) AND pg_table_is_visible(c.oid)
            GROUP BY 1, 2, 3, 4, 5, 7
            ORDER BY 1""", (list(tables),))
        return [LockHolder(*row) for row in cur.fetchall()]


def lock_refusal(holders, waited: float, by_client: str, by_other: str) -> RefusedError:
    """The refusal once a lock wait ran out: `by_client` when a client holds the lock (someone must
    stop it), else `by_other` (autovacuum: it ends by itself); both formatted with {holders} (who,
    named) and {waited} (seconds)."""
    listing = "; ".join(str(h) for h in holders) or "a session that has since let go"
    template = by_client if any(h.is_client for h in holders) else by_other
    return RefusedError(template.format(holders=listing, waited=f"{waited:.0f}"))


def lock_tables(conn, begin, statement: str, tables, wait_seconds: float, refused):
    """Runs begin(cur) then `statement` (a LOCK TABLE) as the transaction's first statements,
    waiting up to `wait_seconds` for the sessions holding conflicting locks (autovacuum cancels
    itself for a waiting lock after deadlock_timeout; other holders may finish).

    `refused(holders, waited_seconds)` builds the error raised when the wait runs out. A missing
    privilege raises a PrivilegeError at once."""
    # The session's own lock_timeout comes back after the lock (DEFAULT would be the role's). Read
    # in a transaction of its own: a query in the locking one would take its snapshot before the lock.
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('lock_timeout')")
        session_lock_timeout = cur.fetchone()[0]
    conn.rollback()
    deadline = time.monotonic() + max(wait_seconds, 0)
    started = time.monotonic()
    while True:
        # Each try waits a few seconds: longer than deadlock_timeout (1s by default), after
        # which a waiting lock makes autovacuum give way.
        attempt_ms = int(max(min(5.0, deadline - time.monotonic()), 0.05) * 1000)
        with conn.cursor() as cur:
            begin(cur)
            cur.execute(f"SET LOCAL lock_timeout = {attempt_ms}")
            try:
                cur.execute(statement)
            except psycopg2.Error as exc:
                code = getattr(exc, "pgcode", None) or ""
                conn.rollback()
                if code == "42501":  # insufficient_privilege
                    raise PrivilegeError(f"{first_line(exc)}") from None
                if code != "55P03":  # lock_not_available
                    raise
            else:
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (session_lock_timeout,))
                return
        holders = lock_holders(conn, tables)
        conn.rollback()
        if time.monotonic() >= deadline:
            raise refused(holders, time.monotonic() - started)
        time.sleep(0.2)
