"""A stand-in for MAS's `mas-cli` on the SSH fleet's MAS host (no MAS binary can be had on this machine).

Only what the runbook calls, as the real mas-cli does it (its documentation: reference/cli/config):
- `--help`: the usage, exit 0 (the runbook asks it to learn that mas-cli is there);
- `config sync --config=FILE... [--dry-run] [--prune]`: reads MAS's config files (merged as MAS merges
  them) and writes a row of `upstream_oauth_providers` for each of `upstream_oauth2.providers` into MAS's
  real database, through the database section of that config; a provider already there keeps its row
  with its issuer updated. `--dry-run` writes nothing. `--prune` would delete the rows the config no longer
  names: the stand-in refuses it, since the runbook must never ask for it.
Anything else exits 2, naming the stand-in. Each call is appended (its argv) to `calls.log` beside the first
config file, so a test sees what the runbook ran on MAS's host. The `clients` section is not synced (the
runbook does not depend on it).

Runs with a Python that has psycopg2 and PyYAML (the fleet gives Synapse's virtualenv: the host's bare
/usr/bin/python3 has neither), as `python mas_cli_stand_in.py ARGS...`.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "plugins", "module_utils")]

NAME = "mas-cli (stand-in of tests/support/mas_cli_stand_in.py)"
USAGE = f"""{NAME}
Usage: mas-cli [OPTIONS] <COMMAND>

Commands:
  config  Configuration-related commands (only `config sync` is stood in for)
"""


def _log(configs: list, argv: list) -> None:
    if configs:
        with open(os.path.join(os.path.dirname(configs[0]), "calls.log"), "a") as handle:
            handle.write(json.dumps(argv) + "\n")


def config_sync(configs: list, dry_run: bool) -> int:
    import psycopg2

    from _syn2mas.config import load_mas_config, parse_provider_id
    from tests.support.mas_schema import insert_upstream_provider

    mas = load_mas_config(configs)
    section = mas.raw.get("upstream_oauth2") or {}
    providers = section.get("providers") or []
    conn = psycopg2.connect(**mas.database_conninfo())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT upstream_oauth_provider_id::text FROM upstream_oauth_providers")
            present = {row[0] for row in cur.fetchall()}
        for entry in providers:
            provider_id = parse_provider_id(str(entry["id"]))
            issuer = entry.get("issuer") or ""
            if str(provider_id) in present:
                print(f"INFO cli.config.sync: Updating provider provider.id={entry['id']}")
                with conn.cursor() as cur:
                    cur.execute("UPDATE upstream_oauth_providers SET issuer = %s WHERE upstream_oauth_provider_id = %s",
                                (issuer, str(provider_id)))
            else:
                print(f"INFO cli.config.sync: Adding provider provider.id={entry['id']}")
                insert_upstream_provider(conn, provider_id, issuer=issuer)
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    finally:
        conn.close()
    return 0


def main(argv: list) -> int:
    if argv in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    configs = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    _log(configs, argv)
    rest = [arg for arg in argv if not arg.startswith("--config=")]
    if rest[:2] == ["config", "sync"] and set(rest[2:]) <= {"--dry-run", "--prune"} and configs:
        if "--prune" in rest:
            print(f"{NAME}: refuses --prune: the runbook must never delete MAS's other providers", file=sys.stderr)
            return 2
        print(f"INFO cli.config.sync: Syncing providers and clients defined in config to database prune=false "
              f"dry_run={'true' if '--dry-run' in rest else 'false'}")
        return config_sync(configs, "--dry-run" in rest)
    print(f"{NAME}: {' '.join(argv) or '(no command)'} is not stood in for (only --help and "
          "`config sync --config=FILE [--dry-run]`)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
