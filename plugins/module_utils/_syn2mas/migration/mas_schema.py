# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which MAS schema a database holds, and whether the import knows how to write into it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RefusedError
from .stages import STAGES

# The last migration each known release applies (from `_sqlx_migrations`).
KNOWN_RELEASES = (
    (20250709142240, "1.0.0"),
    (20260720134722, "1.22.0"),
)
OLDEST_SUPPORTED = KNOWN_RELEASES[0]

# Per MAS table, the columns the import knows and leaves to their NULL or default (they differ
# between releases: a column named here may be absent).
LEFT_COLUMNS = {
    "users": ("primary_user_email_id",),  # MAS < 1.? (dropped in migration 20260108120030)
    "user_passwords": ("upgraded_from_id",),
    "upstream_oauth_links": ("human_account_name",),
    "compat_sessions": ("finished_at", "user_session_id"),
    "compat_refresh_tokens": ("consumed_at",),
}


def written_tables(stages) -> dict:
    """Per MAS table: the columns its stages write (must exist), those written only where they exist
    (`optional`, e.g. user_emails.confirmed_at, dropped in migration 20260108120030), and those left."""
    tables: dict = {}
    for stage in stages:
        spec = {"write": tuple(stage.columns), "optional": tuple(stage.optional_columns),
                "leave": LEFT_COLUMNS.get(stage.table, ())}
        if tables.setdefault(stage.table, spec) != spec:
            raise ValueError(f"stage {stage.name} writes other columns into {stage.table} than the stage before it")
    return tables


# Derived from the stages, so a column added to a stage is checked against MAS's schema at once.
WRITTEN_TABLES = written_tables(STAGES)


@dataclass
class MasSchema:
    latest_migration: int
    migrations: int
    release: str  # "1.22.0", or a description such as "between 1.0.0 and 1.22.0"
    columns: dict  # table -> {column: (not_null, has_default)}
    warnings: list = field(default_factory=list)

    def target_columns(self, table: str) -> list:
        """The columns the import writes into `table` on this schema, in a fixed order."""
        spec = WRITTEN_TABLES[table]
        present = self.columns[table]
        return list(spec["write"]) + [c for c in spec["optional"] if c in present]

    def compared_columns(self, table: str) -> list:
        """Every column of `table` the import sets on this schema: those it writes, then those it
        leaves to NULL (verify holds MAS to both)."""
        present = self.columns[table]
        return self.target_columns(table) + [c for c in WRITTEN_TABLES[table]["leave"] if c in present]

    def has_column(self, table: str, column: str) -> bool:
        return column in self.columns.get(table, {})


def describe_release(latest: int) -> str:
    for version, release in KNOWN_RELEASES:
        if latest == version:
            return release
    older = [r for v, r in KNOWN_RELEASES if v < latest]
    newer = [r for v, r in KNOWN_RELEASES if v > latest]
    if older and newer:
        return f"between {older[-1]} and {newer[0]}"
    if older:
        return f"newer than {older[-1]}"
    return f"older than {newer[0]}"


# Longer than a screen: the checks run in the order MAS applies its migrations (table present, none
# failed, a known release, then the columns), each refusing with its own remedy.
def detect(conn) -> MasSchema:
    """Reads `_sqlx_migrations` and the written tables' columns; refuses what it cannot write into."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise RefusedError(
                "the MAS database has no _sqlx_migrations table: it is empty or not a MAS database. "
                "Run `mas-cli database migrate` (or start MAS once) so it creates its schema"
            )
        cur.execute("SELECT count(*), max(version), count(*) FILTER (WHERE NOT success) FROM _sqlx_migrations")
        count, latest, failed = cur.fetchone()
        if not count:
            raise RefusedError("the MAS database has no applied migrations: run `mas-cli database migrate`")
        if failed:
            raise RefusedError(
                f"the MAS database has {failed} failed migration(s) in _sqlx_migrations: repair MAS's "
                "schema (`mas-cli database migrate`) before importing"
            )
        if latest < OLDEST_SUPPORTED[0]:
            raise RefusedError(
                f"the MAS schema is older than MAS {OLDEST_SUPPORTED[1]} (latest migration {latest}, "
                f"{OLDEST_SUPPORTED[1]} has {OLDEST_SUPPORTED[0]}): upgrade MAS and run `mas-cli database migrate`"
            )
        cur.execute("""
            SELECT c.table_name, c.column_name, c.is_nullable = 'NO', c.column_default IS NOT NULL
            FROM information_schema.columns c
            WHERE c.table_schema = current_schema() AND c.table_name = ANY(%s)""",
                    (list(WRITTEN_TABLES),))
        columns: dict = {t: {} for t in WRITTEN_TABLES}
        for table, column, not_null, has_default in cur.fetchall():
            columns[table][column] = (not_null, has_default)
    conn.rollback()

    problems = []
    for table, spec in WRITTEN_TABLES.items():
        present = columns[table]
        if not present:
            problems.append(f"table {table} is missing")
            continue
        for column in spec["write"]:
            if column not in present:
                problems.append(f"column {table}.{column} is missing")
        known = set(spec["write"]) | set(spec["optional"]) | set(spec["leave"])
        for column, (not_null, has_default) in sorted(present.items()):
            if column not in known and not_null and not has_default:
                problems.append(f"column {table}.{column} is new and required (NOT NULL, no default)")
    release = describe_release(latest)
    if problems:
        raise RefusedError(
            f"the MAS schema (latest migration {latest}, MAS {release}) differs from what this import "
            f"writes: {'; '.join(problems)}. Upgrade the matrix.syn2mas collection, or use a supported MAS "
            f"release ({', '.join(release for _version, release in KNOWN_RELEASES)} are tested)"
        )
    schema = MasSchema(latest_migration=latest, migrations=count, release=release, columns=columns)
    if latest > KNOWN_RELEASES[-1][0]:
        schema.warnings.append(
            f"MAS schema is newer than the newest tested release {KNOWN_RELEASES[-1][1]} (latest migration "
            f"{latest}); its tables still match what the import writes"
        )
    return schema
