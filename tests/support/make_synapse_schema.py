"""Runs inside a matrix-synapse virtualenv: creates Synapse's real schema on an empty database.

Usage: python make_synapse_schema.py "<libpq dsn>"
It uses Synapse's own schema code (prepare_database on a blank database), so the tables,
columns, indexes and schema_version rows are exactly those of that Synapse release.
"""

import inspect
import sys

import psycopg2
from synapse.storage.database import LoggingDatabaseConnection
from synapse.storage.engines import create_engine
from synapse.storage.prepare_database import prepare_database

dsn = sys.argv[1]
engine = create_engine({"name": "psycopg2", "args": {"dsn": dsn}})
conn = psycopg2.connect(dsn)
kwargs = {}
# Newer Synapse releases want the server name for their connection wrapper's metrics.
if "server_name" in inspect.signature(LoggingDatabaseConnection.__init__).parameters:
    kwargs["server_name"] = "schema.invalid"
db_conn = LoggingDatabaseConnection(conn=conn, engine=engine, default_txn_name="schema", **kwargs)
engine.on_new_connection(db_conn)
prepare_database(db_conn, engine, config=None)
conn.commit()
conn.close()
