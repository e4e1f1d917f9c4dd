"""The runbook end to end, on real parts: three Synapse homeservers (real matrix-synapse, two releases)
on loopback ports, populated through Synapse's HTTP API, their databases and fresh MAS databases in one
test PostgreSQL cluster, nginx serving each .well-known, and the collection's playbooks run by
ansible-playbook against an inventory with the local connection. What this file proves is what the SSH fleet
(test_fleet_ssh.py, the shape users run) does not: waves, two Synapse releases, and what the runbook refuses
and rolls back around MAS's database.

The steps depend on each other and run in order (one module-scoped fleet): a real run where hs2 fails mid-run
(its MAS database becomes unreachable once Synapse is stopped) is rolled back and stops the waves, the canary
hs1 staying migrated -> the fixed fleet migrates -> an illegal re-import is refused -> the rollback playbook
brings legacy logins back, and a second rollback changes nothing.
Proved on the SSH fleet instead: check mode (it changes nothing; its diffs, the import's dry-run counts, its
report, and the window it predicts, test_03), the predicted window beside the measured one and the secrets in a
-vvv run (test_06), a second run that changes nothing (test_07).
The other failures of one host, each rolled back (a verify mismatch, a stop that hangs, a host held down, MAS
down after the start, a failed preparation), are test_runbook_rollbacks_e2e.py, on a fleet of their own so
that the two files run on two workers at once.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest
import yaml

from tests.support import homeservers
from tests.support.ansible_run import latest_report, recap
from tests.support.fleet import Fleet, host_configs, host_state, running_fleet, snapshot

pytestmark = pytest.mark.timeout(1500)

SECRETS = [homeservers.DB_PASSWORD, homeservers.MAS_SHARED_SECRET, homeservers.PEPPER,
           homeservers.OIDC_CLIENT_SECRET, *homeservers.PASSWORDS.values()]
WAVE_ORDER = ("hs1", "hs2", "hs3")


@pytest.fixture(scope="module")
def fleet(pg):
    with running_fleet(pg, WAVE_ORDER, versions={"hs3": "1.136.0"}) as fleet:
        yield fleet


def mas_rows(fleet: Fleet, name: str) -> int:
    """The rows in a host's MAS database of the tables the import writes: what verify must prove."""
    return sum(fleet.pg.execute(f"SELECT count(*) FROM {table}", fleet.hosts[name].mas_db)[0][0] for table in (
        "users", "user_passwords", "user_emails", "user_unsupported_third_party_ids", "upstream_oauth_links",
        "compat_sessions", "compat_access_tokens", "compat_refresh_tokens"))


def mas_counts(fleet: Fleet, hs) -> dict:
    rows = fleet.pg.execute("""
        SELECT 'users', count(*) FROM users UNION ALL
        SELECT 'deactivated', count(*) FROM users WHERE deactivated_at IS NOT NULL UNION ALL
        SELECT 'passwords', count(*) FROM user_passwords UNION ALL
        SELECT 'links', count(*) FROM upstream_oauth_links UNION ALL
        SELECT 'sessions', count(*) FROM compat_sessions UNION ALL
        SELECT 'tokens', count(*) FROM compat_access_tokens""", hs.mas_db)
    return dict(rows)


def test_2_failure_mid_run_is_rolled_back_and_stops_the_waves(fleet):
    hs2, mas2 = fleet.hosts["hs2"], fleet.mas["hs2"]
    # Once hs2's MAS is stopped in the window, its MAS database becomes unreachable (renamed away). The stop
    # command runs again in the rollback: like an operator's, it must succeed on a stopped MAS.
    sabotage = (f"({mas2.stop_command}) && ({fleet.pg.bin('psql')} -X -q -h {fleet.pg.sockdir} -p {fleet.pg.port} "
                f"-U postgres -d postgres -c 'ALTER DATABASE \"{hs2.mas_db}\" RENAME TO \"{hs2.mas_db}_gone\"' "
                "2>/dev/null || true)")
    fleet.write_inventory({"hs2": {"mas_service_stop_command": sabotage}})
    hs2_configs = host_configs(hs2)  # MAS's config is edited before the failure, homeserver.yaml after it
    hs3_before = snapshot(fleet, ["hs3"])["hs3"]
    try:
        run = fleet.playbook("migrate.yml")
    finally:
        fleet.write_inventory()
    assert run.returncode != 0
    stats = recap(run.stdout)
    assert stats["hs2"]["failed"] == 1
    assert stats["hs1"]["failed"] == 0
    # The later wave (hs3) never started: hs3 is untouched.
    assert "hs3" not in stats or stats["hs3"]["changed"] == 0
    assert snapshot(fleet, ["hs3"])["hs3"] == hs3_before
    # hs2 is back on a working legacy Synapse with its old configs (MAS's too), and logins work.
    assert host_configs(hs2) == hs2_configs
    assert hs2.healthy()
    status, body = hs2.login("alice", homeservers.PASSWORDS["alice"])
    assert status == 200, body
    fleet.expected["hs2"]["devices"] += 1  # that login made one more device
    assert host_state(hs2) == "legacy"
    # hs1 (the canary) migrated.
    assert host_state(fleet.hosts["hs1"]) == "delegated"
    report = latest_report(fleet)
    assert report["hosts"]["hs1"]["outcome"] == "migrated"
    assert report["hosts"]["hs2"]["outcome"] == "failed"
    assert report["hosts"]["hs2"]["rolled_back"] is True
    assert "cannot connect to the MAS database" in report["hosts"]["hs2"]["error"]
    # The report says where it failed, how long each phase took, and how long Synapse was down.
    hs2_entry = report["hosts"]["hs2"]
    # (the first use of MAS's database after MAS stopped is the import: MAS's config and providers were
    # prepared before the stop, while Synapse still served)
    assert hs2_entry["failed_phase"] == "import"
    assert [p["phase"] for p in hs2_entry["phase_seconds"]] == ["backup", "prepare", "synapse_stop", "mas_stop",
                                                                "activate", "import", "rollback"]
    # Synapse is back; MAS could not start again without its database, and the report says so.
    assert "rolled back, but MAS did not start again on its restored config" in hs2_entry["error"], hs2_entry["error"]
    assert hs2_entry["synapse_down"] is False and 0 < hs2_entry["downtime_seconds"] <= hs2_entry["duration_seconds"]
    hs1_entry = report["hosts"]["hs1"]
    assert [p["phase"] for p in hs1_entry["phase_seconds"]] == [
        "backup", "prepare", "synapse_stop", "mas_stop", "activate", "import", "mas_start", "synapse_start", "well_known"]
    assert hs1_entry["window_phases"] == ["synapse_stop", "mas_stop", "activate", "import", "mas_start", "synapse_start"]
    assert 0 < hs1_entry["downtime_seconds"] < hs1_entry["duration_seconds"]
    # The findings the run remedies (MAS's password scheme, Synapse's settings) are not errors.
    assert "mas_password_scheme_not_bcrypt" in hs1_entry["findings"]["remedied"] or \
        "mas_password_scheme_missing" in hs1_entry["findings"]["remedied"]
    assert hs1_entry["findings"]["errors"] == []
    # The import was verified against Synapse, and what clients meet was checked live, MAS (its stand-in)
    # included: Synapse names MAS's issuer, which it read from MAS.
    rows = mas_rows(fleet, "hs1")
    assert hs1_entry["verified"]["verdict"] == f"verified: {rows} rows in 9 entities, 0 missing"
    assert hs1_entry["verified"]["ok"] is True and hs1_entry["verified"]["missing"] == 0
    assert hs1_entry["live_checks"]["verdict"] == "live checks passed: 7 of 7"
    assert hs2_entry["verified"] is None
    assert report["hosts"]["hs3"]["outcome"] == "not run"
    md = open(glob.glob(os.path.join(fleet.report_dir, report["run_id"], "migrate.md"))[0]).read()
    assert "| hs2 | failed |" in md
    assert f"| verified: {rows} rows in 9 entities, 0 missing | live checks passed: 7 of 7 |" in md
    # Put hs2's MAS database back, and MAS with it, for the next run.
    fleet.pg.execute(f'ALTER DATABASE "{hs2.mas_db}_gone" RENAME TO "{hs2.mas_db}"')
    assert not mas2.running
    mas2.start()


def test_3_migration_of_the_fleet(fleet):
    run = fleet.playbook("migrate.yml")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    # No secret in the output (the SSH fleet's real run, test_06, scans a -vvv run's).
    for secret in SECRETS:
        assert secret not in run.stdout and secret not in run.stderr, f"secret {secret[:6]}... leaked"
    stats = recap(run.stdout)
    assert stats["hs1"]["changed"] == 0  # already delegated in the previous run
    assert stats["hs2"]["changed"] > 0 and stats["hs3"]["changed"] > 0
    for name, hs in fleet.hosts.items():
        assert hs.healthy(), hs.log_tail()
        config = yaml.safe_load(open(hs.homeserver_yaml))
        assert config["matrix_authentication_service"]["enabled"] is True
        assert config["password_config"]["enabled"] is False
        assert "oidc_providers" not in config
        mas = yaml.safe_load(open(hs.mas_yaml))
        v1 = [s for s in mas["passwords"]["schemes"] if s["version"] == 1][0]
        assert v1["algorithm"] == "bcrypt" and v1["unicode_normalization"] is True
        assert v1["secret"] == homeservers.PEPPER
        expected = fleet.expected[name]
        assert mas_counts(fleet, hs) == {"users": expected["users"], "deactivated": 1,
                                         "passwords": expected["passwords"], "links": expected["sso_links"],
                                         "sessions": expected["devices"], "tokens": expected["devices"]}
        # Legacy login is gone from Synapse (it delegates to MAS now).
        status, _body = hs.login("alice", homeservers.PASSWORDS["alice"])
        assert status != 200
        # The .well-known served over HTTP has the MAS keys and the old ones.
        status, served = homeservers.http("GET", hs.well_known_url)
        assert status == 200
        assert served["org.matrix.msc2965.authentication"] == {
            "issuer": f"https://auth.{hs.server_name}/", "account": f"{fleet.mas[name].url}/account/"}  # public_base
        assert served["m.homeserver"] == {"base_url": f"https://matrix.{hs.server_name}"}
        assert served["io.element.e2ee"] == {"default": True}
        state = json.load(open(os.path.join(hs.dir, "state", "state.json")))
        assert state["state"] == "delegated"
        backup = state["record"]["backup"]
        for path in glob.glob(os.path.join(backup, "**"), recursive=True):
            if os.path.isfile(path):
                assert os.stat(path).st_mode & 0o777 == 0o600
    report = latest_report(fleet)
    for name in WAVE_ORDER:
        entry = report["hosts"][name]
        assert entry["state"] == "delegated"
    assert report["hosts"]["hs2"]["outcome"] == "migrated"
    assert report["hosts"]["hs2"]["counts"]["users"] == 5
    assert report["hosts"]["hs2"]["backup_path"]
    assert report["hosts"]["hs1"]["outcome"] == "already delegated"
    for name in ("hs2", "hs3"):
        assert report["hosts"][name]["verified"]["verdict"] == \
            f"verified: {mas_rows(fleet, name)} rows in 9 entities, 0 missing", report["hosts"][name]
        assert report["hosts"][name]["live_checks"]["ok"] is True
    # The downtime holds only the window: MAS's config and Synapse's delegation were prepared before the stop,
    # and MAS runs on its new config (restarted on it in the preparation, started again after the import).
    for name in ("hs2", "hs3"):
        entry, hs, mas = report["hosts"][name], fleet.hosts[name], fleet.mas[name]
        seconds = {p["phase"]: p["seconds"] for p in entry["phase_seconds"]}
        phases = list(seconds)
        assert phases.index("prepare") < phases.index("synapse_stop"), phases
        assert entry["window_phases"] == ["synapse_stop", "mas_stop", "activate", "import", "mas_start",
                                          "synapse_start"], entry
        window = sum(seconds[p] for p in entry["window_phases"])
        assert abs(window - entry["downtime_seconds"]) < 1.5, (window, entry["downtime_seconds"])
        assert mas.running and mas.fingerprint == hashlib.sha256(open(hs.mas_yaml, "rb").read()).hexdigest()
        # No check run went before this fleet's runs: the report predicts nothing rather than a guess (the SSH
        # fleet's test_06 shows a check run's prediction beside the window measured).
        assert (entry["predicted_window_seconds"], entry["predicted_window"], entry["window_service_seconds"]) == \
            (None, None, None), entry
        print(f"\n{name}: before the stop: backup {seconds['backup']} s, preparation {seconds['prepare']} s; "
              f"downtime {entry['downtime_seconds']} s = " + ", ".join(f"{p} {seconds[p]}" for p in entry["window_phases"])
              + f"; after: well_known {seconds['well_known']} s")


def test_5_reimport_after_mas_logins_is_refused(fleet):
    hs1 = fleet.hosts["hs1"]
    # A user logs in through MAS (a browser session appears), then the operator rolls back keeping MAS...
    user_id = fleet.pg.execute("SELECT user_id FROM users WHERE username = 'alice'", hs1.mas_db)[0][0]
    fleet.pg.execute("INSERT INTO user_sessions (user_session_id, user_id, created_at) "
                     "VALUES (gen_random_uuid(), %s, now())", hs1.mas_db, (user_id,))
    run = fleet.playbook("rollback.yml", "-l", "hs1")
    assert run.returncode == 0, run.stdout[-6000:]
    # ...emptying MAS is refused now, and migrating again is refused by the preflight.
    run = fleet.playbook("rollback.yml", "-l", "hs1", "-e", "rollback_mas_database=empty")
    assert run.returncode != 0
    run = fleet.playbook("migrate.yml", "-l", "hs1")
    assert run.returncode != 0
    assert "users logged in through MAS since the import" in run.stdout
    assert hs1.healthy()


def test_5b_an_earlier_import_of_a_synapse_changed_since_is_refused_before_any_stop(fleet):
    hs1, mas1 = fleet.hosts["hs1"], fleet.mas["hs1"]
    # hs1 is legacy again, MAS holding the earlier import (kept by the rollback). Nobody logged in through MAS
    # (the session of step 5 gone), but Synapse changed since: a legacy login made a device and a token.
    fleet.pg.execute("DELETE FROM user_sessions", hs1.mas_db)
    status, body = hs1.login("bob", homeservers.PASSWORDS["bob"])
    assert status == 200, body
    fleet.expected["hs1"]["devices"] += 1
    pid, mas_pid, mas_before = hs1.pid(), mas1.pid(), fleet.pg.dump(hs1.mas_db)
    run = fleet.playbook("migrate.yml", "-l", "hs1")
    assert run.returncode != 0
    entry = latest_report(fleet)["hosts"]["hs1"]
    # Refused in the preflight (what the import would find only after the stop), naming what changed.
    assert entry["outcome"] == "preflight failed" and entry["phase_seconds"] == [], entry
    assert "MAS already holds an import of Synapse made on" in entry["error"], entry["error"]
    assert "access_tokens:" in entry["error"] and "the import does not merge" in entry["error"], entry["error"]
    # Nothing stopped, nothing changed.
    assert hs1.pid() == pid and mas1.pid() == mas_pid and fleet.pg.dump(hs1.mas_db) == mas_before
    assert hs1.healthy()


def test_6_rollback_brings_legacy_logins_back(fleet):
    run = fleet.playbook("rollback.yml", "-e", "rollback_mas_database=empty", "-e", "rollback_force=true")
    assert run.returncode == 0, run.stdout[-6000:]
    for name, hs in fleet.hosts.items():
        assert hs.healthy(), hs.log_tail()
        config = yaml.safe_load(open(hs.homeserver_yaml))
        assert "matrix_authentication_service" not in config
        assert config["password_config"]["enabled"] is True
        for who in ("alice", "bob", "admin"):
            status, body = hs.login(who, homeservers.PASSWORDS[who])
            assert status == 200, (name, who, body)
        status, served = homeservers.http("GET", hs.well_known_url)
        assert "org.matrix.msc2965.authentication" not in served
        assert host_state(hs) == "legacy"
        # MAS's database is back to its pre-import content (emptied), and the state record says so.
        assert mas_counts(fleet, hs)["users"] == 0
        # MAS answers again, restarted on its restored config.
        mas = fleet.mas[name]
        assert mas.running and mas.fingerprint == hashlib.sha256(open(hs.mas_yaml, "rb").read()).hexdigest()
        record = json.load(open(os.path.join(hs.dir, "state", "state.json")))
        # hs1 was on legacy authentication already (step 5): syn2mas_state leaves a record whose state does not
        # change as it is, so its `mas_database` still says what step 5 did (known gap, see the changelog).
        if name != "hs1":
            assert record["record"]["mas_database"] == "emptied", record
    # The report says from which state each host was rolled back, as the live checks found it.
    report = latest_report(fleet, "rollback")
    # (hs1 was rolled back keeping MAS in step 5: this run only emptied its MAS.)
    for name, entry in report["hosts"].items():
        before = "legacy" if name == "hs1" else "delegated"
        assert (entry["outcome"], entry["state_before"], entry["state"]) == ("rolled back", before, "legacy"), entry
    md = open(os.path.join(fleet.report_dir, report["run_id"], "rollback.md")).read()
    assert "| hs2 | rolled back | delegated → legacy |" in md, md


def test_7_rollback_of_a_legacy_host_changes_nothing(fleet):
    before = snapshot(fleet)
    mas_pids = {name: mas.pid() for name, mas in fleet.mas.items()}
    run = fleet.playbook("rollback.yml")
    assert run.returncode == 0, run.stdout[-6000:]
    assert {name: mas.pid() for name, mas in fleet.mas.items()} == mas_pids  # MAS not restarted either
    assert all(s["changed"] == 0 for s in recap(run.stdout).values()), recap(run.stdout)
    assert snapshot(fleet) == before  # Synapse was not even restarted (same pids)
    report = latest_report(fleet, "rollback")
    assert {e["outcome"] for e in report["hosts"].values()} == {"nothing to roll back (legacy)"}
