"""Shared fixtures: one real PostgreSQL cluster per test session, real-schema databases per test."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The library is importable as a plain package, as the CLI imports it.
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from tests.support import pgcluster, synapse_schema  # noqa: E402
from tests.support.pgcluster import new_db_name  # noqa: E402
from tests.support.tiers import LONGEST_FIRST, TIERS, check_tiers, tier_of  # noqa: E402


def pytest_configure(config):
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what}")
    # A test file without a tier (or a tier for a file that is gone) stops the run before anything runs. Checked
    # once, by the process that starts the run: pytest-xdist's workers (workerinput) would each spend a second
    # parsing every test file again.
    if hasattr(config, "workerinput"):
        return
    problems = check_tiers(os.path.join(ROOT, "tests"))
    if problems:
        raise pytest.UsageError("tests/support/tiers.py: " + "; ".join(problems))


def pytest_collection_modifyitems(config, items):
    tiers = {}
    for item in items:
        tier = tier_of(os.path.relpath(str(item.path), ROOT), getattr(item, "originalname", item.name))
        own = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if own:
            raise pytest.UsageError(f"{item.nodeid} is marked {', '.join(own)} in its file: tiers are assigned "
                                    "in tests/support/tiers.py only")
        item.add_marker(getattr(pytest.mark, tier))
        tiers[item] = tier
    # The longest tiers first, and in a tier the longest files first (a file's tests keep their order), so
    # that with pytest-xdist the workers take the end-to-end files at the start and the short ones fill in at
    # the end (scripts/test.sh keeps this order: --no-loadscope-reorder).
    order = list(reversed(TIERS))

    def rank(item):
        rel = os.path.relpath(str(item.path), os.path.join(ROOT, "tests")).replace(os.sep, "/")
        return (order.index(tiers[item]),
                LONGEST_FIRST.index(rel) if rel in LONGEST_FIRST else len(LONGEST_FIRST))

    items.sort(key=rank)


@pytest.fixture(scope="session")
def pg():
    cluster = pgcluster.start_cluster(parent=pgcluster.in_memory_parent())
    try:
        yield cluster
    finally:
        cluster.stop()


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


from tests.support import migration_env, verify_runs  # noqa: E402


@pytest.fixture(scope="module")
def shared_synapse_databases(pg, tmp_path_factory):
    """Synapse databases (newest schema) each filled once by a function of one file (`fill(env)`, e.g.
    migration_env.small_homeserver) and shared by the file's tests that only read Synapse (the import never
    writes to it; their MAS databases are their own). Each is dumped when filled and compared when the file is
    done: a test that wrote to one fails there (an error on the file's last test)."""
    made = {}

    def database(fill) -> str:
        if fill not in made:
            name = new_db_name("synapse_shared")
            pg.create_database(name, template=synapse_schema.create_template(pg, synapse_schema.LATEST))
            fill(migration_env.MigrationEnv(pg, name, "no_mas_database", str(tmp_path_factory.mktemp("fill")),
                                            insert_providers=False))
            made[fill] = (name, pg.dump(name))
        return made[fill][0]

    yield database
    changed = [name for name, dump in made.values() if pg.dump(name) != dump]
    for name, _dump in made.values():
        pg.drop_database(name)
    assert not changed, f"a test wrote to the shared Synapse database(s) {changed}: give it a database of its own"


@pytest.fixture
def make_env(pg, tmp_path, shared_synapse_databases):
    """Builds MigrationEnvs: fresh Synapse and MAS databases plus their config files. With `synapse_filled_by`
    (a function filling Synapse's database), Synapse's database is the file's shared one filled by it
    (shared_synapse_databases: only for a test that never writes to Synapse), and only MAS's is fresh."""
    created = []

    def factory(synapse_version=synapse_schema.LATEST, mas_variant="own-1.22", synapse_filled_by=None, **kw):
        if synapse_filled_by is None:
            synapse_name = new_db_name("synapse")
            pg.create_database(synapse_name, template=synapse_schema.create_template(pg, synapse_version))
            created.append(synapse_name)
        else:
            assert synapse_version == synapse_schema.LATEST, "the shared Synapse databases hold the newest schema"
            synapse_name = shared_synapse_databases(synapse_filled_by)
        mas_name = new_db_name("mas")
        pg.create_database(mas_name, template=mas_schema.create_template(pg, mas_variant))
        created.append(mas_name)
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


@pytest.fixture
def env_on_small_homeserver(make_env):
    """A migration environment whose Synapse database holds migration_env.small_homeserver, shared by the file's
    tests that never write to Synapse (shared_synapse_databases), over a fresh MAS 1.22 database of its own."""
    return make_env(synapse_filled_by=migration_env.small_homeserver)


@pytest.fixture(scope="session")
def imported_samples(pg, tmp_path_factory):
    """The sample homeserver imported into MAS once per (Synapse release, MAS variant) for the session
    (verify_runs.ImportedSamples): the tests of verify copy the pair, or read it in place."""
    samples = verify_runs.ImportedSamples(pg, str(tmp_path_factory.mktemp("imported")))
    yield samples
    samples.drop()


@pytest.fixture
def make_imported_env(pg, tmp_path, imported_samples):
    """Builds MigrationEnvs holding the sample homeserver imported into MAS (`verify_runs.imported`), each on
    copies of the pair imported once for the session; `env.import_result` is what the import reported."""
    created = []

    def factory(synapse_version=synapse_schema.LATEST, mas_variant="own-1.22"):
        workdir = tmp_path / f"imported{len(created)}"
        workdir.mkdir()
        env = imported_samples.copied(str(workdir), synapse_version, mas_variant)
        created.extend([env.synapse_db, env.mas_db])
        return env

    yield factory
    for name in created:
        pg.drop_database(name)


@pytest.fixture
def imported_env(make_imported_env):
    """One migration environment on the newest Synapse schema and MAS 1.22 holding the sample homeserver
    imported into MAS."""
    return make_imported_env()


@pytest.fixture(scope="module")
def shared_databases(pg, tmp_path_factory):
    """A Synapse database (newest schema) and a MAS 1.22 database with its providers' rows, shared by the tests
    of one file that leave both as they were and prove it (each compares both with their dumps as created,
    `MigrationEnv.dumps_as_created`): each then finds them as fresh, without the two copies of the templates a
    fresh environment costs, and a test that changed them fails, and every test after it."""
    synapse_name, mas_name = new_db_name("synapse"), new_db_name("mas")
    pg.create_database(synapse_name, template=synapse_schema.create_template(pg, synapse_schema.LATEST))
    pg.create_database(mas_name, template=mas_schema.create_template(pg, "own-1.22"))
    env = migration_env.MigrationEnv(pg, synapse_name, mas_name, str(tmp_path_factory.mktemp("shared")))
    yield synapse_name, mas_name, (env.synapse_dump(), env.mas_dump())
    pg.drop_database(synapse_name)
    pg.drop_database(mas_name)


@pytest.fixture
def env_on_shared_databases(pg, tmp_path, shared_databases):
    """A migration environment with config files of its own over the file's shared databases (shared_databases:
    only for a test that leaves both databases as they were and checks that it did)."""
    workdir = tmp_path / "shared-env"
    workdir.mkdir()
    synapse_name, mas_name, dumps = shared_databases
    return migration_env.MigrationEnv(pg, synapse_name, mas_name, str(workdir), insert_providers=False,
                                      dumps_as_created=dumps)
