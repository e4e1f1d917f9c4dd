"""Creates template databases holding the real Synapse schema of each tested release."""

from __future__ import annotations

import os
import subprocess

from .pgcluster import PgCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNAPSE_VENVS = os.path.join(ROOT, ".venv-synapse")
# The newest release we test and the oldest we support (keep in sync with scripts/setup.sh).
LATEST = "1.163.2"
OLDEST = "1.136.0"
VERSIONS = (LATEST, OLDEST)


def synapse_python(version: str) -> str:
    python = os.path.join(SYNAPSE_VENVS, version, "bin", "python")
    if not os.path.exists(python):
        raise RuntimeError(f"matrix-synapse {version} is not installed in {SYNAPSE_VENVS}: run scripts/setup.sh")
    return python


def template_name(version: str) -> str:
    return "synapse_tpl_" + version.replace(".", "_")


def create_template(cluster: PgCluster, version: str) -> str:
    """Creates (once) a template database with Synapse `version`'s schema and returns its name."""
    name = template_name(version)
    if cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(name,)):
        return name
    cluster.create_database(name)
    subprocess.run(
        [synapse_python(version), os.path.join(os.path.dirname(__file__), "make_synapse_schema.py"),
         cluster.dsn(name)],
        check=True, capture_output=True, text=True,
    )
    return name
