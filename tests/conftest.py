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
