"""The project's own MAS schema fixtures: contract against the real dumps, and their known facts."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from _syn2mas.migration.mas_schema import WRITTEN_TABLES
from tests.support import mas_schema

# The tables the import writes, plus the FK target it needs to exist.
IMPORT_TABLES = tuple(WRITTEN_TABLES)
CORE_TABLES = IMPORT_TABLES + ("upstream_oauth_providers",)

# Facts of each release: last migration, number of migrations applied.
LAST_MIGRATION = {"1.0": (20250709142240, 120), "1.22": (20260720134722, 167)}
# The migration that dropped users.primary_user_email_id and user_emails.confirmed_at.
DROP_OLD_CONFIRMATION = 20260108120030


def _query(pg, db, sql, params=None):
    return pg.execute(sql, dbname=db, params=params)


def _tables(pg, db):
    return {r[0] for r in _query(pg, db, """
        SELECT c.relname FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')""")}


def _columns(pg, db, table):
    return _query(pg, db, """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum""", (f"public.{table}",))


def _constraints(pg, db, table):
    return sorted(_query(pg, db, """
        SELECT conname, contype::text, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = %s::regclass""", (f"public.{table}",)))


def _indexes(pg, db, table):
    rows = _query(pg, db, """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s""",
                  (table,))
    return sorted((name, definition.replace(" public.", " ")) for name, definition in rows)


def _referencing_tables(pg, db, targets):
    return {r[0] for r in _query(pg, db, """
        SELECT DISTINCT src.relname FROM pg_constraint c
          JOIN pg_class src ON src.oid = c.conrelid
          JOIN pg_class dst ON dst.oid = c.confrelid
         WHERE c.contype = 'f' AND dst.relnamespace = 'public'::regnamespace
           AND src.relnamespace = 'public'::regnamespace AND dst.relname = ANY(%s)""",
                                 (list(targets),))}


def _migrations(pg, db):
    return _query(pg, db, "SELECT version, description, success FROM _sqlx_migrations ORDER BY version")


def _has_trgm(pg, db):
    return bool(_query(pg, db, "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))


@pytest.mark.parametrize("release", mas_schema.RELEASES)
def test_own_fixture_matches_real_dump(pg, release):
    if f"real-{release}" not in mas_schema.VARIANTS:
        pytest.skip(f"reference dump {mas_schema.real_path(release)} not available "
                    "(set SYN2MAS_SHARED_DIR to the folder holding mas-schema/)")
    own = mas_schema.create_template(pg, f"own-{release}")
    real = mas_schema.create_template(pg, f"real-{release}")

    own_tables = _tables(pg, own)
    assert set(CORE_TABLES) | {"_sqlx_migrations"} <= own_tables
    assert own_tables <= _tables(pg, real), "the fixture has tables the release does not have"
    # Every table of the release with a foreign key to one of the 9 core tables is covered.
    missing = _referencing_tables(pg, real, CORE_TABLES) - own_tables
    assert not missing, f"tables with FKs to the core tables missing from the fixture: {missing}"

    for table in sorted(own_tables):
        assert _columns(pg, own, table) == _columns(pg, real, table), f"columns of {table}"
        assert _constraints(pg, own, table) == _constraints(pg, real, table), f"constraints of {table}"
        assert _indexes(pg, own, table) == _indexes(pg, real, table), f"indexes of {table}"

    assert _has_trgm(pg, own) == _has_trgm(pg, real)
    assert _migrations(pg, own) == _migrations(pg, real)


@pytest.mark.parametrize("release", mas_schema.RELEASES)
def test_own_fixture_release_facts(pg, release):
    db = mas_schema.create_template(pg, f"own-{release}")
    assert set(CORE_TABLES) <= _tables(pg, db)

    def has_column(table, column):
        return bool(_query(pg, db, """SELECT 1 FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = %s AND column_name = %s""", (table, column)))

    old = release == "1.0"
    assert has_column("users", "primary_user_email_id") is old
    assert has_column("user_emails", "confirmed_at") is old
    assert has_column("upstream_oauth_providers", "registration_token_required") is not old
    assert _has_trgm(pg, db) is not old

    fk = dict((name, definition) for name, _kind, definition in _constraints(pg, db, "compat_sessions"))
    assert fk["compat_sessions_user_session_id_fkey"].endswith(
        "REFERENCES user_sessions(user_session_id) ON DELETE SET NULL"
        if old else "REFERENCES user_sessions(user_session_id)")

    migrations = _migrations(pg, db)
    last, count = LAST_MIGRATION[release]
    assert len(migrations) == count and migrations[-1][0] == last
    assert all(success for _version, _description, success in migrations)
    assert (DROP_OLD_CONFIRMATION in {v for v, _description, _success in migrations}) is not old

    # The template is created once and reused.
    assert mas_schema.create_template(pg, f"own-{release}") == db


@pytest.mark.parametrize("release", mas_schema.RELEASES)
def test_every_column_of_the_written_tables_is_written_or_left_by_the_stages(pg, release):
    """MAS's written columns come from the stages: on each release, what a stage writes exists, and every
    other column is one the import knows to leave (a new NOT NULL column would fail the COPY)."""
    db = mas_schema.create_template(pg, f"real-{release}" if f"real-{release}" in mas_schema.VARIANTS
                                    else f"own-{release}")
    for table, spec in WRITTEN_TABLES.items():
        columns = {name: (not_null, default) for name, _type, not_null, default in _columns(pg, db, table)}
        assert set(spec["write"]) <= set(columns), f"{table}: the stages write columns MAS {release} lacks"
        unknown = set(columns) - set(spec["write"]) - set(spec["optional"]) - set(spec["leave"])
        assert not unknown, f"{table}: columns of MAS {release} no stage writes or leaves: {sorted(unknown)}"
        for name in spec["leave"]:
            if name in columns:
                not_null, default = columns[name]
                assert not not_null or default is not None, f"{table}.{name} is left but NOT NULL without a default"


def test_variants_and_template_names():
    assert list(mas_schema.VARIANTS)[:2] == ["own-1.0", "own-1.22"]
    assert set(mas_schema.VARIANTS) <= {"own-1.0", "own-1.22", "real-1.0", "real-1.22"}
    assert mas_schema.template_name("own-1.22") == "mas_tpl_own_1_22"


def test_mas_db_is_empty_and_takes_providers(pg, mas_db):
    for table in IMPORT_TABLES:
        assert _query(pg, mas_db, f"SELECT count(*) FROM {table}") == [(0,)]

    conn = pg.connect(mas_db)
    try:
        first, second = uuid.uuid4(), uuid.uuid4()
        mas_schema.insert_upstream_provider(conn, first)
        mas_schema.insert_upstream_provider(conn, second, issuer="https://other.example.test",
                                            human_name="Other", claims_imports={"localpart": {"action": "require"}})
        with pytest.raises(ValueError):
            mas_schema.insert_upstream_provider(conn, uuid.uuid4(), no_such_column=1)
        with pytest.raises(psycopg2.errors.UniqueViolation):
            mas_schema.insert_upstream_provider(conn, first)
    finally:
        conn.close()

    rows = _query(pg, mas_db, """SELECT upstream_oauth_provider_id, issuer, human_name, claims_imports
                                   FROM upstream_oauth_providers ORDER BY issuer""")
    assert rows == [
        (first, "https://idp.example.test", None, {}),
        (second, "https://other.example.test", "Other", {"localpart": {"action": "require"}}),
    ]
    # A link to the provider can now be written, as the import does.
    _query(pg, mas_db, """INSERT INTO upstream_oauth_links
        (upstream_oauth_link_id, upstream_oauth_provider_id, user_id, subject, created_at)
        VALUES (%s, %s, NULL, 'sub-1', now())""", (str(uuid.uuid4()), str(first)))
