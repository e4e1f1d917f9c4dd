# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proof after the import: MAS holds exactly what the import had to write from Synapse.

The expected rows are recomputed from Synapse with the import's own stages (synapse_reader.STAGES)
and the parameters the import recorded in its marker (the ids' seed, its clock, the provider
mapping), so every MAS row, ids included, can be recomputed. Each side digests its rows in
PostgreSQL (an md5 of the row as text, the values cast to MAS's column types) and sums them per
bucket of keys; buckets that differ are then read row by row from both sides, sorted by key, and
merge-compared here to name what is missing, different or unexpected. Memory stays flat whatever the
size. Both databases are read in READ ONLY transactions: nothing is written to either.

A row missing or different in MAS whose Synapse source is newer than the import (a login after
it) is counted as "Synapse changed since the import", not as damage; a MAS row created after the
import by MAS itself (not with an id of the import's shape) as "added in MAS since the import".
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field

from .config import ConfigSources, load_mas_config, load_synapse_config
from .db import connect, database_conninfo, describe, first_line, psycopg2
from .errors import DatabaseError, RefusedError, Syn2masError
from .mas_schema import detect as detect_mas_schema
from .mas_writer import MARKER_PREFIX, read_marker
from .synapse_reader import STAGES, SynapseReader, stage_params

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

# What MAS itself changes in the import's rows once it runs: such a row differing is MAS at work,
# not damage (columns the import writes from Synapse's past, so never later than the import).
CHANGED_BY_MAS = {
    "users": "(m.locked_at > {t} OR m.deactivated_at > {t})",
    "compat_sessions": "m.last_active_at > {t}",
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

    def count_loss(self, kind: str, expected_row, limit: int) -> None:
        """An expected row (key, digest, example, changed) that MAS lacks or holds otherwise: `kind`
        (missing, different), unless its Synapse source changed after the import; named among the
        first `limit` examples of its kind."""
        kind = "changed_in_synapse" if expected_row[3] else kind
        setattr(self, kind, getattr(self, kind) + 1)
        names = self.examples.setdefault(kind, [])
        if len(names) < limit and expected_row[2] is not None:
            names.append(expected_row[2])

    def as_dict(self) -> dict:
        return {"entity": self.name, "table": self.table, "imported": self.imported, "expected": self.expected,
                "found": self.found, "missing": self.missing, "different": self.different,
                "unexpected": self.unexpected, "changed_in_synapse": self.changed_in_synapse,
                "added_in_mas": self.added_in_mas, "changed_in_mas": self.changed_in_mas, "skipped": self.skipped,
                "examples": {k: v for k, v in self.examples.items() if v}, "seconds": round(self.seconds, 3)}


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


def _synapse_rows(stage, columns: list, types: dict, key: list) -> tuple:
    """SQL for a stage's row as MAS must hold it, its key and its bucket."""
    exprs = {**stage.columns, **stage.optional_columns}
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
    """The migrated rows of some buckets, sorted by key: key, digest, example, changed."""
    row, key_sql, bucket = _synapse_rows(stage, columns, types, key)
    changed = CHANGED_SINCE_IMPORT.get(stage.name, "false")
    return (f"SELECT {key_sql}, md5({row}::text), ({stage.example})::text, ({changed})\n{stage.source}\n"
            f"AND {stage.skip_case()} IS NULL AND {bucket} = ANY(%(buckets)s)\nORDER BY 1")


def _mas_rows(stage, table: str, columns: list, types: dict, key: list) -> tuple:
    """The MAS rows of a stage (key, the row, and whether MAS made it after the import: a later
    creation time and an id not of the import's shape), and the SQL of a row's bucket."""
    row = ", ".join(f"m.{c}" for c in columns)
    key_sql = _key_sql([f"m.{c}" for c in key], [types[c] for c in key])
    tag = _ID_TAG.search(stage.columns[key[0]].strip()) if len(key) == 1 else None
    own_id = f" AND right(m.{key[0]}::text, 4) <> '{tag.group(1)}'" if tag else ""
    imported_at = "to_timestamp(%(imported_ms)s / 1000.0)"
    added = f"(m.created_at > {imported_at}{own_id})"
    touched = CHANGED_BY_MAS.get(table, "false").format(t=imported_at)
    where = MAS_ROWS_OF_STAGE.get(stage.name, "true")
    rows = (f"SELECT {key_sql} AS k, ROW({row}) AS r, {added} AS added, COALESCE({touched}, false) AS touched"
            f" FROM {table} m WHERE {where}")
    return rows, _bucket("s.k", _is_uuid(key, types))


def found_buckets_query(stage, table: str, columns: list, types: dict, key: list, row_hash: str = "md5") -> str:
    """Per bucket of the import's MAS rows: rows and digest sum; per bucket, rows MAS added since."""
    rows, bucket = _mas_rows(stage, table, columns, types, key)
    return (f"SELECT {bucket}, count(*) FILTER (WHERE NOT s.added),"
            f" sum({ROW_HASHES[row_hash].format(row='s.r')}) FILTER (WHERE NOT s.added)::text,"
            f" count(*) FILTER (WHERE s.added)\nFROM ({rows}) s\nGROUP BY 1")


def found_query(stage, table: str, columns: list, types: dict, key: list) -> str:
    """The MAS rows of some buckets, sorted by key: key, digest, added and changed by MAS since the import."""
    rows, bucket = _mas_rows(stage, table, columns, types, key)
    return (f"SELECT s.k, md5(s.r::text), s.added, s.touched\nFROM ({rows}) s\n"
            f"WHERE {bucket} = ANY(%(buckets)s)\nORDER BY 1")


def _fetch_all(conn, query: str, params: dict, holder: list) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            holder.append(cur.fetchall())
    except BaseException as exc:  # handed to the caller, which raises it
        holder.append(exc)


def both(synapse_conn, synapse_query: str, mas_conn, mas_query: str, params: dict) -> tuple:
    """Runs one query on each database at once; returns both results."""
    results: tuple = ([], [])
    thread = threading.Thread(target=_fetch_all, args=(synapse_conn, synapse_query, params, results[0]), daemon=True)
    thread.start()
    _fetch_all(mas_conn, mas_query, params, results[1])
    thread.join()
    for holder in results:
        if isinstance(holder[0], BaseException):
            raise DatabaseError(f"reading failed: {first_line(holder[0])}")
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
            self._queue.put(exc)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise DatabaseError(f"reading failed: {first_line(item)}")
            yield from item


def compare(report: EntityReport, expected, found, limit: int) -> list:
    """Merges two streams sorted by key (expected: key, digest, example, changed; found: key,
    digest, added) into the report; returns the keys of unexpected MAS rows that the report names
    (looked up afterwards, so MAS's stream carries no names)."""
    unexpected_keys = []
    exp = iter(expected)
    fnd = iter(found)
    e = next(exp, None)
    f = next(fnd, None)
    while e is not None or f is not None:
        if f is None or (e is not None and e[0] < f[0]):
            report.expected += 1
            report.count_loss("missing", e, limit)
            e = next(exp, None)
        elif e is None or f[0] < e[0]:
            if not f[2]:  # rows MAS added were counted with the buckets
                report.unexpected += 1
                if len(unexpected_keys) < limit:
                    unexpected_keys.append(f[0])
            f = next(fnd, None)
        else:
            report.expected += 1
            if e[1] == f[1]:
                report.found += 1
            elif f[3]:
                report.changed_in_mas += 1
            else:
                report.count_loss("different", e, limit)
            e = next(exp, None)
            f = next(fnd, None)
    return unexpected_keys


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
        # As the import's reader: memory for the per-bucket aggregates, and parallel workers.
        cur.execute("SET work_mem = '64MB'; SET parallel_tuple_cost = 0.001; SET parallel_setup_cost = 100")
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


def _verify_stage(index: int, stage, schema, synapse_conn, mas_conn, params: dict, row_hash: str, imported: dict,
                  options) -> "EntityReport":
    """One entity: bucket aggregates compared first, then only differing buckets row by row."""
    stage_started = time.monotonic()
    columns = schema.target_columns(stage.table)
    types, key = _mas_columns(mas_conn, stage.table)
    report = EntityReport(stage.name, stage.table, imported=imported.get(stage.name))
    differing = compare_buckets(report, *both(
        synapse_conn, expected_buckets_query(stage, columns, types, key, row_hash),
        mas_conn, found_buckets_query(stage, stage.table, columns, types, key, row_hash), params))
    keys = []
    if differing:
        drill = dict(params, buckets=differing)
        expected = _Stream(synapse_conn, f"syn2mas_verify_s{index}",
                           expected_query(stage, columns, types, key), drill)
        found = _Stream(mas_conn, f"syn2mas_verify_m{index}",
                        found_query(stage, stage.table, columns, types, key), drill)
        keys = compare(report, expected, found, options.examples)
    if not stage.report_skips:  # another stage reports these skips
        report.skipped = {}
    report.examples["unexpected"] = _name_unexpected(mas_conn, stage, stage.table, key, types, keys)
    report.seconds = time.monotonic() - stage_started
    return report


def _run_verify(options: VerifyOptions) -> dict:
    started = time.monotonic()
    synapse = load_synapse_config(options.synapse_config)
    mas = load_mas_config(options.mas_config) if options.mas_config else None
    if mas is None and not options.mas_database_uri:
        raise RefusedError("MAS's config.yaml (or a MAS database URI) is needed to know which database to verify")
    server_name = synapse.server_name
    synapse_conninfo = database_conninfo(synapse, options.synapse_database_uri, "the given Synapse database URI")
    mas_conninfo = database_conninfo(mas, options.mas_database_uri, "the given MAS database URI")

    mas_conn = connect(mas_conninfo, APPLICATION_NAME, "MAS")
    synapse_conn = None
    try:
        _read_only(mas_conn)
        schema = detect_mas_schema(mas_conn)
        marker = _import_marker(mas_conn, server_name)
        replay = marker["replay"]
        synapse_conn = connect(synapse_conninfo, APPLICATION_NAME, "Synapse")
        reader = SynapseReader(synapse_conn, server_name)
        reader.begin_snapshot(lock=False)
        params = replay_params(server_name, replay)
        with synapse_conn.cursor() as cur:
            cur.execute("SELECT user_id || chr(31) || device_id FROM access_tokens WHERE id > %s "
                        "AND device_id IS NOT NULL", (params["high_access_token"],))
            params["new_token_devices"] = [row[0] for row in cur.fetchall()]
        imported = marker.get("migrated") or {}
        row_hash = "hash_record" if min(synapse_conn.server_version, mas_conn.server_version) >= 140000 else "md5"

        entities = [_verify_stage(index, stage, schema, synapse_conn, mas_conn, params, row_hash, imported, options)
                    for index, stage in enumerate(STAGES)]
        reader.end_snapshot()
        mas_conn.rollback()
    finally:
        mas_conn.close()
        if synapse_conn is not None:
            synapse_conn.close()
    return summarize(entities, marker, server_name, schema.release, synapse_conninfo, mas_conninfo,
                     time.monotonic() - started)


def summarize(entities: list, marker: dict, server_name: str, release: str, synapse_conninfo, mas_conninfo,
              seconds: float) -> dict:
    totals = {k: sum(getattr(e, k) for e in entities)
              for k in ("expected", "found", "missing", "different", "unexpected", "changed_in_synapse",
                        "added_in_mas", "changed_in_mas")}
    damaged = [e.name for e in entities if e.missing or e.different or e.unexpected]
    ok = not damaged
    result = {
        "ok": ok, "changed": False, "server_name": server_name, "mas_release": release,
        "imported_at": marker.get("imported_at"),
        "synapse_database": describe(synapse_conninfo), "mas_database": describe(mas_conninfo),
        "entities": {e.name: e.as_dict() for e in entities}, "totals": totals, "damaged": damaged,
        "synapse_changed_since_import": totals["changed_in_synapse"] > 0,
        "duration_seconds": round(seconds, 3), "exit_code": 0 if ok else EXIT_MISMATCH,
    }
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict) -> str:
    totals = result["totals"]
    losses = ", ".join(f"{totals[k]} {k}" for k in ("missing", "different", "unexpected"))
    if result["ok"]:
        line = f"verified: {totals['found']} rows in {len(result['entities'])} entities, 0 missing"
    else:
        line = (f"MISMATCH: {losses} in {', '.join(result['damaged'])} "
                f"({totals['found']} of {totals['expected']} rows as expected)")
    if totals["changed_in_synapse"]:
        changed = [e["entity"] for e in result["entities"].values() if e["changed_in_synapse"]]
        line += (f"; Synapse changed since the import: {totals['changed_in_synapse']} row(s) newer than it "
                 f"({', '.join(changed)}), not in MAS")
    if totals["changed_in_mas"] or totals["added_in_mas"]:
        line += (f"; MAS at work since the import: {totals['changed_in_mas']} row(s) changed (sessions used, users "
                 f"locked or deactivated), {totals['added_in_mas']} added")
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
              "changed_in_synapse": "CHANGED in Synapse since the import"}
    for name, e in result["entities"].items():
        for kind, label in labels.items():
            count = e[kind]
            if count:
                examples = e["examples"].get(kind) or []
                lines.append(f"{label}: {name}: {count:,}" + (f" (e.g. {', '.join(examples)})" if examples else ""))
    lines.append(result["verdict"])
    return "\n".join(lines) + "\n"
