"""The ways the verify tests run an import and `syn2mas --command verify` on a MigrationEnv."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

from . import mas_schema, synapse_schema
from .migration_env import MigrationEnv
from .pgcluster import PgCluster, new_db_name
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


class ImportedSamples:
    """The sample homeserver imported into MAS (`imported`) once per (Synapse release, MAS variant) and test
    session: a pair of databases that tests copy (`copied`: `CREATE DATABASE ... TEMPLATE`, which keeps every row,
    the import's marker and the transaction ids verify reads), or read in place (`read_only`: only for a test
    that leaves both databases as they were and proves it, since the tests after it copy them)."""

    def __init__(self, pg: PgCluster, workdir: str):
        self.pg, self.workdir = pg, workdir
        self._pairs: dict = {}
        self._made: list = []

    def _pair(self, synapse_version: str, mas_variant: str) -> tuple:
        key = (synapse_version, mas_variant)
        if key not in self._pairs:
            synapse_db, mas_db = new_db_name("synapse_imported"), new_db_name("mas_imported")
            self.pg.create_database(synapse_db, template=synapse_schema.create_template(self.pg, synapse_version))
            self._made.append(synapse_db)
            self.pg.create_database(mas_db, template=mas_schema.create_template(self.pg, mas_variant))
            self._made.append(mas_db)
            env = MigrationEnv(self.pg, synapse_db, mas_db, self._workdir(f"imported{len(self._pairs)}"))
            self._pairs[key] = (synapse_db, mas_db, imported(env))
        return self._pairs[key]

    def _workdir(self, name: str) -> str:
        path = os.path.join(self.workdir, name)
        os.makedirs(path)
        return path

    def _env(self, synapse_db: str, mas_db: str, workdir: str, result: dict) -> MigrationEnv:
        return MigrationEnv(self.pg, synapse_db, mas_db, workdir, insert_providers=False,
                            import_result=copy.deepcopy(result))

    def read_only(self, workdir: str, synapse_version: str = synapse_schema.LATEST,
                  mas_variant: str = "own-1.22") -> MigrationEnv:
        """The imported pair itself, with config files of its own in `workdir`."""
        synapse_db, mas_db, result = self._pair(synapse_version, mas_variant)
        return self._env(synapse_db, mas_db, workdir, result)

    def copied(self, workdir: str, synapse_version: str = synapse_schema.LATEST,
               mas_variant: str = "own-1.22") -> MigrationEnv:
        """Copies of the imported pair (the caller drops them)."""
        synapse_template, mas_template, result = self._pair(synapse_version, mas_variant)
        synapse_db, mas_db = new_db_name("synapse"), new_db_name("mas")
        self.pg.create_database(synapse_db, template=synapse_template)
        self.pg.create_database(mas_db, template=mas_template)
        return self._env(synapse_db, mas_db, workdir, result)

    def drop(self) -> None:
        for name in self._made:
            self.pg.drop_database(name)
