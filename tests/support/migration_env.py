"""A Synapse database, a MAS database and the config files pointing at them, as an operator has."""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field

import yaml

from _syn2mas.config import format_ulid
from _syn2mas.migration.importer import ImportOptions, run_import

from . import mas_schema
from .pgcluster import PgCluster
from .synapse_data import SynapseData

SERVER_NAME = "example.test"
GOOGLE_ID = uuid.UUID("018e3f0a-7b2c-7d4e-9f00-0000000000a1")
LEGACY_ID = uuid.UUID("018e3f0a-7b2c-7d4e-9f00-0000000000b2")


@dataclass
class MigrationEnv:
    pg: PgCluster
    synapse_db: str
    mas_db: str
    workdir: str
    server_name: str = SERVER_NAME
    # MAS upstream providers: synapse_idp_id -> provider id (written to config.yaml and MAS's DB)
    providers: dict = field(default_factory=lambda: {"oidc-google": GOOGLE_ID, "oidc": LEGACY_ID})
    # False when MAS's database holds the providers' rows already (an environment of its own config files over
    # databases another environment made).
    insert_providers: bool = True
    # (Synapse's dump, MAS's dump) when both databases were made (and dumped) once for several tests that must
    # leave them as they were: each compares with these rather than dumping both before it starts.
    dumps_as_created: tuple | None = None
    # What the import reported, when both databases are copies of a pair it imported (verify_runs.ImportedSamples).
    import_result: dict | None = None

    def __post_init__(self):
        self.homeserver_yaml = os.path.join(self.workdir, "homeserver.yaml")
        self.mas_yaml = os.path.join(self.workdir, "mas.yaml")
        self.write_configs()
        if self.insert_providers:
            conn = self.pg.connect(self.mas_db)
            for provider_id in self.providers.values():
                mas_schema.insert_upstream_provider(conn, provider_id)
            conn.close()

    def write_configs(self, synapse_extra: dict | None = None, mas_extra: dict | None = None) -> None:
        synapse = {
            "server_name": self.server_name,
            "database": {"name": "psycopg2", "args": {
                "user": "postgres", "dbname": self.synapse_db, "host": self.pg.sockdir,
                "port": self.pg.port, "cp_min": 5, "cp_max": 10}},
            "oidc_providers": [{"idp_id": "google", "idp_name": "Google", "issuer": "https://accounts.google.com/",
                                "client_id": "c", "client_secret": "s"}],
            "oidc_config": {"issuer": "https://legacy.example.test/", "client_id": "c", "client_secret": "s"},
        }
        synapse.update(synapse_extra or {})
        mas = {
            "matrix": {"homeserver": self.server_name, "secret": "shared-secret", "endpoint": "http://localhost:8008/"},
            "database": {"host": self.pg.sockdir, "port": self.pg.port, "username": "postgres",
                         "database": self.mas_db},
            "upstream_oauth2": {"providers": [
                {"id": format_ulid(pid), "synapse_idp_id": idp, "issuer": "https://idp.example.test/",
                 "client_id": "c", "client_secret": "s", "token_endpoint_auth_method": "client_secret_basic"}
                for idp, pid in self.providers.items()]},
        }
        mas.update(mas_extra or {})
        with open(self.homeserver_yaml, "w") as handle:
            yaml.safe_dump(synapse, handle)
        with open(self.mas_yaml, "w") as handle:
            yaml.safe_dump(mas, handle)

    @contextlib.contextmanager
    def populate(self):
        """A SynapseData builder whose connection is closed afterwards (an open one would look
        like a running Synapse to the import)."""
        conn = self.pg.connect(self.synapse_db)
        try:
            yield SynapseData(conn, self.server_name, seed=1)
        finally:
            conn.close()

    def options(self, **kw) -> ImportOptions:
        return ImportOptions(synapse_config=[self.homeserver_yaml], mas_config=[self.mas_yaml], **kw)

    def run(self, **kw) -> dict:
        return run_import(self.options(**kw))

    def mas(self, sql: str, params=None) -> list:
        return self.pg.execute(sql, self.mas_db, params)

    def mas_dump(self) -> str:
        return self.pg.dump(self.mas_db)

    def synapse_dump(self) -> str:
        return self.pg.dump(self.synapse_db)

    def dumps_before(self) -> tuple:
        """(Synapse's dump, MAS's dump) before a test that must leave both as they were: as created, when the
        databases are shared and were dumped then, else now."""
        return self.dumps_as_created or (self.synapse_dump(), self.mas_dump())


def small_homeserver(env: MigrationEnv) -> None:
    """Three users (an admin with two devices, one with a device, one SSO-only), an email and an SSO link."""
    with env.populate() as s:
        alice = s.user("alice", admin=True)
        s.threepid(alice, "email", "alice@example.test")
        s.login(alice, "PHONE", ip="192.0.2.1")
        s.login(alice, "LAPTOP", with_refresh=True)
        bob = s.user("bob")
        s.login(bob, "BOBDEV")
        sso = s.user("sso", password_hash=None)
        s.external_id(sso, "oidc-google", "sub-1")


def without_timings(counts: dict) -> dict:
    """An import's counts without the seconds each stage took (which differ from run to run)."""
    return {stage: {k: v for k, v in entry.items() if k != "seconds"} for stage, entry in counts.items()}
