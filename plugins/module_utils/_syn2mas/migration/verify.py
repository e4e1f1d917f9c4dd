# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proof after the import: MAS holds exactly what the import had to write from Synapse.

The expected rows are recomputed from Synapse with the import's own stages (stages.STAGES)
and the parameters the import recorded in its marker (the ids' seed, its clock, the provider
mapping), so every MAS row, ids included, can be recomputed. Each side digests its rows in
PostgreSQL (an md5 of the row as text, the values cast to MAS's column types) and sums them per
bucket of keys; buckets that differ are then read row by row from both sides, sorted by key, and
merge-compared here to name what is missing, different or unexpected. Memory stays flat whatever the
size. Both databases are read in READ ONLY transactions: nothing is written to either.

Every column the import sets is compared, those it leaves NULL included, column by column: a
column of the import's own must hold what the import wrote; a column MAS changes in its normal work
(MAS_WORK: a session used or logged out, a user locked, a token refreshed) may differ only where the
change is dated after the import and is what MAS does, and never excuses another column. A row
missing or different in MAS whose Synapse source is newer than the import (a login after it) is
"Synapse changed since the import" when only the columns that newer source explains differ; so is
any difference on a MAS row still as the import wrote it (its xmin is the import's transaction). MAS
rows created after the import (not with an id of the import's shape) are named and classified: MAS's
own work (a new login, a new user) or not (an admin flag on a new user, a token no refresh issued).
The constraints and indexes the import dropped and rebuilt must exist and be valid.

While Synapse's tables are as the import read them (their fingerprint), MAS's totals are compared first with
the digests the import took of the rows it wrote (`written_totals`, in its transaction) and Synapse is read
only for an entity whose totals differ. That Synapse's rows are the rows written is the dry run's proof
(`expected_totals` against `written_totals` in one transaction).
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field

from ..config import ConfigSources, load_mas_config, load_synapse_config
from ..db import connect, database_conninfo, describe, first_line, lock_holders, lock_refusal, psycopg2
from ..errors import DatabaseError, RefusedError, Syn2masError
from .mas_schema import WRITTEN_TABLES, detect as detect_mas_schema
from .mas_writer import MARKER_PREFIX, marker_digest, read_marker
from .stages import STAGES, stage_params
from .synapse_reader import SYNAPSE_TABLES, SynapseReader

APPLICATION_NAME = "syn2mas verify"
EXIT_MISMATCH = 12
EXAMPLES = 3
FETCH_ROWS = 20000

# Per stage: SQL over the stage's own source saying that the Synapse row is newer than the import
# (%(imported_ms)s), or that it hangs on a token issued after it (ids above the recorded high water).
NEWER_USER = "COALESCE(u.creation_ts, 0) * 1000 > %(imported_ms)s"
NEWER_TOKEN = "(COALESCE(at.last_validated, 0) > %(imported_ms)s OR at.id > %(high_access_token)s)"
CHANGED_SINCE_IMPORT = {
    "users": NEWER_USER,
    "passwords": NEWER_USER,
    "emails": f"(t.added_at > %(imported_ms)s OR COALESCE(t.validated_at, 0) > %(imported_ms)s OR {NEWER_USER})",
    "other_threepids": f"(t.added_at > %(imported_ms)s OR {NEWER_USER})",
    "upstream_links": NEWER_USER,
    # The devices of tokens above the high water (few) come as a list: a subquery here would keep
    # PostgreSQL from spreading the stage over parallel workers.
    "device_sessions": ("(COALESCE(d.last_seen, 0) > %(imported_ms)s"
                        " OR d.user_id || chr(31) || d.device_id = ANY(%(new_token_devices)s::text[]))"),
    "deviceless_sessions": NEWER_TOKEN,
    "access_tokens": NEWER_TOKEN,
    "refresh_tokens": f"(rt.id > %(high_refresh_token)s OR {NEWER_TOKEN})",
}

# Rows of a MAS table that belong to a stage (compat_sessions holds two).
MAS_ROWS_OF_STAGE = {
    "device_sessions": "device_id IS NOT NULL",
    "deviceless_sessions": "device_id IS NULL",
}

# Per table, the columns MAS itself changes in its normal work, each with the condition (over the
# MAS row `m`, {t} the import's time) under which a value other than the import's is MAS's doing, as
# MAS's own code writes them: an admin locks (now) or unlocks (NULL) a user, deactivates or
# reactivates one; a session's activity is recorded (its time and address together); a logout
# finishes a session; a compat refresh expires the old access token and consumes the old refresh
# token, issuing their successors in the same session. Every other column is the import's alone.
MAS_WORK = {
    "users": {
        "locked_at": "(m.locked_at IS NULL OR m.locked_at > {t})",
        "deactivated_at": "(m.deactivated_at IS NULL OR m.deactivated_at > {t})",
    },
    "compat_sessions": {
        "last_active_at": "m.last_active_at > {t}",
        "last_active_ip": "m.last_active_at > {t}",
        "finished_at": "m.finished_at > {t}",
    },
    "compat_access_tokens": {
        "expires_at": ("(m.expires_at > {t} AND EXISTS (SELECT 1 FROM compat_access_tokens n"
                       " WHERE n.compat_session_id = m.compat_session_id AND n.created_at > {t}"
                       " AND n.compat_access_token_id <> m.compat_access_token_id))"),
    },
    "compat_refresh_tokens": {
        "consumed_at": ("(m.consumed_at > {t} AND EXISTS (SELECT 1 FROM compat_refresh_tokens n"
                        " WHERE n.compat_session_id = m.compat_session_id AND n.created_at > {t}"
                        " AND n.compat_refresh_token_id <> m.compat_refresh_token_id))"),
    },
}

# Per stage, the columns a Synapse row newer than the import explains (a device used, a token
# issued or an email validated since): a row differing elsewhere is damage, whatever Synapse did.
SYNAPSE_DATED = {
    "device_sessions": ("created_at", "last_active_at", "last_active_ip", "user_agent", "human_name"),
    "emails": ("confirmed_at",),
    "access_tokens": ("created_at", "expires_at"),
}

# Rows MAS deletes in its normal work: a user's emails and other third-party ids when it
# deactivates them, an email its user removes (MAS then queues the user's provisioning). An
# imported row missing for such a user is MAS's doing, not damage.
REMOVED_BY_MAS = ("user_emails", "user_unsupported_third_party_ids")

# Rows MAS adds after the import that its normal work cannot have made: SQL over the added row `m`
# (and MAS_LABELS' joins), the reason, or NULL when MAS makes such rows ({t}: the import's time).
ADDED_INCONSISTENT = {
    "users": "CASE WHEN m.can_request_admin THEN 'admin flag on a user created after the import' END",
    "user_unsupported_third_party_ids": "'MAS adds no third-party ids other than emails'",
    "compat_access_tokens": ("CASE WHEN s.created_at <= {t} AND NOT EXISTS (SELECT 1 FROM compat_refresh_tokens r"
                             " WHERE r.compat_access_token_id = m.compat_access_token_id)"
                             " THEN 'access token on an imported session that no refresh issued' END"),
    "compat_refresh_tokens": ("CASE WHEN NOT EXISTS (SELECT 1 FROM compat_access_tokens a"
                              " WHERE a.compat_access_token_id = m.compat_access_token_id AND a.created_at > {t})"
                              " THEN 'refresh token of an access token MAS did not issue' END"),
}

# How a MAS row is named in a report when only MAS has it: its user, and what tells it apart;
# never a token or a hash.
MAS_LABELS = {
    "users": ("", "m.username"),
    "user_passwords": ("JOIN users u ON u.user_id = m.user_id", "u.username || ' password'"),
    "user_emails": ("JOIN users u ON u.user_id = m.user_id", "u.username || ' ' || m.email"),
    "user_unsupported_third_party_ids": ("JOIN users u ON u.user_id = m.user_id",
                                         "u.username || ' ' || m.medium || ':' || m.address"),
    "upstream_oauth_links": ("LEFT JOIN users u ON u.user_id = m.user_id",
                             "COALESCE(u.username, '(no user)') || ' link ' || m.upstream_oauth_provider_id"),
    "compat_sessions": ("LEFT JOIN users u ON u.user_id = m.user_id",
                        "COALESCE(u.username, '(no user)') || ' device ' || COALESCE(m.device_id, '(none)')"),
    "compat_access_tokens": ("LEFT JOIN compat_sessions s ON s.compat_session_id = m.compat_session_id "
                             "LEFT JOIN users u ON u.user_id = s.user_id",
                             "COALESCE(u.username, '(no user)') || ' access token of device '"
                             " || COALESCE(s.device_id, '(none)')"),
    "compat_refresh_tokens": ("LEFT JOIN compat_sessions s ON s.compat_session_id = m.compat_session_id "
                              "LEFT JOIN users u ON u.user_id = s.user_id",
                              "COALESCE(u.username, '(no user)') || ' refresh token of device '"
                              " || COALESCE(s.device_id, '(none)')"),
}

_ID_TAG = re.compile(r"\|\| '([0-9a-f]{4})'\)::uuid$")


@dataclass
class VerifyOptions(ConfigSources):
    examples: int = EXAMPLES
    # How long any one read waits for a lock held by another session (a VACUUM FULL, a running
    # import, an admin's LOCK TABLE) before verify gives up naming it: a bounded wait on each side.
    lock_wait_seconds: float = 10
    # Read Synapse's side again even while Synapse is as the import read it, instead of comparing MAS with
    # the digests the import took of what it wrote: the proof against Synapse itself, for an audit.
    recompute: bool = False


@dataclass
class EntityReport:
    """One stage's rows: what Synapse says MAS must hold, and what MAS holds."""

    name: str
    table: str
    imported: int | None = None  # what the import's marker says it wrote
    expected: int = 0
    found: int = 0  # expected rows MAS holds, equal
    missing: int = 0
    different: int = 0
    unexpected: int = 0
    changed_in_synapse: int = 0  # missing or different because Synapse changed after the import
    added_in_mas: int = 0  # rows MAS made itself after the import
    changed_in_mas: int = 0  # rows MAS itself changed after the import (a session used, a user locked)
    skipped: dict = field(default_factory=dict)  # reason -> count, as the import skips them
    examples: dict = field(default_factory=dict)  # kind -> [names]
    seconds: float = 0.0
    columns: list = field(default_factory=list)  # the compared columns, in order
    remembered: bool = False  # whether the import recorded its transaction id (its rows' version)
    # Where Synapse's side came from: "import" (the totals the import computed from its own snapshot, valid
    # as Synapse's tables are unchanged since) or "synapse" (recomputed from Synapse now).
    expected_from: str = "synapse"

    def count_loss(self, kind: str, expected_row, limit: int) -> None:
        """An expected row (key, digest, example, changed) that MAS lacks or holds otherwise: `kind`
        (missing, different), unless its Synapse source changed after the import; named among the
        first `limit` examples of its kind."""
        kind = "changed_in_synapse" if expected_row[3] else kind
        setattr(self, kind, getattr(self, kind) + 1)
        names = self.examples.setdefault(kind, [])
        if len(names) < limit and expected_row[2] is not None:
            names.append(expected_row[2])

    def add_name(self, kind: str, label, limit: int) -> None:
        names = self.examples.setdefault(kind, [])
        if len(names) < limit and label is not None:
            names.append(label)

    def as_dict(self) -> dict:
        return {"entity": self.name, "table": self.table, "imported": self.imported, "expected": self.expected,
                "found": self.found, "missing": self.missing, "different": self.different,
                "unexpected": self.unexpected, "changed_in_synapse": self.changed_in_synapse,
                "added_in_mas": self.added_in_mas, "changed_in_mas": self.changed_in_mas, "skipped": self.skipped,
                "examples": {k: v for k, v in self.examples.items() if v}, "columns": self.columns,
                "remembered": self.remembered, "expected_from": self.expected_from,
                "seconds": round(self.seconds, 3)}


def replay_record(reader: SynapseReader, params: dict, links: dict) -> dict:
    """What the import records in its marker for verify: the ids' seed and clock, the provider
    mapping, and the highest token ids of its snapshot (tokens above them came later)."""
    with reader.cursor() as cur:
        cur.execute("SELECT (SELECT COALESCE(max(id), 0) FROM access_tokens),"
                    " (SELECT COALESCE(max(id), 0) FROM refresh_tokens)")
        high_access, high_refresh = cur.fetchone()
    return {"seed": params["seed"], "run_ms": params["run_ms"],
            "links": {name: str(link.provider_id) for name, link in links.items()},
            "high_water": {"access_tokens": int(high_access), "refresh_tokens": int(high_refresh)}}


def replay_params(server_name: str, replay: dict) -> dict:
    """The stages' query parameters exactly as the import had them, plus verify's own."""
    params = stage_params(server_name, seed=int(replay["seed"]), run_ms=int(replay["run_ms"]))
    links = replay.get("links") or {}
    params["map_providers"] = list(links)
    params["map_ids"] = list(links.values())
    high = replay.get("high_water") or {}
    params["imported_ms"] = int(replay["run_ms"])
    params["high_access_token"] = int(high.get("access_tokens", 2 ** 62))
    params["high_refresh_token"] = int(high.get("refresh_tokens", 2 ** 62))
    return params


def row_hash_kind(synapse_conn, mas_conn) -> str:
    """The row digest both sides can compute (see ROW_HASHES)."""
    return "hash_record" if min(synapse_conn.server_version, mas_conn.server_version) >= 140000 else "md5"


def stage_layouts(mas_conn, schema) -> dict:
    """stage name -> (compared columns, {column: SQL type}, key columns) of MAS's tables as verify reads
    them; the import reads them before it drops MAS's constraints (the key is the primary key's)."""
    layouts = {}
    for stage in STAGES:
        types, key = _mas_columns(mas_conn, stage.table)
        layouts[stage.name] = (list(schema.compared_columns(stage.table)), types, key)
    return layouts


def _layout_digest(columns: list, types: dict, key: list) -> str:
    """What a stage's digests depend on in MAS's schema: verify uses recorded totals only when equal."""
    text = json.dumps([columns, [types[c] for c in columns], key])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def expected_totals(synapse_conn, layouts: dict, replay: dict, server_name: str, row_hash: str) -> dict:
    """Synapse's side of verify in totals, computed by a dry run from its own snapshot (while MAS rebuilds its
    indexes): per stage, the rows MAS must hold (their number and the sum of their digests, the figures
    verify otherwise computes bucket by bucket from Synapse) and the rows skipped per reason. The dry run
    compares them with `written_totals` of the rows its transaction wrote."""
    params = dict(replay_params(server_name, replay), new_token_devices=[])
    stages = {}
    with synapse_conn.cursor() as cur:
        for stage in STAGES:
            columns, types, key = layouts[stage.name]
            cur.execute(expected_buckets_query(stage, columns, types, key, row_hash), params)
            rows, total, skipped = 0, 0, {}
            for group, count, digest_sum, _changed in cur.fetchall():
                if group.startswith("#"):
                    rows += count
                    total += int(digest_sum)
                else:
                    skipped[group] = count
            stages[stage.name] = {"rows": rows, "sum": str(total), "skipped": skipped,
                                  "layout": _layout_digest(columns, types, key)}
    return {"row_hash": row_hash, "stages": stages}


def written_totals(mas_conn, layouts: dict, replay: dict, server_name: str, row_hash: str, skipped: dict) -> dict:
    """What the import wrote, digested by the import in its own transaction before the commit: per stage,
    the rows it wrote (their number and the sum of their digests, as verify's pass over MAS sums them) and
    the rows it skipped per reason (`skipped`: {stage name: {reason: count}}). Verify compares MAS's totals
    with them while Synapse is as the import read it; the figures are expected_totals' (`expected_totals`),
    read from the rows written instead of recomputed from Synapse."""
    params = replay_params(server_name, replay)
    stages = {}
    with mas_conn.cursor() as cur:
        for stage in STAGES:
            columns, types, key = layouts[stage.name]
            cur.execute(found_buckets_query(stage, stage.table, columns, types, key, row_hash), params)
            rows, total = _found_totals(cur.fetchall())
            stages[stage.name] = {"rows": rows, "sum": str(total), "skipped": dict(skipped.get(stage.name) or {}),
                                  "layout": _layout_digest(columns, types, key)}
    return {"row_hash": row_hash, "stages": stages}


def totals_differences(expected: dict, written: dict) -> list:
    """The stages whose written rows are not Synapse's recomputed ones (number, digest sum or skips)."""
    differ = []
    for name, want in expected["stages"].items():
        got = written["stages"].get(name) or {}
        if (got.get("rows"), got.get("sum")) != (want["rows"], want["sum"]):
            differ.append(f"{name}: {got.get('rows')} rows written, {want['rows']} expected from Synapse"
                          + ("" if got.get("rows") != want["rows"] else " (the same number, other values)"))
        elif got.get("skipped") != want["skipped"]:
            differ.append(f"{name}: skipped {got.get('skipped')}, expected from Synapse {want['skipped']}")
    return differ


def _mas_columns(conn, table: str) -> tuple:
    """({column: SQL type}, [primary key columns in order]) of a MAS table."""
    with conn.cursor() as cur:
        cur.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped", (table,))
        types = dict(cur.fetchall())
        cur.execute("SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), "
                    "pg_attribute a WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
                    "AND a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n", (table,))
        key = [row[0] for row in cur.fetchall()]
    if not key:
        raise RefusedError(f"MAS's table {table} has no primary key: is this a MAS database?")
    return types, key


def _is_uuid(key: list, types: dict) -> bool:
    return len(key) == 1 and types[key[0]] == "uuid"


def _key_sql(key_exprs: list, types: list) -> str:
    """A sort key both sides order alike: a uuid as it is, else the columns as text joined by US."""
    if len(key_exprs) == 1 and types[0] == "uuid":
        return f"({key_exprs[0]})::uuid"
    return "(" + " || chr(31) || ".join(f"({e})::{t}::text" for e, t in zip(key_exprs, types)) + ') COLLATE "C"'


# Rows are compared in buckets first: per bucket (the first hex digits of the md5 of the row's key),
# a count and a sum of 60-bit row digests, computed by each database. Only the buckets that differ
# are then read row by row, sorted by key, and merge-compared to name what is missing, different or
# unexpected: a clean import moves a few thousand numbers per entity, not its rows.
BUCKET_DIGITS = 3
# A row's 64-bit digest: PostgreSQL 14 and newer hash the row's values as they are, with each type's
# own hash function (as hash partitioning does, so stable across releases); older ones hash the row
# as text, several times slower.
ROW_HASHES = {
    "hash_record": "hash_record_extended({row}, 0)",
    "md5": "('x' || substr(md5({row}::text), 1, 15))::bit(60)::bigint",
}


def _bucket(key: str, is_uuid: bool) -> str:
    """The bucket of a key. An id's text from its 15th character on is the hash part of the
    import's ids (and random in MAS's own ULIDs): no md5 needed for it."""
    if is_uuid:
        return f"substr(({key})::text, 15, {BUCKET_DIGITS})"
    return f"substr(md5(({key})::text), 1, {BUCKET_DIGITS})"


def _stage_exprs(stage, columns: list) -> dict:
    """The SQL of each compared column of a stage: a column the import leaves alone is NULL."""
    exprs = {**stage.columns, **stage.optional_columns}
    return {c: exprs.get(c, "NULL") for c in columns}


def _synapse_rows(stage, columns: list, types: dict, key: list) -> tuple:
    """SQL for a stage's row as MAS must hold it, its key and its bucket."""
    exprs = _stage_exprs(stage, columns)
    row = "ROW(" + ", ".join(f"({exprs[c]})::{types[c]}" for c in columns) + ")"
    key_sql = _key_sql([exprs[c] for c in key], [types[c] for c in key])
    return row, key_sql, _bucket(key_sql, _is_uuid(key, types))


def expected_buckets_query(stage, columns: list, types: dict, key: list, row_hash: str = "md5") -> str:
    """Per bucket of migrated rows ('#' and the bucket) and per skip reason: rows, digest sum, rows
    changed since the import. Each expression is used once, so the planner can spread the stage
    over parallel workers as it does for the import."""
    row, _key, bucket = _synapse_rows(stage, columns, types, key)
    changed = CHANGED_SINCE_IMPORT.get(stage.name, "false")
    return (f"SELECT s.g, count(*), sum(s.h)::text, count(*) FILTER (WHERE s.changed)\n"
            f"FROM (SELECT COALESCE({stage.skip_case()}, '#' || {bucket}) AS g,"
            f" {ROW_HASHES[row_hash].format(row=row)} AS h, ({changed}) AS changed\n{stage.source}) s\nGROUP BY 1")


def expected_query(stage, columns: list, types: dict, key: list) -> str:
    """The migrated rows of some buckets, sorted by key: key, the md5 of each column, example,
    changed since the import, and the row's user id (as text, NULL for tokens)."""
    exprs = _stage_exprs(stage, columns)
    _row, key_sql, bucket = _synapse_rows(stage, columns, types, key)
    hashes = "ARRAY[" + ", ".join(f"md5(({exprs[c]})::{types[c]}::text)" for c in columns) + "]::text[]"
    changed = CHANGED_SINCE_IMPORT.get(stage.name, "false")
    owner = f"({exprs['user_id']})::text" if "user_id" in exprs else "NULL::text"
    return (f"SELECT {key_sql}, {hashes}, ({stage.example})::text, ({changed}), {owner}\n{stage.source}\n"
            f"AND {stage.skip_case()} IS NULL AND {bucket} = ANY(%(buckets)s)\nORDER BY 1")


IMPORTED_AT = "to_timestamp(%(imported_ms)s / 1000.0)"


def _added_condition(stage, key: list) -> str:
    """SQL over a MAS row `m`: MAS made it after the import (a later creation time, and an id not of
    the import's shape)."""
    tag = _ID_TAG.search(stage.columns[key[0]].strip()) if len(key) == 1 else None
    own_id = f" AND right(m.{key[0]}::text, 4) <> '{tag.group(1)}'" if tag else ""
    return f"(m.created_at > {IMPORTED_AT}{own_id})"


def _mas_rows(stage, table: str, columns: list, types: dict, key: list, detail: bool = False) -> tuple:
    """The MAS rows of a stage (key, the row, whether MAS made it after the import and, with
    `detail`, the md5 of each column and whether each MAS_WORK column is as MAS's work leaves it),
    and the SQL of a row's bucket."""
    key_sql = _key_sql([f"m.{c}" for c in key], [types[c] for c in key])
    where = MAS_ROWS_OF_STAGE.get(stage.name, "true")
    if detail:
        work = MAS_WORK.get(table, {})
        hashes = "ARRAY[" + ", ".join(f"md5(m.{c}::text)" for c in columns) + "]::text[]"
        flags = ("ARRAY[" + ", ".join(f"COALESCE({work[c].format(t=IMPORTED_AT)}, false)"
                                      for c in columns if c in work) + "]::boolean[]")
        # The import's own row version (its transaction's id as the row's xmin): MAS never touched it.
        values = f"{hashes} AS r, {flags} AS work, (m.xmin::text::bigint = %(synapse_changed_xid)s) AS as_imported"
    else:
        values = "ROW(" + ", ".join(f"m.{c}" for c in columns) + ") AS r"
    rows = (f"SELECT {key_sql} AS k, {values}, {_added_condition(stage, key)} AS added"
            f" FROM {table} m WHERE {where}")
    return rows, _bucket("s.k", _is_uuid(key, types))


def found_buckets_query(stage, table: str, columns: list, types: dict, key: list, row_hash: str = "md5") -> str:
    """Per bucket of the import's MAS rows: rows and digest sum; per bucket, rows MAS added since."""
    rows, bucket = _mas_rows(stage, table, columns, types, key)
    return (f"SELECT {bucket}, count(*) FILTER (WHERE NOT s.added),"
            f" sum({ROW_HASHES[row_hash].format(row='s.r')}) FILTER (WHERE NOT s.added)::text,"
            f" count(*) FILTER (WHERE s.added)\nFROM ({rows}) s\nGROUP BY 1")


def found_query(stage, table: str, columns: list, types: dict, key: list) -> str:
    """The MAS rows of some buckets, sorted by key: key, the md5 of each column, added since the
    import, and per MAS_WORK column whether its value is MAS's work."""
    rows, bucket = _mas_rows(stage, table, columns, types, key, detail=True)
    return (f"SELECT s.k, s.r, s.added, s.work, s.as_imported\nFROM ({rows}) s\n"
            f"WHERE {bucket} = ANY(%(buckets)s)\nORDER BY 1")


def added_query(stage, table: str, key: list, limit: int) -> str:
    """The rows MAS added since the import, named: per class (NULL: MAS's normal work, else why
    not), how many, and the first `limit` names."""
    joins, label = MAS_LABELS[table]
    reason = ADDED_INCONSISTENT.get(table, "NULL").format(t=IMPORTED_AT)
    where = MAS_ROWS_OF_STAGE.get(stage.name, "true").replace("device_id", "m.device_id")
    return (f"SELECT s.reason, count(*), (array_agg(s.label ORDER BY s.label))[1:{int(limit)}]\n"
            f"FROM (SELECT ({label}) AS label, ({reason})::text AS reason FROM {table} m {joins}\n"
            f"WHERE {where} AND {_added_condition(stage, key)}) s\nGROUP BY 1 ORDER BY 1 NULLS FIRST")


class LockWaitExceeded(DatabaseError):
    """A read of verify's waited longer than its lock_timeout for a lock another session holds."""

    def __init__(self, conn):
        super().__init__("lock wait exceeded")
        self.conn = conn


def _read_failure(conn, exc: BaseException) -> Exception:
    if psycopg2 is not None and getattr(exc, "pgcode", None) == "55P03":  # lock_not_available
        return LockWaitExceeded(conn)
    return DatabaseError(f"reading failed: {first_line(exc)}")


def _fetch_all(conn, query: str, params: dict, holder: list) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            holder.append(cur.fetchall())
    except BaseException as exc:  # handed to the caller, which raises it
        holder.append(_read_failure(conn, exc))


def both(synapse_conn, synapse_query: str, mas_conn, mas_query: str, params: dict) -> tuple:
    """Runs one query on each database at once; returns both results."""
    results: tuple = ([], [])
    thread = threading.Thread(target=_fetch_all, args=(synapse_conn, synapse_query, params, results[0]), daemon=True)
    thread.start()
    _fetch_all(mas_conn, mas_query, params, results[1])
    thread.join()
    for holder in results:
        if isinstance(holder[0], BaseException):
            raise holder[0]
    return results[0][0], results[1][0]


def compare_buckets(report: EntityReport, expected_rows: list, found_rows: list) -> list:
    """Counts what the buckets prove (rows found, skips, rows added by MAS); returns the buckets
    that differ, to be compared row by row."""
    expected = {}
    for group, count, digest_sum, _changed in expected_rows:
        if group.startswith("#"):
            expected[group[1:]] = (count, digest_sum)
        else:
            report.skipped[group] = report.skipped.get(group, 0) + count
    found = {}
    for bucket, count, digest_sum, added in found_rows:
        report.added_in_mas += added
        if count:
            found[bucket] = (count, digest_sum)
    differing = []
    for bucket in sorted(set(expected) | set(found)):
        if expected.get(bucket) == found.get(bucket):
            report.expected += expected[bucket][0]
            report.found += expected[bucket][0]
        else:
            differing.append(bucket)
    return differing


class _Stream:
    """Rows of a named (server-side) cursor, fetched in a thread ahead of the merge, so both
    databases work at once; at most two batches are held."""

    def __init__(self, conn, name: str, query: str, params: dict):
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, args=(conn, name, query, params), daemon=True)
        self._thread.start()

    def _run(self, conn, name, query, params):
        try:
            with conn.cursor(name=name) as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(query, params)
                while True:
                    rows = cur.fetchmany(FETCH_ROWS)
                    if not rows:
                        break
                    self._queue.put(rows)
            self._queue.put(None)
        except BaseException as exc:  # handed to the merge, which raises it
            self._queue.put(_read_failure(conn, exc))

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item


@dataclass
class Columns:
    """What the merge needs of an entity's columns: their names, those MAS's work may change (in
    the order of the MAS side's flags) and those a newer Synapse row explains."""

    names: list
    mas_work: list
    synapse_dated: tuple = ()

    def differing(self, expected_hashes, found_hashes) -> list:
        return [c for c, e, f in zip(self.names, expected_hashes, found_hashes) if e != f]

    def damaged(self, expected_hashes, found_hashes, work_flags) -> list:
        """The columns that differ and that MAS's work does not explain."""
        work = dict(zip(self.mas_work, work_flags or ()))
        return [c for c, e, f in zip(self.names, expected_hashes, found_hashes) if e != f and not work.get(c)]


def compare(report: EntityReport, expected, found, limit: int, columns: Columns | None = None,
            removable: list | None = None) -> tuple:
    """Merges two streams sorted by key (expected: key, column md5s, example, changed, user id;
    found: key, column md5s, added, MAS work flags, as imported) into the report; returns the keys
    of unexpected MAS rows and of MAS rows whose Synapse source is gone since the import, that the
    report names (looked up afterwards, so MAS's stream carries no names). Missing rows MAS may have
    removed itself go to `removable` (a list) to be judged afterwards. A MAS row still as the import
    wrote it (its row version is the import's) differs from Synapse because Synapse changed."""
    unexpected_keys, gone_keys = [], []

    def synapse_only(row, index) -> bool:
        return len(row) > index and bool(row[index])

    exp = iter(expected)
    fnd = iter(found)
    e = next(exp, None)
    f = next(fnd, None)
    while e is not None or f is not None:
        if f is None or (e is not None and e[0] < f[0]):
            report.expected += 1
            if removable is not None and not e[3] and len(e) > 4 and e[4] is not None:
                removable.append(e)
            else:
                report.count_loss("missing", e, limit)
            e = next(exp, None)
        elif e is None or f[0] < e[0]:
            if not f[2]:  # rows MAS added were counted with the buckets
                if synapse_only(f, 4):
                    report.changed_in_synapse += 1
                    if len(gone_keys) < limit:
                        gone_keys.append(f[0])
                else:
                    report.unexpected += 1
                    if len(unexpected_keys) < limit:
                        unexpected_keys.append(f[0])
            f = next(fnd, None)
        else:
            report.expected += 1
            damaged = columns.damaged(e[1], f[1], f[3]) if columns else ([] if e[1] == f[1] else ["(row)"])
            if e[1] == f[1]:
                report.found += 1
            elif synapse_only(f, 4):
                report.changed_in_synapse += 1
                differing = columns.differing(e[1], f[1]) if columns else []
                report.add_name("changed_in_synapse", f"{e[2]} ({', '.join(differing)})" if differing else e[2], limit)
            elif not damaged:
                report.changed_in_mas += 1
                report.add_name("changed_in_mas", e[2], limit)
            elif e[3] and columns and all(c in columns.synapse_dated for c in damaged):
                report.count_loss("different", e, limit)
            else:
                report.different += 1
                report.add_name("different", f"{e[2]} ({', '.join(damaged)})" if e[2] is not None else None, limit)
            e = next(exp, None)
            f = next(fnd, None)
    return unexpected_keys, gone_keys


def _name_unexpected(mas_conn, stage, table: str, key: list, types: dict, keys: list) -> list:
    if not keys:
        return []
    joins, label = MAS_LABELS[table]
    key_sql = _key_sql([f"m.{c}" for c in key], [types[c] for c in key])
    with mas_conn.cursor() as cur:
        cur.execute(f"SELECT {label} FROM {table} m {joins} WHERE {key_sql}::text = ANY(%s) ORDER BY 1",
                    ([str(k) for k in keys],))
        return [row[0] for row in cur.fetchall()]


def run_verify(options: VerifyOptions) -> dict:
    """Compares MAS with what the import had to write from Synapse; raises a Syn2masError when it
    cannot (no import to verify, a database unreachable). Writes nothing anywhere."""
    try:
        return _run_verify(options)
    except Syn2masError:
        raise
    except Exception as exc:
        if psycopg2 is not None and isinstance(exc, psycopg2.Error):
            raise DatabaseError(f"verify stopped on a database error: {first_line(exc)}") from None
        raise


def _read_only(conn) -> None:
    conn.rollback()
    with conn.cursor() as cur:
        # As the import's reader: memory for the per-bucket aggregates, parallel workers, and no JIT.
        cur.execute("SET work_mem = '64MB'; SET parallel_tuple_cost = 0.001; SET parallel_setup_cost = 100; "
                    "SET jit = off")
    conn.commit()
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)


def _import_marker(mas_conn, server_name: str) -> dict:
    """The marker of the import to verify, refusing MAS databases verify cannot judge."""
    marker = read_marker(mas_conn)
    if marker is None:
        raise RefusedError("MAS's database holds no import by matrix.syn2mas (no marker on its users table, "
                           f"expected a comment starting {MARKER_PREFIX.strip()!r}): nothing to verify")
    if marker.get("server_name") not in (None, server_name):
        raise RefusedError(f"MAS's database holds the import of {marker.get('server_name')!r}, but Synapse's "
                           f"server_name is {server_name!r}: wrong database?")
    if not marker.get("replay"):
        raise RefusedError(f"the import of {marker.get('imported_at', 'an unknown date')} was made by "
                           f"matrix.syn2mas {marker.get('collection_version', '(unknown)')}, which did not "
                           "record what verify needs to recompute its rows (its ids' seed)")
    return marker


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_text(uuid_text: str) -> str:
    """A uuid as MAS writes the same id in its job payloads: a ULID in Crockford base32."""
    number = int(uuid_text.replace("-", ""), 16)
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


def _judge_removed(mas_conn, report: EntityReport, rows: list, limit: int, params: dict) -> None:
    """Missing emails and third-party ids: MAS's doing when it deactivated their user after the
    import or queued the user's provisioning after it (as it does when an email is removed);
    damage otherwise."""
    if not rows:
        return
    owners = sorted({row[4] for row in rows})
    with mas_conn.cursor() as cur:
        cur.execute(f"SELECT user_id::text, 'user deactivated' FROM users WHERE user_id::text = ANY(%(o)s)"
                    f" AND deactivated_at > {IMPORTED_AT}", dict(params, o=owners))
        reasons = dict(cur.fetchall())
        cur.execute("SELECT to_regclass('queue_jobs') IS NOT NULL")
        # Users remove emails only; other third-party ids go with a deactivation alone.
        if cur.fetchone()[0] and report.table == "user_emails":
            by_ulid = {ulid_text(o): o for o in owners if o not in reasons}
            cur.execute(f"SELECT DISTINCT payload->>'user_id' FROM queue_jobs WHERE queue_name = 'provision-user'"
                        f" AND created_at > {IMPORTED_AT} AND payload->>'user_id' = ANY(%(u)s)",
                        dict(params, u=list(by_ulid)))
            for (ulid,) in cur.fetchall():
                reasons[by_ulid[ulid]] = "removed by its user"
    for row in rows:
        reason = reasons.get(row[4])
        if reason:
            report.changed_in_mas += 1
            report.add_name("changed_in_mas", f"{row[2]} (gone: {reason})", limit)
        else:
            report.count_loss("missing", row, limit)


def _name_added(mas_conn, report: EntityReport, stage, key: list, params: dict, limit: int) -> None:
    """Names the rows MAS added since the import; those its normal work cannot have made are
    unexpected (damage), with the reason."""
    with mas_conn.cursor() as cur:
        cur.execute(added_query(stage, stage.table, key, limit), params)
        for reason, count, names in cur.fetchall():
            if reason is None:
                report.examples["added_in_mas"] = list(names or [])
                continue
            report.added_in_mas -= count
            report.unexpected += count
            for name in names or []:
                report.add_name("unexpected", f"{name} ({reason})", limit)


def _fetch(conn, query: str, params: dict) -> list:
    holder: list = []
    _fetch_all(conn, query, params, holder)
    if isinstance(holder[0], BaseException):
        raise holder[0]
    return holder[0]


def _found_totals(found_rows: list) -> tuple:
    """(rows, digest sum) of the import's MAS rows, over every bucket."""
    return (sum(row[1] for row in found_rows),
            sum(int(row[2]) for row in found_rows if row[1]))


def _count_recorded(report: EntityReport, recorded: dict, found_rows: list) -> list:
    """What equal totals prove, as compare_buckets counts it when every bucket is equal; no bucket
    left to compare row by row."""
    report.expected += recorded["rows"]
    report.found += recorded["rows"]
    for reason, count in recorded["skipped"].items():
        report.skipped[reason] = report.skipped.get(reason, 0) + count
    report.added_in_mas += sum(row[3] for row in found_rows)
    return []


def _verify_stage(index: int, stage, schema, synapse_conn, mas_conn, params: dict, row_hash: str, imported: dict,
                  options, recorded: dict | None = None) -> "EntityReport":
    """One entity: bucket aggregates compared first, then only differing buckets row by row. With
    `recorded` (the digests the import took of the rows it wrote, Synapse unchanged since), MAS's totals are
    compared with it first, and Synapse is read only when they differ."""
    stage_started = time.monotonic()
    columns = schema.compared_columns(stage.table)
    types, key = _mas_columns(mas_conn, stage.table)
    report = EntityReport(stage.name, stage.table, imported=imported.get(stage.name))
    report.columns = list(columns)
    differing = None
    if recorded is not None and recorded.get("layout") == _layout_digest(columns, types, key):
        found_rows = _fetch(mas_conn, found_buckets_query(stage, stage.table, columns, types, key, row_hash), params)
        if _found_totals(found_rows) == (recorded["rows"], int(recorded["sum"])):
            report.expected_from = "import"
            differing = _count_recorded(report, recorded, found_rows)
    if differing is None:  # Synapse's side bucket by bucket, to compare and to find what differs
        expected_rows, found_rows = both(
            synapse_conn, expected_buckets_query(stage, columns, types, key, row_hash),
            mas_conn, found_buckets_query(stage, stage.table, columns, types, key, row_hash), params)
        differing = compare_buckets(report, expected_rows, found_rows)
    report.remembered = params.get("import_xid", -1) >= 0
    keys, gone = [], []
    if differing:
        drill = dict(params, buckets=differing)
        expected = _Stream(synapse_conn, f"syn2mas_verify_s{index}",
                           expected_query(stage, columns, types, key), drill)
        found = _Stream(mas_conn, f"syn2mas_verify_m{index}",
                        found_query(stage, stage.table, columns, types, key), drill)
        work = [c for c in columns if c in MAS_WORK.get(stage.table, {})]
        removable = [] if stage.table in REMOVED_BY_MAS else None
        keys, gone = compare(report, expected, found, options.examples,
                             Columns(columns, work, SYNAPSE_DATED.get(stage.name, ())), removable)
        _judge_removed(mas_conn, report, removable or [], options.examples, params)
    if not stage.report_skips:  # another stage reports these skips
        report.skipped = {}
    unexpected = report.examples.get("unexpected") or []
    report.examples["unexpected"] = _name_unexpected(mas_conn, stage, stage.table, key, types, keys) + unexpected
    if gone:
        report.examples.setdefault("changed_in_synapse", []).extend(
            f"{name} (gone from Synapse)" for name in _name_unexpected(mas_conn, stage, stage.table, key, types, gone))
    if report.added_in_mas:
        _name_added(mas_conn, report, stage, key, params, options.examples)
    report.seconds = time.monotonic() - stage_started
    return report


def _constraint_sql(with_state: bool) -> tuple:
    state = ", con.convalidated" if with_state else ""
    constraints = f"""
        SELECT con.conrelid::regclass::text, con.conname, con.contype, pg_get_constraintdef(con.oid){state}
        FROM pg_constraint con
        WHERE con.contype IN ('p', 'u', 'f')
          AND (con.conrelid = ANY(%(t)s::regclass[])
               OR (con.contype = 'f' AND con.confrelid = ANY(%(t)s::regclass[])))"""
    indexes = """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisvalid AND i.indisready
        FROM pg_index i WHERE i.indrelid = ANY(%(t)s::regclass[])"""
    return constraints, indexes


def check_schema(mas_conn, marker: dict) -> dict:
    """The constraints and indexes the import dropped and rebuilt (as its marker lists them, which
    is what this MAS schema version defined at the import): each still there, the same, and valid;
    and none on the written tables left NOT VALID or invalid."""
    constraints_sql, indexes_sql = _constraint_sql(True)
    with mas_conn.cursor() as cur:
        cur.execute(constraints_sql, {"t": list(WRITTEN_TABLES)})
        constraints = {(table, name): (definition, valid) for table, name, _type, definition, valid in cur.fetchall()}
        cur.execute(indexes_sql, {"t": list(WRITTEN_TABLES)})
        indexes = {name: (definition, valid) for name, definition, valid in cur.fetchall()}
    problems = []
    rebuilt = marker.get("rebuilt")
    for (table, name), (_definition, valid) in sorted(constraints.items()):
        if not valid:
            problems.append(f"constraint {name} on {table} is NOT VALID")
    for name, (_definition, valid) in sorted(indexes.items()):
        if not valid:
            problems.append(f"index {name} is invalid")
    if rebuilt:
        for table, name, _type, definition in rebuilt.get("constraints") or []:
            found = constraints.get((table, name))
            if found is None:
                problems.append(f"constraint {name} on {table} is missing")
            elif found[0] != definition and found[1]:
                problems.append(f"constraint {name} on {table} differs from the one the import rebuilt")
        for name, definition in rebuilt.get("indexes") or []:
            found = indexes.get(name)
            if found is None:
                problems.append(f"index {name} is missing")
            elif found[0] != definition:
                problems.append(f"index {name} differs from the one the import rebuilt")
    return {"checked": len(constraints) + len(indexes), "problems": problems,
            "complete": bool(rebuilt),
            "note": None if rebuilt else ("the import predates verify's record of the constraints it rebuilt: "
                                          "their validity is checked, a missing one cannot be told")}


def check_marker(marker: dict) -> dict:
    """Whether the import's marker is as the import wrote it: its digest of itself, and its run
    time recorded twice (an edited run time or high-water mark would pass damage off as Synapse's
    changes). A marker of an import made before the digest existed is only cross-checked."""
    problems = []
    digest = marker.get("digest")
    if digest is not None and digest != marker_digest(marker):
        problems.append("the import's marker was edited after the import (its digest no longer matches)")
    try:
        from datetime import datetime
        recorded_ms = datetime.fromisoformat(marker["imported_at"]).timestamp() * 1000
        if abs(recorded_ms - int(marker["replay"]["run_ms"])) >= 1:
            problems.append("the import's marker was edited after the import (its run time and imported_at "
                            "disagree)")
    except (KeyError, TypeError, ValueError):
        problems.append("the import's marker was edited after the import (no readable run time)")
    return {"intact": not problems, "problems": problems,
            "note": None if digest else "the import predates the marker's digest: only its run time is cross-checked"}


def _lock_refusal(exc: LockWaitExceeded, synapse_conn, lock_wait: float) -> RefusedError:
    """Who holds the lock a read of verify waited for, named."""
    side, tables = ("Synapse's", SYNAPSE_TABLES) if exc.conn is synapse_conn else ("MAS's", WRITTEN_TABLES)
    try:
        exc.conn.rollback()
        holders = lock_holders(exc.conn, tables)
    except Exception:  # naming them is a courtesy; the refusal stands
        holders = []
    return lock_refusal(
        holders, lock_wait,
        by_client=f"verify waited {{waited}}s for a lock on {side} tables held by {{holders}}: run verify again "
                  "once it is done (nothing was read to a verdict, nothing was written)",
        by_other=f"verify waited {{waited}}s for a lock on {side} tables held by {{holders}}: run verify again "
                 "once it is done")


def _run_verify(options: VerifyOptions) -> dict:
    started = time.monotonic()
    synapse = load_synapse_config(options.synapse_config)
    mas = load_mas_config(options.mas_config, options.mas_reader) if options.mas_config else None
    if mas is None and not options.mas_database_uri:
        raise RefusedError("MAS's config.yaml (or a MAS database URI) is needed to know which database to verify")
    server_name = synapse.server_name
    synapse_conninfo = database_conninfo(synapse, options.synapse_database_uri, "the given Synapse database URI")
    mas_conninfo = database_conninfo(mas, options.mas_database_uri, "the given MAS database URI")
    lock_timeout = f"{int(options.lock_wait_seconds * 1000)}ms"

    mas_conn = connect(mas_conninfo, APPLICATION_NAME, "MAS", lock_timeout=lock_timeout)
    synapse_conn = None
    try:
        _read_only(mas_conn)
        schema = detect_mas_schema(mas_conn)
        marker = _import_marker(mas_conn, server_name)
        replay = marker["replay"]
        synapse_conn = connect(synapse_conninfo, APPLICATION_NAME, "Synapse", lock_timeout=lock_timeout)
        reader = SynapseReader(synapse_conn, server_name)
        reader.begin_snapshot(lock=False)
        params = replay_params(server_name, replay)
        with synapse_conn.cursor() as cur:
            cur.execute("SELECT user_id || chr(31) || device_id FROM access_tokens WHERE id > %s "
                        "AND device_id IS NOT NULL", (params["high_access_token"],))
            params["new_token_devices"] = [row[0] for row in cur.fetchall()]
        imported = marker.get("migrated") or {}
        row_hash = row_hash_kind(synapse_conn, mas_conn)
        params["import_xid"] = int(marker.get("xid", -1))
        # The import's row version tells "Synapse changed since" from damage only where Synapse did change:
        # with every table the import read as it was then, a MAS row that differs from what the import had to
        # write is MAS's (a trigger, a hand edit), whatever its row version.
        recorded = marker.get("synapse_fingerprint")
        synapse_unchanged = bool(recorded) and reader.fingerprint() == recorded
        params["synapse_changed_xid"] = -1 if synapse_unchanged else params["import_xid"]
        # What the import wrote stands for Synapse's side while Synapse is as the import read it.
        totals = marker.get("expected") or {}
        recorded = ((totals.get("stages") or {}) if synapse_unchanged and totals.get("row_hash") == row_hash
                    and not options.recompute else {})
        entities = [_verify_stage(index, stage, schema, synapse_conn, mas_conn, params, row_hash, imported, options,
                                  recorded.get(stage.name))
                    for index, stage in enumerate(STAGES)]
        schema_check = check_schema(mas_conn, marker)
        schema_check["marker"] = check_marker(marker)
        reader.end_snapshot()
        mas_conn.rollback()
    except LockWaitExceeded as exc:
        raise _lock_refusal(exc, synapse_conn, options.lock_wait_seconds) from None
    except Exception as exc:
        if psycopg2 is not None and getattr(exc, "pgcode", None) == "55P03":
            cursor = getattr(exc, "cursor", None)
            conn = synapse_conn if cursor is not None and cursor.connection is synapse_conn else mas_conn
            raise _lock_refusal(LockWaitExceeded(conn), synapse_conn, options.lock_wait_seconds) from None
        raise
    finally:
        mas_conn.close()
        if synapse_conn is not None:
            synapse_conn.close()
    result = summarize(entities, marker, server_name, schema.release, synapse_conninfo, mas_conninfo,
                       time.monotonic() - started, schema_check)
    return result


def summarize(entities: list, marker: dict, server_name: str, release: str, synapse_conninfo, mas_conninfo,
              seconds: float, schema_check: dict | None = None) -> dict:
    totals = {k: sum(getattr(e, k) for e in entities)
              for k in ("expected", "found", "missing", "different", "unexpected", "changed_in_synapse",
                        "added_in_mas", "changed_in_mas")}
    schema_check = schema_check or {"checked": 0, "problems": [], "complete": False, "note": None}
    damaged = [e.name for e in entities if e.missing or e.different or e.unexpected]
    if schema_check["problems"]:
        damaged.append("schema")
    marker_check = schema_check.pop("marker", None) or {"intact": None, "problems": [], "note": None}
    if marker_check["problems"]:
        damaged.append("marker")
    ok = not damaged
    result = {
        "ok": ok, "changed": False, "server_name": server_name, "mas_release": release,
        "imported_at": marker.get("imported_at"),
        "synapse_database": describe(synapse_conninfo), "mas_database": describe(mas_conninfo),
        "entities": {e.name: e.as_dict() for e in entities}, "totals": totals, "damaged": damaged,
        "schema": schema_check, "marker": marker_check,
        "synapse_changed_since_import": totals["changed_in_synapse"] > 0,
        "duration_seconds": round(seconds, 3), "exit_code": 0 if ok else EXIT_MISMATCH,
    }
    notes = [note for note in (schema_check.get("note"), marker_check.get("note")) if note]
    if any(not e.remembered for e in entities):
        notes.append("the import recorded no transaction id (an import made before it did): a row changed in "
                     "Synapse after the import is told from damage by its dates only, so some routine Synapse "
                     "activity may show as damage")
    result["notes"] = notes
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict) -> str:
    totals = result["totals"]
    losses = ", ".join(f"{totals[k]} {k}" for k in ("missing", "different", "unexpected"))
    problems = (result.get("schema") or {}).get("problems") or []
    if result["ok"]:
        line = f"verified: {totals['found']} rows in {len(result['entities'])} entities, 0 missing"
    else:
        line = (f"MISMATCH: {losses} in {', '.join(result['damaged'])} "
                f"({totals['found']} of {totals['expected']} rows as expected)")
        for problem in (result.get("marker") or {}).get("problems") or []:
            line += f"; {problem}"
        if problems:
            line += f"; MAS's schema: {'; '.join(problems[:EXAMPLES])}" + (" ..." if len(problems) > EXAMPLES else "")
    if totals["changed_in_synapse"]:
        changed = [e["entity"] for e in result["entities"].values() if e["changed_in_synapse"]]
        line += (f"; Synapse changed since the import: {totals['changed_in_synapse']} row(s) newer than it "
                 f"({', '.join(changed)}), not in MAS")
    if totals["changed_in_mas"] or totals["added_in_mas"]:
        line += (f"; MAS at work since the import: {totals['changed_in_mas']} row(s) changed (sessions used or "
                 f"logged out, tokens refreshed, users locked or deactivated, emails removed), "
                 f"{totals['added_in_mas']} added")
    return line


def format_human(result: dict) -> str:
    """A table per entity, the named examples of every discrepancy, and the verdict last."""
    lines = [f"Verify of the import of {result['server_name']} made {result.get('imported_at')}, "
             f"MAS {result['mas_release']} against Synapse's database, in {result['duration_seconds']:.1f}s"]
    heads = ("expected", "found", "missing", "different", "unexpected", "syn.changed", "mas.changed", "mas.added")
    width = max(len(name) for name in result["entities"])
    lines.append(f"  {'entity'.ljust(width)}  " + "  ".join(f"{h:>11}" for h in heads))
    for name, e in result["entities"].items():
        values = (e["expected"], e["found"], e["missing"], e["different"], e["unexpected"],
                  e["changed_in_synapse"], e["changed_in_mas"], e["added_in_mas"])
        lines.append(f"  {name.ljust(width)}  " + "  ".join(f"{v:>11,}" for v in values))
    for name, e in result["entities"].items():
        for reason, count in sorted(e["skipped"].items()):
            lines.append(f"  {name}: {count:,} skipped as the import skips them: {reason}")
    labels = {"missing": "MISSING in MAS", "different": "DIFFERENT in MAS", "unexpected": "UNEXPECTED in MAS",
              "changed_in_synapse": "CHANGED in Synapse since the import",
              "changed_in_mas": "CHANGED by MAS at work since the import",
              "added_in_mas": "ADDED by MAS at work since the import"}
    for name, e in result["entities"].items():
        for kind, label in labels.items():
            count = e[kind]
            if count:
                examples = e["examples"].get(kind) or []
                lines.append(f"{label}: {name}: {count:,}" + (f" (e.g. {', '.join(examples)})" if examples else ""))
    schema = result.get("schema") or {}
    for problem in schema.get("problems") or []:
        lines.append(f"SCHEMA of MAS: {problem}")
    for note in result.get("notes") or []:
        lines.append(f"  note: {note}")
    lines.append(result["verdict"])
    return "\n".join(lines) + "\n"
