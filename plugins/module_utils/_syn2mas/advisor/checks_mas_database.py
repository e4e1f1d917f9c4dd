# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of MAS's database: who else uses it, its schema, and whether it is fresh for the import."""

from __future__ import annotations

from .registry import ERROR, INFO, MAS_DB, WARN, check, finding, plural

WHERE = "MAS database"


@check("mas_running", MAS_DB, "other clients of MAS's database")
def mas_running(f):
    clients = f.mas_db.clients
    if not clients:
        return None
    importing = any(row[3] for row in clients)
    listing = "; ".join(f"{name or 'unnamed client'} (pid {pid}, from {addr})" for pid, name, addr, _lock in clients)
    message = f"{plural(len(clients), 'other client')} connected to MAS's database: {listing}"
    if importing:
        message += " (one of them is a syn2mas import running right now)"
    return finding(ERROR if f.options.for_real_import or importing else INFO, message, f"{WHERE} (pg_stat_activity)",
                   "Wait for the running import to finish, then run the advisor again" if importing else
                   "Keep MAS stopped until the import is done: the import needs MAS's tables to itself")


@check("mas_schema", MAS_DB, "_sqlx_migrations and the tables the import writes")
def mas_schema(f):
    db = f.mas_db
    if db.schema_error:
        return finding(ERROR, db.schema_error, f"{WHERE}, table _sqlx_migrations",
                       "Run `mas-cli database migrate` with the MAS release you will run (1.0 or newer), then advise "
                       "again")
    return [finding(WARN, warning, f"{WHERE}, table _sqlx_migrations",
                    "Check this collection's release notes for this MAS release before importing")
            for warning in db.schema.warnings]


def already_imported(marker: dict, server_name: str | None) -> tuple:
    """(severity, message, remedy) for MAS's database holding a previous import (`marker`)."""
    other = server_name is not None and marker.get("server_name") not in (None, server_name)
    message = (f"MAS's database already holds an import of {marker.get('server_name')!r} made on "
               f"{marker.get('imported_at', '?')}" + (f", not of {server_name!r}" if other else ""))
    remedy = ("Wrong database? Point the advisor at the right one" if other else
              "Importing again changes nothing; to redo it, restore MAS's empty database first")
    return (ERROR if other else WARN), message, remedy


@check("mas_already_imported", MAS_DB, "a previous import's marker")
def mas_already_imported(f):
    if f.mas_db.marker is None:
        return None
    severity, message, remedy = already_imported(f.mas_db.marker, f.server_name)
    return finding(severity, message, f"{WHERE}, table users (comment)", remedy)


def not_empty(filled: list) -> tuple:
    """(message, remedy) for a MAS database with rows in `filled` and no import marker."""
    return (f"MAS's database is not empty: rows found in {', '.join(filled)}",
            "The import only fills a fresh MAS database: drop and recreate it (then `mas-cli database migrate` and "
            "`mas-cli config sync`), or check MAS's database section points at the right database "
            "(matrix-authentication-service#4605)")


@check("mas_not_empty", MAS_DB, "MAS's tables hold no data")
def mas_not_empty(f):
    db = f.mas_db
    if db.marker is not None or not db.filled:
        return None
    message, remedy = not_empty(db.filled)
    return finding(ERROR, message, f"{WHERE}, table {db.filled[0]}", remedy)


@check("mas_row_rewriters", MAS_DB, "triggers and rules on the tables the import writes")
def mas_row_rewriters(f):
    found = f.mas_db.rewriters
    if not found:
        return None
    listing = ", ".join(f"{table} ({kind} {name})" for table, kind, name in found)
    return finding(ERROR, f"{plural(len(found), 'trigger or rule', 'triggers or rules')} on tables the import "
                          f"writes would change its rows on the way: {listing}",
                   f"{WHERE} (pg_trigger, pg_rewrite)",
                   "MAS has none on these tables: drop them, or disable them until the import is done "
                   "(ALTER TABLE <table> DISABLE TRIGGER <name> / DISABLE RULE <name>), then advise again")


def providers_missing(missing: list) -> tuple:
    """(message, remedy) for mapped providers (config.ProviderLink) without a row in MAS's database."""
    names = ", ".join(f"{link.auth_provider} -> {link.provider_id}" for link in missing)
    return (f"MAS's database has no upstream provider row for {names}: the import refuses to run",
            "Run `mas-cli config sync` (or start MAS once) with the config that defines these providers")


@check("sso_provider_not_in_mas_database", MAS_DB, "upstream_oauth_providers rows of mapped providers")
def sso_provider_not_in_mas_database(f):
    db = f.mas_db
    in_use = f.synapse_db.in_use if f.synapse_db is not None and f.synapse_db.snapshot else None
    used = [link for provider, link in f.mapping.items() if in_use is None or provider in in_use]
    missing = [link for link in used if str(link.provider_id) not in db.providers_present]
    if not db.providers_table or not missing:
        return None
    message, remedy = providers_missing(missing)
    return finding(ERROR if in_use is not None else WARN, message,
                   f"{WHERE}, table upstream_oauth_providers ({missing[0].source})", remedy)
