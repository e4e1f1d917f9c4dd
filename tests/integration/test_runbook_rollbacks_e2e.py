"""One host's failures in the runbook, each rolled back, end to end on real parts: one Synapse homeserver
(real matrix-synapse) on a loopback port, populated through Synapse's HTTP API, its database and a fresh MAS
database in the test PostgreSQL cluster, MAS's stand-in (tests/support/mas_stand_in.py), nginx serving its
.well-known, and migrate.yml run by ansible-playbook against an inventory with the local connection.

The host is hs2, the host that fails in test_runbook_e2e.py, here on a fleet of its own (so that this file and
that one run on two workers at once). Each test breaks one thing for one run of migrate.yml and checks that the
host is back where it was: a verify mismatch (a test-only trigger in MAS) rolls it back with MAS as it was; a
stop command that does not return fails within synapse_service_stop_timeout, naming what is on Synapse's
database; the inventory's syn2mas_hold_down_on_failure keeps the failed host down; a MAS that answers the gate
and then goes down fails the live checks after the start; a MAS restart that does not become healthy fails the
preparation without Synapse ever stopping. Every test leaves hs2 on its legacy authentication with MAS running,
as the next one needs it.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from tests.support import homeservers
from tests.support.ansible_run import latest_report, recap
from tests.support.fleet import assert_back_on_legacy_auth, host_configs, host_state, running_fleet, snapshot
from tests.support.processes import running

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def fleet(pg):
    with running_fleet(pg, ("hs2",)) as fleet:
        yield fleet


def _damage_after_the_commit(fleet, mas_db: str, stop: threading.Event, planted: list) -> None:
    """Test-only sabotage: once the import's sessions on MAS's database have ended and MAS holds its marker,
    every password hash is rewritten, before verify reads MAS: what an admin's script or a MAS started too early
    would do. It watches from the cluster's `postgres` database, so that MAS's database sees no other client while
    the import checks for them. It watches for syn2mas's sessions, not for their writing: a small import writes
    for less time than one look takes, and a run that went through unsabotaged failed every test of this file."""
    watcher = fleet.pg.connect("postgres")
    try:
        seen_import = False
        while not stop.wait(0.02):
            with watcher.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'syn2mas'",
                            (mas_db,))
                connected = cur.fetchone()[0] > 0
            if connected:
                seen_import = True
            elif seen_import:
                marked = fleet.pg.execute("SELECT obj_description('users'::regclass, 'pg_class')", mas_db)[0][0]
                if marked:
                    fleet.pg.execute("UPDATE user_passwords SET hashed_password = 'planted by the test'", mas_db)
                    planted.append(True)
                    return
                seen_import = False  # that session did not commit: wait for the next one
    finally:
        watcher.close()


def test_a_verify_mismatch_rolls_the_host_back_with_mas_as_it_was(fleet):
    hs2 = fleet.hosts["hs2"]
    # Every password hash rewritten right after the import's commit (a trigger would be refused before any
    # write, mas_row_rewriters): MAS then differs from what the import wrote, and only verify can tell.
    mas_before = fleet.pg.dump(hs2.mas_db)
    configs_before = host_configs(hs2)
    stop, planted = threading.Event(), []
    saboteur = threading.Thread(target=_damage_after_the_commit, args=(fleet, hs2.mas_db, stop, planted), daemon=True)
    saboteur.start()
    try:
        run = fleet.playbook("migrate.yml", "-l", "hs2")
    finally:
        stop.set()
        saboteur.join(timeout=30)
    mas_after = fleet.pg.dump(hs2.mas_db)
    assert planted, run.stdout[-6000:]
    assert run.returncode != 0
    assert recap(run.stdout)["hs2"]["failed"] == 1
    entry = latest_report(fleet)["hosts"]["hs2"]
    assert entry["outcome"] == "failed" and entry["rolled_back"] is True, entry
    assert entry["failed_phase"] == "import"
    # The verdict names what differs, and the import's committed rows went with the rollback: MAS holds
    # again exactly what it held before the run, so the next run starts afresh.
    assert entry["verified"]["ok"] is False and entry["verified"]["damaged"] == ["passwords"], entry["verified"]
    assert entry["verified"]["different"] == fleet.expected["hs2"]["passwords"]
    assert entry["verified"]["verdict"].startswith("MISMATCH:")
    assert mas_after == mas_before
    # Synapse is back on its own authentication, with its configuration as it was, and logins work.
    assert_back_on_legacy_auth(fleet, hs2, configs_before)


def test_a_stop_that_hangs_is_bounded_named_and_rolled_back(fleet):
    hs2 = fleet.hosts["hs2"]
    # A real client holds a long transaction on Synapse's database (as a nightly pg_dump does), and the
    # stop command does not return. (Synapse's own background index builds wait behind such a transaction,
    # and its shutdown with them.) By the rollback's stop, the backup has ended: Synapse stops for real.
    hung = os.path.join(fleet.base, "hs2-stop-hung")
    end_backup = (f"{fleet.pg.bin('psql')} -X -q -h {fleet.pg.sockdir} -p {fleet.pg.port} -U postgres -d postgres -c "
                  "\"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nightly pg_dump'\"")
    hangs = "sleep 3593"  # a duration no other test sleeps, to find the process again
    stop = f"if [ -e {hung} ]; then {end_backup} >/dev/null; {hs2.stop_command}; else touch {hung}; {hangs}; fi"
    timeout = 10
    fleet.write_inventory({"hs2": {"synapse_service_stop_command": stop, "synapse_service_stop_timeout": timeout}})
    configs_before = host_configs(hs2)
    backup = fleet.pg.connect(hs2.synapse_db, autocommit=False, application_name="nightly pg_dump")
    try:
        with backup.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT count(*) FROM users")
        run = fleet.playbook("migrate.yml", "-l", "hs2")
    finally:
        backup.close()
        fleet.write_inventory()
    assert run.returncode != 0
    assert recap(run.stdout).get("hs2", {}).get("failed") == 1, run.stdout[-8000:] + run.stderr[-3000:]
    entry = latest_report(fleet)["hosts"]["hs2"]
    assert entry["outcome"] == "failed" and entry["rolled_back"] is True, entry
    assert entry["failed_phase"] == "synapse_stop"
    # It failed within the bound, saying what it waited for and what was on Synapse's database.
    stop_seconds = [p["seconds"] for p in entry["phase_seconds"] if p["phase"] == "synapse_stop"][0]
    assert timeout <= stop_seconds < timeout + 30, entry["phase_seconds"]
    assert "Synapse did not stop (Stop Synapse (operator's command): Timeout exceeded" in entry["error"], entry["error"]
    assert running(hangs) == [], "the stop command that hung is still running"
    assert f"synapse_service_stop_timeout is {timeout} s" in entry["error"], entry["error"]
    assert "nightly pg_dump" in entry["error"] and "idle in transaction" in entry["error"], entry["error"]
    assert "in a transaction for" in entry["error"], entry["error"]
    # Synapse is up again on its legacy authentication, its configuration as it was.
    assert entry["synapse_down"] is False
    assert_back_on_legacy_auth(fleet, hs2, configs_before)


def test_hold_down_on_failure_from_the_inventory_keeps_synapse_down(fleet):
    hs2 = fleet.hosts["hs2"]
    # The first stop stops Synapse, then fails; the rollback's stop succeeds on the stopped Synapse.
    failed_once = os.path.join(fleet.base, "hs2-stop-failed")
    stop = f"{hs2.stop_command}; if [ ! -e {failed_once} ]; then touch {failed_once}; exit 3; fi"
    fleet.write_inventory({"hs2": {"synapse_service_stop_command": stop, "syn2mas_hold_down_on_failure": True}})
    configs_before = host_configs(hs2)
    try:
        run = fleet.playbook("migrate.yml", "-l", "hs2")
    finally:
        fleet.write_inventory()
    assert run.returncode != 0
    assert recap(run.stdout).get("hs2", {}).get("failed") == 1, run.stdout[-8000:] + run.stderr[-3000:]
    report = latest_report(fleet)
    entry = report["hosts"]["hs2"]
    assert entry["outcome"] == "failed" and entry["rolled_back"] is True, entry
    # Held down as the inventory asked: rolled back, but not started again, and the report says so.
    assert not hs2.healthy() and hs2.pid() is None
    assert entry["synapse_down"] is True and entry["downtime_seconds"] is None
    md = open(os.path.join(fleet.report_dir, report["run_id"], "migrate.md")).read()
    assert "| hs2 | failed |" in md and "still down" in md
    assert host_configs(hs2) == configs_before
    assert host_state(hs2) == "legacy"
    # The operator starts it when ready: legacy logins work.
    hs2.start()
    status, body = hs2.login("alice", homeservers.PASSWORDS["alice"])
    assert status == 200, body
    fleet.expected["hs2"]["devices"] += 1


def test_mas_down_after_the_start_fails_the_live_checks_and_rolls_the_host_back(fleet):
    hs2, mas = fleet.hosts["hs2"], fleet.mas["hs2"]
    mas_before = fleet.pg.dump(hs2.mas_db)
    configs_before = host_configs(hs2)
    mas_config_before = configs_before[hs2.mas_yaml]
    # The window's start of MAS answers its health once, then MAS is down (503); the rollback's start is a
    # healthy MAS again.
    once = os.path.join(fleet.base, "hs2-mas-fails-once")
    start = f"if [ ! -e {once} ]; then touch {once}; {mas.failing_start_command(1)}; else {mas.start_command}; fi"
    fleet.write_inventory({"hs2": {"mas_service_start_command": start}})
    try:
        run = fleet.playbook("migrate.yml", "-l", "hs2")
    finally:
        fleet.write_inventory()
    assert run.returncode != 0
    entry = latest_report(fleet)["hosts"]["hs2"]
    assert entry["outcome"] == "failed" and entry["rolled_back"] is True, entry
    # Synapse had started on MAS: the live checks are what failed, naming MAS's /health.
    assert "synapse_start" in [p["phase"] for p in entry["phase_seconds"]], entry["phase_seconds"]
    assert "live checks FAILED: " in entry["error"] and "mas_health" in entry["error"], entry["error"]
    assert entry["live_checks"]["ok"] is False, entry["live_checks"]
    failed = {f["check"]: f["url"] for f in entry["live_checks"]["findings"] if f["level"] == "ERROR"}
    assert failed.get("mas_health") == f"{mas.url}/health", entry["live_checks"]
    # Rolled back: MAS's database as before the run, Synapse on its own authentication, logins work, and MAS
    # answers again, restarted on its config as it was.
    assert fleet.pg.dump(hs2.mas_db) == mas_before
    assert host_configs(hs2) == configs_before
    assert mas.running and mas.fingerprint == hashlib.sha256(mas_config_before).hexdigest()
    assert homeservers.http("GET", f"{mas.url}/health")[0] == 200
    assert_back_on_legacy_auth(fleet, hs2, configs_before)


def test_a_failure_in_the_preparation_restores_mas_and_never_stops_synapse(fleet):
    """MAS's restart on its new config does not become healthy: MAS's config is put back and MAS restarted on
    it; Synapse was never stopped (same pid), and the report says so."""
    hs2, mas = fleet.hosts["hs2"], fleet.mas["hs2"]
    mas_config_before = open(hs2.mas_yaml, "rb").read()
    before = snapshot(fleet, ["hs2"])
    starts = mas.starts
    once = os.path.join(fleet.base, "hs2-mas-restart-fails-once")
    failing = f"{mas.stop_command} && {mas.failing_start_command(0)}"
    restart = f"if [ ! -e {once} ]; then touch {once}; {failing}; else {mas.restart_command}; fi"
    fleet.write_inventory({"hs2": {"mas_service_restart_command": restart, "mas_service_start_timeout": 5}})
    try:
        run = fleet.playbook("migrate.yml", "-l", "hs2")
    finally:
        fleet.write_inventory()
    assert run.returncode != 0
    entry = latest_report(fleet)["hosts"]["hs2"]
    assert entry["outcome"] == "failed" and entry["failed_phase"] == "prepare", entry
    assert [p["phase"] for p in entry["phase_seconds"]] == ["backup", "prepare"], entry["phase_seconds"]
    assert entry["synapse_down"] is False and entry["downtime_seconds"] is None, entry
    assert f"MAS did not become healthy at {mas.url}/health" in entry["error"], entry["error"]
    assert "Synapse was never stopped" in entry["error"], entry["error"]
    assert "MAS's config restored from the backup and MAS restarted on it: MAS left as it was" in entry["error"]
    # MAS: its config as it was, restarted on it (twice: the failed restart, then the one on the restored config).
    assert open(hs2.mas_yaml, "rb").read() == mas_config_before
    assert mas.starts == starts + 2 and mas.fingerprint == hashlib.sha256(mas_config_before).hexdigest()
    assert homeservers.http("GET", f"{mas.url}/health")[0] == 200
    # Synapse never stopped: same pid; its files as they were (the run's backup aside).
    after = snapshot(fleet, ["hs2"])
    assert after["hs2"]["pid"] == before["hs2"]["pid"]
    assert {k: v for k, v in after["hs2"]["files"].items() if not k.startswith("backups/")} == \
        {k: v for k, v in before["hs2"]["files"].items() if not k.startswith("backups/")}
    assert host_state(hs2) == "legacy" and hs2.healthy()
