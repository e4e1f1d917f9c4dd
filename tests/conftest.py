"""Shared fixtures: one real PostgreSQL cluster per test session, real-schema databases per test."""

from __future__ import annotations

import itertools
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The library is importable as a plain package, as the CLI imports it.
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from tests.support import pgcluster, synapse_schema  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg():
    cluster = pgcluster.start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def new_db_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


@pytest.fixture(params=synapse_schema.VERSIONS, ids=lambda v: f"synapse-{v}")
def synapse_version(request):
    return request.param


@pytest.fixture
def synapse_db(pg, synapse_version):
    """A fresh database with the real Synapse schema of `synapse_version`; yields its name."""
    template = synapse_schema.create_template(pg, synapse_version)
    name = new_db_name("synapse")
    pg.create_database(name, template=template)
    yield name
    pg.drop_database(name)


from tests.support import mas_schema  # noqa: E402


@pytest.fixture(params=list(mas_schema.VARIANTS), ids=lambda v: f"mas-{v}")
def mas_variant(request):
    """A MAS schema variant: `own-1.0`, `own-1.22`, plus `real-*` when the shared dumps exist."""
    return request.param


@pytest.fixture
def mas_db(pg, mas_variant):
    """A fresh database with the MAS schema of `mas_variant`; yields its name."""
    template = mas_schema.create_template(pg, mas_variant)
    name = new_db_name("mas")
    pg.create_database(name, template=template)
    yield name
    pg.drop_database(name)


from tests.support import migration_env  # noqa: E402


@pytest.fixture
def make_env(pg, tmp_path):
    """Builds MigrationEnvs: fresh Synapse and MAS databases plus their config files."""
    created = []

    def factory(synapse_version=synapse_schema.LATEST, mas_variant="own-1.22", **kw):
        synapse_name = new_db_name("synapse")
        pg.create_database(synapse_name, template=synapse_schema.create_template(pg, synapse_version))
        mas_name = new_db_name("mas")
        pg.create_database(mas_name, template=mas_schema.create_template(pg, mas_variant))
        created.extend([synapse_name, mas_name])
        workdir = tmp_path / f"env{len(created)}"
        workdir.mkdir()
        return migration_env.MigrationEnv(pg, synapse_name, mas_name, str(workdir), **kw)

    yield factory
    for name in created:
        pg.drop_database(name)


@pytest.fixture
def env(make_env):
    """One migration environment on the newest Synapse schema and MAS 1.22."""
    return make_env()
