"""The main job on an embedded default: a throwaway PostgreSQL, a real Synapse homeserver with a
few dozen varied users, a fresh MAS database with a stand-in for MAS's HTTP service (MAS itself cannot
run here; the runbook does not stop Synapse while MAS does not answer) whose public URL is an HTTPS one on this
machine's name (nginx in front of it, with a throwaway certificate the controller trusts for this run only, so
that the runbook's controller-side check of MAS's public URL runs as it does for users), and the collection's
migrate playbook run on it:
first in check mode (the dry run: diffs and the import's counts, nothing changed), then for
real, then once more to show that a second run changes nothing. Run it through scripts/demo.sh,
which prepares the machine. Nothing is left behind: the cluster and the homeserver are removed.
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from tests.support import fleet as fleet_support  # noqa: E402
from tests.support import synapse_data  # noqa: E402
from tests.support.homeservers import http  # noqa: E402


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def recap(output: str) -> str:
    """The PLAY RECAP lines of an ansible-playbook run."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("PLAY RECAP")), len(lines))
    return "\n".join(line for line in lines[start + 1:] if line.strip())


def import_summary(output: str) -> str:
    """The import role's one-line summary (counts per stage) from a playbook's output."""
    found = re.findall(r'"msg": "((?:Dry run|Imported|Already imported): [^"]*)"', output)
    return "Import: " + found[-1] if found else "Import: (no summary in the output)"


def run_playbook(fleet, title: str, *args: str) -> str:
    step(title)
    print("$ ansible-playbook -i inventory.yml playbooks/migrate.yml " + " ".join(args), flush=True)
    proc = fleet.playbook("migrate.yml", *args)
    if proc.returncode != 0:
        print(proc.stdout[-8000:], proc.stderr[-4000:], sep="\n")
        raise SystemExit(f"the playbook failed (exit {proc.returncode})")
    return proc.stdout


def main() -> None:
    fleet = fleet_support.Fleet(names=("demo",), mas_https=True)
    try:
        step("A homeserver: a real Synapse on PostgreSQL, with its users")
        fleet.setup()  # Synapse started, an admin, password users with devices, an SSO user, a deactivated one
        hs = fleet.hosts["demo"]
        hs.stop()
        conn = fleet.pg.connect(hs.synapse_db)
        # More users of every kind (guests, appservice bots, locked users, refresh tokens, phone numbers...).
        sample = synapse_data.populate_sample(conn, hs.server_name, localpart_prefix="s_")
        with conn.cursor() as cur:  # this homeserver has one SSO provider: its legacy links are Google's too
            cur.execute("UPDATE user_external_ids SET auth_provider = 'oidc-google' WHERE auth_provider = 'oidc'")
        conn.close()
        hs.start()
        users = fleet.pg.execute("SELECT count(*) FROM users", hs.synapse_db)[0][0]
        print(f"Synapse {hs.synapse_version} at {hs.base_url}, server_name {hs.server_name}: {users} users, "
              f"{sample.get('devices', 0) + fleet.expected['demo']['devices']} devices; "
              f"PostgreSQL on {fleet.pg.sockdir}:{fleet.pg.port}; inventory {fleet.inventory}")
        print(f"MAS: a stand-in (no MAS binary here: it answers /health, its OpenID configuration and its "
              f"compatibility login) at {fleet.mas['demo'].url}, the runbook's syn2mas_mas_endpoint; its public URL "
              f"(http.public_base) {hs.mas_public_base}: nginx with a throwaway certificate in front of it, trusted by "
              f"this run's controller ({fleet.tls['ca']})")

        out = run_playbook(fleet, "Dry run: check mode and diff (nothing changes)", "--check", "--diff")
        print(import_summary(out))
        print(recap(out))

        out = run_playbook(fleet, "The migration, for real")
        print(import_summary(out))
        print(recap(out))

        out = run_playbook(fleet, "Again: a second run changes nothing")
        print(recap(out))

        step("Result")
        status, _body = http("GET", f"{hs.base_url}/health")
        print(f"Synapse /health: {status}; it now delegates authentication to MAS")
        rows = fleet.pg.execute("""
            SELECT 'users', count(*) FROM users UNION ALL SELECT 'passwords', count(*) FROM user_passwords
            UNION ALL SELECT 'emails', count(*) FROM user_emails
            UNION ALL SELECT 'SSO links', count(*) FROM upstream_oauth_links
            UNION ALL SELECT 'sessions', count(*) FROM compat_sessions
            UNION ALL SELECT 'access tokens', count(*) FROM compat_access_tokens
            UNION ALL SELECT 'refresh tokens', count(*) FROM compat_refresh_tokens""", hs.mas_db)
        print("MAS holds: " + ", ".join(f"{n} {c}" for n, c in rows))
        with open(hs.well_known) as handle:
            well_known = json.load(handle)
        print(".well-known/matrix/client keys: " + ", ".join(sorted(well_known)))
        # One report directory per run (check, real, again): the real run's is the second newest.
        runs = sorted(os.listdir(fleet.report_dir)) if os.path.isdir(fleet.report_dir) else []
        real_run = os.path.join(fleet.report_dir, runs[-2]) if len(runs) >= 2 else None
        for name in sorted(os.listdir(real_run)) if real_run else []:
            if name.endswith(".md"):
                with open(os.path.join(real_run, name)) as handle:
                    print("\nFleet report of the real run (" + os.path.join(real_run, name) + "):\n" + handle.read())
    finally:
        fleet.teardown()


if __name__ == "__main__":
    main()
