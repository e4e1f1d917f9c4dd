"""A dry run in check mode is judged against MAS's config as the real run will have written it
(matrix.homeserver, the upstream providers it adds), and fails only where the real run would."""

from __future__ import annotations

import uuid

import pytest

from _syn2mas.config import format_ulid
from _syn2mas.errors import RefusedError
from tests.support.migration_env import small_homeserver, without_timings

NEW_GOOGLE_ID = uuid.UUID("018e3f0a-7b2c-7d4e-9f00-0000000000c3")


def generated_mas_config(env) -> None:
    """MAS's config as `mas-cli config generate` leaves it: the default homeserver, no providers."""
    env.write_configs(mas_extra={"matrix": {"homeserver": "localhost:8008", "secret": "x",
                                            "endpoint": "http://localhost:8008/"},
                                 "upstream_oauth2": {}})


def test_the_dry_run_takes_the_homeserver_the_run_writes(env_on_small_homeserver):
    env = env_on_small_homeserver
    generated_mas_config(env)
    env.mas("DELETE FROM upstream_oauth_providers")
    before = env.mas_dump()
    # Judged against the config as it is, the dry run is refused as the real run would be ...
    with pytest.raises(RefusedError, match=r"matrix.homeserver is 'localhost:8008'"):
        env.run(dry_run=True)
    # ... and against the config the run writes first, it passes, counting what the real run will.
    dry = env.run(dry_run=True, planned_homeserver=env.server_name,
                  planned_provider_mapping=[f"oidc-google:{format_ulid(NEW_GOOGLE_ID)}"])
    assert dry["dry_run"] is True and dry["counts"]["users"]["migrated"] == 3
    assert dry["counts"]["upstream_links"]["migrated"] == 1
    assert any("provisional rows: oidc-google" in w for w in dry["warnings"])
    assert env.mas_dump() == before  # the provisional provider row went with the rollback

    # The real run, after writing what was planned (homeserver, provider and its row), counts the same.
    env.providers = {"oidc-google": NEW_GOOGLE_ID}
    env.write_configs()
    from tests.support import mas_schema
    conn = env.pg.connect(env.mas_db)
    mas_schema.insert_upstream_provider(conn, NEW_GOOGLE_ID)
    conn.close()
    real = env.run()
    assert without_timings(real["counts"]) == without_timings(dry["counts"])


def test_a_real_import_ignores_what_was_only_planned(env_on_small_homeserver):
    env = env_on_small_homeserver
    generated_mas_config(env)
    before = env.mas_dump()
    with pytest.raises(RefusedError, match=r"matrix.homeserver is 'localhost:8008'"):
        env.run(planned_homeserver=env.server_name)
    assert env.mas_dump() == before


def test_a_provider_neither_configured_nor_planned_still_stops_the_dry_run(env_on_small_homeserver):
    env = env_on_small_homeserver
    env.mas("DELETE FROM upstream_oauth_providers")
    with pytest.raises(RefusedError, match=r"no upstream provider row for oidc-google -> "):
        env.run(dry_run=True, planned_homeserver=env.server_name)


def test_provisional_provider_rows_fit_every_mas_schema(make_env, mas_variant):
    env = make_env(mas_variant=mas_variant, synapse_filled_by=small_homeserver)
    env.mas("DELETE FROM upstream_oauth_providers")
    before = env.mas_dump()
    dry = env.run(dry_run=True, planned_provider_mapping=[f"oidc-google:{format_ulid(NEW_GOOGLE_ID)}"])
    assert dry["counts"]["upstream_links"]["migrated"] == 1
    assert env.mas_dump() == before
