"""The runbook end to end, on real parts: three Synapse homeservers (real matrix-synapse, two releases)
on loopback ports, populated through Synapse's HTTP API, their databases and fresh MAS databases in one
test PostgreSQL cluster, nginx serving each .well-known, and the collection's playbooks run by
ansible-playbook against an inventory with the local connection.

The steps depend on each other and run in order (one module-scoped fleet):
check mode changes nothing -> a real run where hs2 fails mid-run (its MAS database becomes unreachable
once Synapse is stopped) is rolled back and stops the waves -> an import that verification finds
wrong (a test-only trigger in MAS) rolls hs2 back with MAS as it was -> a stop command that does not
return fails within synapse_service_stop_timeout, naming what is on Synapse's database, and is rolled back ->
the inventory's syn2mas_hold_down_on_failure keeps a failed host down -> a MAS that answers the gate and
then goes down (its stand-in fails after the gate's three questions) fails hs2's live checks after the
start and rolls it back -> the fixed fleet migrates -> a second run
changes nothing -> an illegal re-import is refused -> the rollback playbook brings legacy logins back.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re

import pytest
import yaml

from tests.support import homeservers
from tests.support.ansible_run import latest_report, recap, shown_diff
from tests.support.fleet import Fleet, running_fleet

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


def snapshot(fleet: Fleet, names=None) -> dict:
    """Every file under each homeserver's directory (configs, web root, state, backups) by hash, plus a
    dump of each database and the running Synapse's pid."""
    state = {}
    for name, hs in fleet.hosts.items():
        if names is not None and name not in names:
            continue
        files = {}
        for path in sorted(glob.glob(os.path.join(hs.dir, "**"), recursive=True)):
            if os.path.isfile(path) and not path.endswith((".log", ".pid")) and "/media/" not in path:
                with open(path, "rb") as handle:
                    files[os.path.relpath(path, hs.dir)] = hashlib.sha256(handle.read()).hexdigest()
        state[name] = {"files": files, "pid": hs.pid(),
                       "mas": fleet.pg.dump(hs.mas_db), "synapse_users": fleet.pg.execute(
                           "SELECT name, password_hash, deactivated FROM users ORDER BY name", hs.synapse_db)}
    return state


def host_state(hs) -> str:
    """The state record, as syn2mas_state reads it (no file yet: legacy)."""
    path = os.path.join(hs.dir, "state", "state.json")
    if not os.path.exists(path):
        return "legacy"
    with open(path) as handle:
        return json.load(handle)["state"]


def mas_counts(fleet: Fleet, hs) -> dict:
    rows = fleet.pg.execute("""
        SELECT 'users', count(*) FROM users UNION ALL
        SELECT 'deactivated', count(*) FROM users WHERE deactivated_at IS NOT NULL UNION ALL
        SELECT 'passwords', count(*) FROM user_passwords UNION ALL
        SELECT 'links', count(*) FROM upstream_oauth_links UNION ALL
        SELECT 'sessions', count(*) FROM compat_sessions UNION ALL
        SELECT 'tokens', count(*) FROM compat_access_tokens""", hs.mas_db)
    return dict(rows)


def host_configs(hs) -> dict:
    """The configuration files a run edits on `hs`: homeserver.yaml, and MAS's config (edited in the preparation,
    before Synapse stops: a rollback puts both back)."""
    return {path: open(path, "rb").read() for path in (hs.homeserver_yaml, hs.mas_yaml)}


def assert_back_on_legacy_auth(fleet, hs, configs_before: dict) -> None:
    """`hs` after a rollback: its homeserver.yaml and MAS's config as before, its state `legacy`, Synapse healthy,
    and a password login answered by Synapse itself (that login makes one more device)."""
    assert host_configs(hs) == configs_before
    assert host_state(hs) == "legacy"
    assert hs.healthy(), hs.log_tail()
    status, body = hs.login("alice", homeservers.PASSWORDS["alice"])
    assert status == 200, body
    fleet.expected[hs.name]["devices"] += 1


# What a check run cannot do of the window (the real stops, and the starts until healthy): given, as from a rehearsal.
SERVICE_SECONDS = 4.5


def windows(out: str) -> list:
    """Per wave, the tasks ansible-playbook showed from the mark before Synapse's stop until the mark of Synapse
    healthy again: the downtime window's tasks (those of the last wave last)."""
    found = []
    for start in [m.start() for m in re.finditer(r"^TASK \[Phase synapse_stop", out, re.M)]:
        end = out.index("TASK [Synapse healthy again", start)
        found.append(re.findall(r"^TASK \[(.*?)\] \**$", out[start:end], re.M))
    return found


def test_1_check_mode_changes_nothing(fleet):
    before = snapshot(fleet)
    run = fleet.playbook("migrate.yml", "--check", "--diff", "-e", f"syn2mas_window_service_seconds={SERVICE_SECONDS}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    after = snapshot(fleet)
    assert after == before
    out = run.stdout
    # Every file's diff shows the lines that change: homeserver.yaml delegates to MAS, MAS's config accepts
    # Synapse's bcrypt hashes, .well-known names MAS's issuer (secrets redacted).
    for hs in fleet.hosts.values():
        # (each diff printed on failure: empty when the run showed none)
        synapse_diff = shown_diff(out, hs.homeserver_yaml)
        assert re.search(r"^\+matrix_authentication_service:$", synapse_diff, re.M), synapse_diff
        assert re.search(r"^\+  enabled: true$", synapse_diff, re.M), synapse_diff
        assert re.search(r"^\+  secret: <redacted>$", synapse_diff, re.M), synapse_diff
        mas_diff = shown_diff(out, hs.mas_yaml)
        assert re.search(r"^\+ +algorithm: bcrypt$", mas_diff, re.M), mas_diff
        well_known_diff = shown_diff(out, hs.well_known)
        assert re.search(r'^\+ +"org\.matrix\.msc2965\.authentication": \{$', well_known_diff, re.M), well_known_diff
    for secret in SECRETS:
        assert secret not in out + run.stderr
    # The import's dry-run counts, from the real (rolled back) import.
    assert out.count("Dry run: users 5, passwords 3") == 3, out
    assert "would stop Synapse" in out
    for hs in fleet.hosts.values():
        assert hs.healthy()
    report = latest_report(fleet)
    assert report["check_mode"] is True
    assert {h: e["outcome"] for h, e in report["hosts"].items()} == {
        h: "would migrate (check mode)" for h in WAVE_ORDER}
    # Nothing was stopped and no backup written: the report shows neither a downtime nor a backup path.
    for entry in report["hosts"].values():
        assert entry["downtime_seconds"] is None and entry["synapse_down"] is False, entry
        assert entry["backup_path"] is None, entry
    md = open(os.path.join(fleet.report_dir, report["run_id"], "migrate.md")).read()
    assert "/backups/" not in md, md
    # The window checks no role's arguments: the preparation did, before the stop.
    for tasks in windows(out):
        assert not [t for t in tasks if "Validating arguments" in t], tasks
    prepare = out[out.index("TASK [Phase prepare"):out.index("TASK [Phase synapse_stop")]
    assert "Validating arguments against arg spec 'check_arguments'" in prepare
    # The predicted window is made of what this run measured: its own window (every task of it, the dry-run import
    # among them) from its phase marks, verify's reads measured by the dry run, and the service seconds it was given.
    for name, entry in report["hosts"].items():
        parts = entry["predicted_window"]
        seconds = {p["phase"]: p["seconds"] for p in entry["phase_seconds"]}
        check_window = sum(seconds[p] for p in entry["window_phases"])
        assert abs(parts["check_window_seconds"] - check_window) < 0.5, (name, parts, seconds)
        assert parts["check_window_seconds"] > entry["import_seconds"] > 0, (name, parts, entry["import_seconds"])
        assert 0 < parts["verify_seconds"] < parts["check_window_seconds"], (name, parts)
        assert parts["service_seconds"] == SERVICE_SECONDS
        assert entry["predicted_window_seconds"] == pytest.approx(sum(parts.values()), abs=0.06), entry
        print(f"\n{name}: predicted {entry['predicted_window_seconds']} s = {parts}; "
              f"{len(windows(out)[-1])} tasks in the last wave's window")


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


def test_2b_a_verify_mismatch_rolls_the_host_back_with_mas_as_it_was(fleet):
    hs2 = fleet.hosts["hs2"]
    # Test-only sabotage: a trigger in hs2's MAS rewrites every password hash the import loads, so the
    # import commits rows that differ from Synapse's, and only the verification after it can tell.
    fleet.pg.execute("CREATE FUNCTION syn2mas_test_plant() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$BEGIN NEW.hashed_password := 'planted by the test'; RETURN NEW; END$$", hs2.mas_db)
    fleet.pg.execute("CREATE TRIGGER syn2mas_test_plant BEFORE INSERT ON user_passwords "
                     "FOR EACH ROW EXECUTE FUNCTION syn2mas_test_plant()", hs2.mas_db)
    try:
        mas_before = fleet.pg.dump(hs2.mas_db)
        configs_before = host_configs(hs2)
        run = fleet.playbook("migrate.yml", "-l", "hs2")
        mas_after = fleet.pg.dump(hs2.mas_db)
    finally:
        fleet.pg.execute("DROP TRIGGER IF EXISTS syn2mas_test_plant ON user_passwords; "
                         "DROP FUNCTION IF EXISTS syn2mas_test_plant()", hs2.mas_db)
    assert run.returncode != 0
    assert recap(run.stdout)["hs2"]["failed"] == 1
    entry = latest_report(fleet)["hosts"]["hs2"]
    assert entry["outcome"] == "failed" and entry["rolled_back"] is True, entry
    assert entry["failed_phase"] == "import"
    # The verdict names what differs, and the import's committed rows went with the rollback: MAS holds
    # again exactly what it held before the run (the trigger included), so the next run starts afresh.
    assert entry["verified"]["ok"] is False and entry["verified"]["damaged"] == ["passwords"], entry["verified"]
    assert entry["verified"]["different"] == fleet.expected["hs2"]["passwords"]
    assert entry["verified"]["verdict"].startswith("MISMATCH:")
    assert mas_after == mas_before
    # Synapse is back on its own authentication, with its configuration as it was, and logins work.
    assert_back_on_legacy_auth(fleet, hs2, configs_before)


def test_2c_a_stop_that_hangs_is_bounded_named_and_rolled_back(fleet):
    hs2 = fleet.hosts["hs2"]
    # A real client holds a long transaction on Synapse's database (as a nightly pg_dump does), and the
    # stop command does not return. (Synapse's own background index builds wait behind such a transaction,
    # and its shutdown with them.) By the rollback's stop, the backup has ended: Synapse stops for real.
    hung = os.path.join(fleet.base, "hs2-stop-hung")
    end_backup = (f"{fleet.pg.bin('psql')} -X -q -h {fleet.pg.sockdir} -p {fleet.pg.port} -U postgres -d postgres -c "
                  "\"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nightly pg_dump'\"")
    stop = f"if [ -e {hung} ]; then {end_backup} >/dev/null; {hs2.stop_command}; else touch {hung}; sleep 3600; fi"
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
    assert f"synapse_service_stop_timeout is {timeout} s" in entry["error"], entry["error"]
    assert "nightly pg_dump" in entry["error"] and "idle in transaction" in entry["error"], entry["error"]
    assert "in a transaction for" in entry["error"], entry["error"]
    # Synapse is up again on its legacy authentication, its configuration as it was.
    assert entry["synapse_down"] is False
    assert_back_on_legacy_auth(fleet, hs2, configs_before)


def test_2d_hold_down_on_failure_from_the_inventory_keeps_synapse_down(fleet):
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


def test_2e_mas_down_after_the_start_fails_the_live_checks_and_rolls_the_host_back(fleet):
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


def test_2g_a_failure_in_the_preparation_restores_mas_and_never_stops_synapse(fleet):
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


def test_3_migration_of_the_fleet(fleet):
    run = fleet.playbook("migrate.yml", "-vvv")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    # No secret in any task output of a -vvv run.
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
        # Beside the window measured, the check run's prediction, and what only this real run spent (the window
        # minus what the check run measured of it): the service seconds to give the next prediction.
        parts = entry["predicted_window"]
        assert entry["predicted_window_seconds"] == pytest.approx(sum(parts.values()), abs=0.06), entry
        assert entry["window_service_seconds"] == pytest.approx(
            entry["downtime_seconds"] - parts["check_window_seconds"] - parts["verify_seconds"], abs=0.06), entry
        print(f"\n{name}: predicted {entry['predicted_window_seconds']} s ({parts}), measured "
              f"{entry['downtime_seconds']} s, of which only the real run's {entry['window_service_seconds']} s; "
              f"{len(windows(run.stdout)[-1])} tasks in the last wave's window")
        print(f"\n{name}: before the stop: backup {seconds['backup']} s, preparation {seconds['prepare']} s; "
              f"downtime {entry['downtime_seconds']} s = " + ", ".join(f"{p} {seconds[p]}" for p in entry["window_phases"])
              + f"; after: well_known {seconds['well_known']} s")


def test_4_second_run_changes_nothing(fleet):
    before = snapshot(fleet)
    run = fleet.playbook("migrate.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    stats = recap(run.stdout)
    assert all(s["changed"] == 0 for s in stats.values()), stats
    after = snapshot(fleet)
    assert after == before


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
