# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL plumbing shared by the reader, the writer and the checks: connect, describe, redact."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .errors import DatabaseError

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
MASK = "********"
# A password written out in a URI (scheme://user:PASSWORD@...) or as a keyword (password=..., sslpassword=...).
_URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)


def database_conninfo(config, override_uri: str | None) -> dict:
    """Where a database is: an explicit URI (for unusual setups) wins, and then the config file
    (a SynapseConfig or MasConfig) is not even read for it."""
    if override_uri:
        return {"dsn": override_uri}
    return config.database_conninfo() if config is not None else {}


def parsed(conninfo: dict) -> dict:
    """The effective libpq keywords: a `dsn` (URI or key=value string) merged with the others."""
    result = {}
    if conninfo.get("dsn"):
        try:
            result.update(psycopg2.extensions.parse_dsn(conninfo["dsn"]))
        except psycopg2.ProgrammingError as exc:
            # libpq quotes the URI it could not parse: its password must not reach the message.
            raise DatabaseError(f"invalid database URI: {redact_passwords(str(exc).strip())}") from None
    result.update({k: v for k, v in conninfo.items() if k != "dsn"})
    return result


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
    return " ".join(parts)


def secrets_of(conninfo: dict) -> list:
    """Secret values in a conninfo, for scrubbing them out of any error text."""
    params = parsed(conninfo)
    return [str(params[k]) for k in SECRET_KEYS if params.get(k)]


def redact(text: str, secrets) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text


def redact_passwords(text: str) -> str:
    """Masks every password written out in a database URI or keyword string within `text`: for
    messages that may quote a connection string whose secrets are unknown (it did not even parse)."""
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def connect(conninfo: dict, application_name: str, what: str):
    """A psycopg2 connection (UTC, ISO dates) or a DatabaseError naming `what` and where."""
    if psycopg2 is None:
        raise DatabaseError("psycopg2 is required to connect to PostgreSQL")
    params = parsed(conninfo)
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", "30")
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                        secrets_of(conninfo))
        raise DatabaseError(f"cannot connect to the {what} database ({describe(conninfo)}): {detail}") from None
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'")
    conn.commit()
    return conn


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def other_clients(conn) -> list:
    """The client sessions on the connected database other than this one."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT pid, COALESCE(application_name, ''), COALESCE(usename::text, ''),
                   COALESCE(host(client_addr), ''), COALESCE(state, '')
            FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND backend_type = 'client backend'
            ORDER BY pid""")
        rows = cur.fetchall()
    conn.rollback()
    return [Client(*row) for row in rows]
