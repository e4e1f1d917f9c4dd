"""The main job on an embedded default: a throwaway PostgreSQL, a sample Synapse, a fresh MAS,
migrated by the collection's playbook (first in check mode, then for real, then once more to show
that a second run changes nothing). Run it through scripts/demo.sh, which prepares the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

import yaml  # noqa: E402

from _syn2mas.config import format_ulid  # noqa: E402
from tests.support import mas_schema, pgcluster, synapse_data, synapse_schema  # noqa: E402

SERVER_NAME = "demo.example"
PROVIDERS = {"oidc-google": uuid.UUID("01932d2e-8f6a-7c3b-9d1e-2f4a5b6c7d01"),
             "oidc": uuid.UUID("01932d2e-8f6a-7c3b-9d1e-2f4a5b6c7d02")}


def playbook(workdir: str, *extra: str) -> None:
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "syn2mas_hosts=localhost",
           "-e", f"ansible_python_interpreter={os.path.join(ROOT, '.venv', 'bin', 'python')}", "-e", f"@{os.path.join(workdir, 'vars.yml')}",
           os.path.join(ROOT, "playbooks", "import.yml"), *extra]
    print("\n$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    cluster = pgcluster.start_cluster(prefix="syn2mas-demo-")
    workdir = tempfile.mkdtemp(prefix="syn2mas-demo-")
    try:
        print(f"PostgreSQL {cluster.bindir} on {cluster.sockdir}:{cluster.port}")
        cluster.create_database("synapse", template=synapse_schema.create_template(cluster, synapse_schema.LATEST))
        conn = cluster.connect("synapse")
        summary = synapse_data.populate_sample(conn, SERVER_NAME)
        conn.close()
        print(f"Sample Synapse {synapse_schema.LATEST} database: "
              + ", ".join(f"{k}={v}" for k, v in sorted(summary.items()) if isinstance(v, int)))
        cluster.create_database("mas", template=mas_schema.create_template(cluster, "own-1.22"))
        conn = cluster.connect("mas")
        for provider_id in PROVIDERS.values():  # what `mas-cli config sync` would have created
            mas_schema.insert_upstream_provider(conn, provider_id)
        conn.close()

        homeserver = {
            "server_name": SERVER_NAME,
            "database": {"name": "psycopg2", "args": {"user": "postgres", "dbname": "synapse",
                                                      "host": cluster.sockdir, "port": cluster.port}},
            "oidc_providers": [{"idp_id": "google", "idp_name": "Google", "issuer": "https://accounts.google.com/",
                                "client_id": "demo", "client_secret": "demo-secret"}],
            "oidc_config": {"issuer": "https://sso.demo.example/", "client_id": "demo", "client_secret": "x"},
        }
        mas = {
            "matrix": {"homeserver": SERVER_NAME, "secret": "demo-shared-secret", "endpoint": "http://localhost:8008/"},
            "database": {"uri": cluster.uri("mas")},
            "upstream_oauth2": {"providers": [
                {"id": format_ulid(pid), "synapse_idp_id": idp, "issuer": "https://sso.demo.example/",
                 "client_id": "demo", "token_endpoint_auth_method": "none"} for idp, pid in PROVIDERS.items()]},
        }
        paths = {name: os.path.join(workdir, name) for name in ("homeserver.yaml", "mas.yaml", "vars.yml")}
        for name, data in (("homeserver.yaml", homeserver), ("mas.yaml", mas),
                           ("vars.yml", {"syn2mas_synapse_config": [paths["homeserver.yaml"]],
                                         "syn2mas_mas_config": [paths["mas.yaml"]]})):
            with open(paths[name], "w") as handle:
                yaml.safe_dump(data, handle)

        playbook(workdir, "--check")
        playbook(workdir)
        playbook(workdir)
        rows = cluster.execute("""
            SELECT 'users', count(*) FROM users UNION ALL SELECT 'passwords', count(*) FROM user_passwords
            UNION ALL SELECT 'emails', count(*) FROM user_emails
            UNION ALL SELECT 'sso links', count(*) FROM upstream_oauth_links
            UNION ALL SELECT 'sessions', count(*) FROM compat_sessions
            UNION ALL SELECT 'access tokens', count(*) FROM compat_access_tokens
            UNION ALL SELECT 'refresh tokens', count(*) FROM compat_refresh_tokens""", "mas")
        print("\nMAS now holds: " + ", ".join(f"{n} {c}" for n, c in rows))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
