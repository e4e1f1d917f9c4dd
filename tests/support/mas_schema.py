"""MAS database schemas for the tests: template databases and an upstream-provider helper.

Variants (`VARIANTS`, name -> SQL file, in a stable order):

* `own-1.0`, `own-1.22`: the project's hand-written fixtures in tests/fixtures/mas/ (the tables the
  import touches, as MAS 1.0.0 and 1.22.0 create them). Always present.
* `real-1.0`, `real-1.22`: the reference pg_dump schemas of those releases, only when they exist
  in `<shared>/mas-schema/` where `<shared>` is `$SYN2MAS_SHARED_DIR` or, by default, the `shared`
  folder beside the repository checkout (`<repo root>/../shared`). Nothing else depends on them.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import uuid
from collections import OrderedDict

from .pgcluster import PgCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWN_DIR = os.path.join(ROOT, "tests", "fixtures", "mas")
RELEASES = ("1.0", "1.22")
# Reference dump file names of each release in <shared>/mas-schema/.
_REAL_FILES = {"1.0": "mas-1.0.0.sql", "1.22": "mas-1.22.0.sql"}


def shared_schema_dir() -> str:
    shared = os.environ.get("SYN2MAS_SHARED_DIR") or os.path.join(os.path.dirname(ROOT), "shared")
    return os.path.join(shared, "mas-schema")


def own_path(release: str) -> str:
    return os.path.join(OWN_DIR, f"mas-{release}.sql")


def real_path(release: str) -> str:
    return os.path.join(shared_schema_dir(), _REAL_FILES[release])


def _variants() -> "OrderedDict[str, str]":
    variants: OrderedDict[str, str] = OrderedDict()
    for release in RELEASES:
        variants[f"own-{release}"] = own_path(release)
    for release in RELEASES:
        if os.path.isfile(real_path(release)):
            variants[f"real-{release}"] = real_path(release)
    return variants


VARIANTS = _variants()


def template_name(variant: str) -> str:
    return "mas_tpl_" + re.sub(r"[^a-z0-9]+", "_", variant.lower()).strip("_")


def create_template(cluster: PgCluster, variant: str) -> str:
    """Creates (once per cluster) a template database holding `variant`'s schema; returns its name."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown MAS schema variant {variant!r} (known: {', '.join(VARIANTS)})")
    name = template_name(variant)
    if cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(name,)):
        return name
    cluster.create_database(name)
    try:
        load(cluster, name, variant)
    except RuntimeError:
        # Leave no half-loaded template behind for the next caller to pick up.
        cluster.drop_database(name)
        raise
    return name


def load(cluster: PgCluster, dbname: str, variant: str, user: str | None = None) -> None:
    """Loads `variant`'s schema into the existing database `dbname`, as `user` (default: the superuser).
    Loaded as MAS's own role, everything is that role's, the pg_trgm extension included (a trusted
    extension): as `mas-cli database migrate` leaves a database it created the schema in."""
    try:
        subprocess.run(
            [cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", cluster.sockdir, "-p", str(cluster.port), "-U", user or cluster.superuser,
             "-d", dbname, "-f", VARIANTS[variant]],
            check=True, capture_output=True, text=True,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"loading MAS schema {variant} into {dbname} failed:\n{exc.stderr}") from exc


# What `mas-cli config sync` would write for a minimal OIDC provider, per column. Columns not
# listed here but NOT NULL without default (a newer schema) get a neutral value of their type.
_PROVIDER_VALUES = {
    "scope": "openid email profile",
    "client_id": "syn2mas-tests",
    "token_endpoint_auth_method": "none",
    "discovery_mode": "oidc",
    "pkce_mode": "auto",
    "id_token_signed_response_alg": "RS256",
    "claims_imports": {},
    "on_backchannel_logout": "do_nothing",
}
_NEUTRAL_BY_TYPE = {
    "text": "", "character varying": "", "boolean": False, "integer": 0, "bigint": 0,
    "smallint": 0, "jsonb": {}, "json": {}, "ARRAY": [],
}


def insert_upstream_provider(conn, provider_id: uuid.UUID, issuer: str = "https://idp.example.test",
                             **overrides) -> None:
    """Inserts one upstream_oauth_providers row, as config sync would, into the connected MAS DB.

    Fills every NOT NULL column without a default of whatever schema version the database has
    (read from information_schema); `overrides` set any column explicitly. Does not commit.
    """
    with conn.cursor() as cur:
        cur.execute(
            """SELECT column_name, data_type, is_nullable = 'NO' AND column_default IS NULL
                 FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = 'upstream_oauth_providers'
                ORDER BY ordinal_position"""
        )
        columns = {name: (data_type, required) for name, data_type, required in cur.fetchall()}
        if not columns:
            raise RuntimeError("no upstream_oauth_providers table: is this a MAS database?")
        unknown = set(overrides) - set(columns)
        if unknown:
            raise ValueError(f"upstream_oauth_providers has no column(s) {', '.join(sorted(unknown))}")

        values = {"upstream_oauth_provider_id": str(provider_id), "issuer": issuer}
        for name, (data_type, required) in columns.items():
            if not required or name in values:
                continue
            if name in _PROVIDER_VALUES:
                values[name] = _PROVIDER_VALUES[name]
            elif data_type.startswith("timestamp"):
                values[name] = datetime.datetime.now(datetime.timezone.utc)
            elif data_type in _NEUTRAL_BY_TYPE:
                values[name] = _NEUTRAL_BY_TYPE[data_type]
            else:
                raise RuntimeError(f"no value for NOT NULL column upstream_oauth_providers.{name} ({data_type})")
        values.update(overrides)
        if isinstance(values["upstream_oauth_provider_id"], uuid.UUID):
            values["upstream_oauth_provider_id"] = str(values["upstream_oauth_provider_id"])

        params = []
        for name, value in values.items():
            if columns[name][0] in ("jsonb", "json") and value is not None and not isinstance(value, str):
                value = json.dumps(value)
            params.append(value)
        names = ", ".join(f'"{name}"' for name in values)
        placeholders = ", ".join("%s" for _name in values)
        cur.execute(f"INSERT INTO upstream_oauth_providers ({names}) VALUES ({placeholders})", params)
