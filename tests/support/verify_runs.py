"""The ways the verify tests run an import and `syn2mas --command verify` on a MigrationEnv."""

from __future__ import annotations

import os
import subprocess
import sys

from .synapse_data import populate_sample

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def syn2mas(*args):
    """The `syn2mas` command of this checkout, as an admin runs it."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "syn2mas"), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def verify_cli(env, *extra):
    return syn2mas("--command", "verify", "--synapseConfigFile", env.homeserver_yaml,
                   "--masConfigFile", env.mas_yaml, *extra)


def imported(env) -> dict:
    """The sample homeserver in Synapse's database, imported into MAS (the import's result)."""
    conn = env.pg.connect(env.synapse_db)
    try:
        populate_sample(conn, env.server_name)
    finally:
        conn.close()
    result = env.run()
    assert result["changed"] is True
    return result
