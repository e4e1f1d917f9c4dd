"""The import refuses with the advisor's own words: each refusal is judged by the advisor's check.

Each case makes one refusal true on a clean, well-configured pair (tests/support/advisor_cases.py's changes),
asks the advisor as right before the import, then runs the real import: it must refuse, write
nothing, and its message must be exactly the advisor's ERROR line(s) for that check.
"""

from __future__ import annotations

import json

import pytest

from _syn2mas.advisor.refusals import IMPORT_REFUSALS
from _syn2mas.advisor.report import finding_line
from _syn2mas.errors import Syn2masError
from _syn2mas.migration.mas_writer import MARKER_PREFIX
from tests.support import mas_schema, migration_env, synapse_schema
from tests.support.advisor_cases import (
    Case, cas_links, clean_data, foreign_user, found, fresh, google_unmapped, mas_providers_not_synced, mas_running,
    mas_trigger, mas_user, oauth_delegated, schema_version, synapse_running,
)
from tests.support.pgcluster import new_db_name


@fresh
def _other_servers_import(c):
    payload = {"server_name": "other.example", "imported_at": "2026-01-01T00:00:00+00:00", "migrated": {"users": 3}}
    c.sql_mas("COMMENT ON TABLE users IS %s", (MARKER_PREFIX + json.dumps(payload),))


REFUSALS = {
    "mas_homeserver_mismatch": lambda c: c.mas_matrix(homeserver="matrix.example.test"),
    "mas_already_imported": _other_servers_import,
    "mas_running": mas_running(True),
    "mas_not_empty": mas_user,
    "mas_row_rewriters": mas_trigger,
    "synapse_schema_too_old": schema_version,
    "synapse_running": synapse_running(True),
    "wrong_server_name_users": foreign_user,
    "oauth_delegated_links": oauth_delegated,
    "sso_links_unknown_provider": cas_links,
    "sso_provider_unmapped": google_unmapped,
    "sso_provider_not_in_mas_database": mas_providers_not_synced,
}


def test_every_refusal_of_the_import_is_a_case():
    assert set(REFUSALS) == set(IMPORT_REFUSALS)


@pytest.fixture(scope="module")
def shared_env(pg, tmp_path_factory):
    """One clean pair for the cases whose change writes to neither database (a config file, a connection held):
    the refused import must leave MAS as it was, which each case checks, and Case's shared guard fails a change
    that writes."""
    synapse_db, mas_db = new_db_name("synapse"), new_db_name("mas")
    pg.create_database(synapse_db, template=synapse_schema.create_template(pg, synapse_schema.LATEST))
    pg.create_database(mas_db, template=mas_schema.create_template(pg, "own-1.22"))
    env = migration_env.MigrationEnv(pg, synapse_db, mas_db, str(tmp_path_factory.mktemp("refusals")))
    clean_data(env)
    yield env
    pg.drop_database(synapse_db)
    pg.drop_database(mas_db)


@pytest.mark.parametrize("check", list(REFUSALS))
def test_the_import_refuses_with_the_advisors_words(request, check):
    change = REFUSALS[check]
    if getattr(change, "fresh", False):  # it writes to a database: databases of its own
        env = request.getfixturevalue("env")
        clean_data(env)
        case = Case(env)
    else:
        env = request.getfixturevalue("shared_env")
        case = Case(env, shared=True)
    change(case)
    case.options["for_real_import"] = True
    # A running Synapse (synapse_running) or MAS (mas_running) stays connected through the import too:
    # the case would close it after advising.
    held, case._open = case._open, []
    advice = case.run()  # writes the config files the import reads
    errors = [f for f in found(advice, check) if f["severity"] == "ERROR"]
    assert errors, json.dumps(advice["findings"], indent=1)

    before = env.mas_dump()
    try:
        with pytest.raises(Syn2masError) as refused:
            env.run()
    finally:
        for conn in held:
            conn.close()
    assert str(refused.value) == "; ".join(finding_line(f) for f in errors)
    assert env.mas_dump() == before
