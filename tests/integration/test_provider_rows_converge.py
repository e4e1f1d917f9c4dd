"""A run rolled back after its preparation synced MAS's upstream providers, then run again, leaves one
provider row per SSO provider in MAS's database, with every SSO link on it.

The preparation as migrate.yml does it: the real `mas_upstream_provider` module (through ansible-playbook)
writes the provider into MAS's config, then `mas-cli config sync` writes its row. MAS's CLI cannot be had
here: tests/support/mas_cli_stand_in.py STANDS IN FOR `mas-cli config sync` (it adds or updates a row per
provider of the config, never prunes, as MAS's does). The rollback puts MAS's config back as the backup holds
it and keeps MAS's database (nothing was imported). The rerun writes the provider again and imports.
"""

from __future__ import annotations

import contextlib
import io

from _syn2mas.config import parse_provider_id
from tests.support.ansible_run import run_tasks
from tests.support.mas_cli_stand_in import config_sync
from tests.support.migration_env import small_homeserver


def prepare(env, tmp_path, check: bool = False) -> dict:
    """The preparation's provider step: the module, then (for real) the config sync stand-in."""
    run = run_tasks(tmp_path, [{"matrix.syn2mas.mas_upstream_provider": {
        "path": env.mas_yaml, "synapse_config": [env.homeserver_yaml]}}], check=check)
    assert run.rc == 0 and not run.result.get("failed"), run.stdout[-2000:]
    if not check:
        with contextlib.redirect_stdout(io.StringIO()):
            assert config_sync([env.mas_yaml], dry_run=False) == 0
    return {p["synapse_idp_id"]: p["id"] for p in run.result["providers"]}


def test_a_rerun_after_a_rollback_between_preparation_and_import_leaves_one_provider_row(env, tmp_path):
    small_homeserver(env)  # one user linked to oidc-google
    # MAS as `mas-cli config generate` leaves it: no upstream providers, none in its database.
    env.providers = {}
    env.write_configs(synapse_extra={"oidc_config": None})
    env.mas("DELETE FROM upstream_oauth_providers")
    with open(env.mas_yaml) as handle:
        backup = handle.read()

    planned = prepare(env, tmp_path, check=True)  # the dry run shows the id the run writes
    first = prepare(env, tmp_path)
    assert first == planned and list(first) == ["oidc-google"]
    with open(env.mas_yaml, "w") as handle:  # the rollback: MAS's config from the backup, its database kept
        handle.write(backup)
    assert env.mas("SELECT count(*) FROM upstream_oauth_providers") == [(1,)]

    second = prepare(env, tmp_path)
    assert second == first
    result = env.run()
    assert result["changed"] is True and result["counts"]["upstream_links"]["migrated"] == 1

    rows = env.mas("SELECT p.upstream_oauth_provider_id::text, count(l.upstream_oauth_link_id) "
                   "FROM upstream_oauth_providers p LEFT JOIN upstream_oauth_links l USING (upstream_oauth_provider_id) "
                   "GROUP BY 1")
    assert rows == [(str(parse_provider_id(first["oidc-google"])), 1)]
