"""The runbook on a fleet in the shape real users run (tests/support/ssh_fleet.py): every host reached over
real SSH as an admin who becomes root with sudo, Debian's /usr/bin/python3 as the host Python with nothing
added, Synapse (real, in its own venv on Debian's Python) run as an unprivileged user from the Debian
package's layout (homeserver.yaml + conf.d/), PostgreSQL over TCP with passwords, MAS's config as
`mas-cli config generate` writes it; the collection built with `ansible-galaxy collection build`,
installed into a clean path and run from a controller venv that has only requirements-controller.txt.

The hosts:
  hs1  an SSO provider, homeserver.yaml rewritten in place, and MAS on a host of its own (hs1-mas): MAS's
       config.yaml exists only there (that host's sshd has its own mount namespace), as `mas-cli config
       generate` writes it, with no provider in MAS's database; mas-cli there is a stand-in
       (tests/support/mas_cli_stand_in.py) whose `config sync` writes MAS's real provider rows
  hs2  a Synapse worker (a real generic_worker through Redis), stopped before and started after Synapse
  hs3  databases reached only by URI override (the configs name compose-style hosts that do not resolve)
  hs4, hs5  the plain Debian shape, with a conf.d override file
  hs6  a host missing a requirement: the database work is pointed at a Python without psycopg2

The steps depend on each other and run in order on one module-scoped fleet: the advisor; the dry run
changes nothing and predicts the window from what it measured (the real run shows it beside the window it
measures); the rollback playbook on never-migrated hosts changes nothing; one run with a failure in each
phase on a different host (and hs6 failing its preflight) ends with every Synapse healthy on legacy
authentication; the real run migrates; a second run changes nothing; verify.yml proves the migrated hosts
(and finds the one whose MAS the test tampered with); the rollback playbook brings password
logins and the old access tokens back and removes every file the run created. A step that finds a
Synapse down starts it again first, as an operator would (before the migration, one that cannot start
gets back the configs it had before any run), so that each step reports on its own.

The runs use SSH pipelining (ANSIBLE_PIPELINING=1, fewer round trips per task), except the real run
(test_06), which runs with ansible's defaults exactly, as a controller without any configuration does.

The inventory uses the documented role variables only: hs1 gives syn2mas_mas_host, syn2mas_mas_cli and
syn2mas_mas_backup_dir; hs1-hs5 leave the interpreter for the database work
to the preflight's discovery (from the running Synapse), hs6 names one (syn2mas_python); hs3 gives
syn2mas_synapse_database_uri / syn2mas_mas_database_uri; hs2 synapse_service_worker_start_command /
synapse_service_worker_stop_command; syn2mas_synapse_config names conf.d/ as a directory, as Synapse reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import subprocess

import psycopg2
import pytest
from _syn2mas.config import parse_provider_id

from tests.support import homeservers
from tests.support.ansible_run import latest_report, recap, shown_diff, window_tasks
from tests.support.ssh_fleet import ADMIN_USER, CONTROLLER_VENV, DEBIAN_PYTHON, DEFAULT_SPECS, PRISTINE, SshFleet

pytestmark = pytest.mark.timeout(1800)

SPECS = DEFAULT_SPECS  # hs1 SSO in place, hs2 worker, hs3 URI override, hs4/hs5 plain, hs6 bare Python
MIGRATING = ("hs1", "hs2", "hs3", "hs4", "hs5")
NOT_HS6 = "synapse:!hs6"
ONE_WAVE = ("-e", '{"syn2mas_serial": ["100%"]}')
# What a check run cannot do of the window (the real stops, and the starts until healthy): given to the check
# run, as from a rehearsal.
SERVICE_SECONDS = 4.5
# What a user lists to see that nothing changed: configs, web root, state, backups.
WATCHED = ("etc", "var/www", "var/lib/syn2mas", "var/backups")
# The files a rollback must bring back exactly as they were: everything but the state and backups.
CONFIGS = PRISTINE


@pytest.fixture(scope="module")
def fleet(pg):
    fleet = SshFleet(pg, SPECS)
    try:
        fleet.setup()
        fleet.hosts["hs5"].stale_well_known()  # an old web root the operator still has (see step 5)
        fleet.baseline = {name: hs.files(CONFIGS) for name, hs in fleet.hosts.items()}
        fleet.keep_pristine()
        yield fleet
    finally:
        print("\nSSH fleet timings (s):", json.dumps(fleet.timings, indent=1))
        fleet.teardown()


# -- helpers -----------------------------------------------------------------------------------------


def run(fleet: SshFleet, playbook: str, *args: str, limit: str | None = None, pipelining: bool = True):
    """A playbook run whose output never holds a secret (SSH pipelining on unless asked: SshFleet.playbook)."""
    result = fleet.playbook(playbook, *args, limit=limit, pipelining=pipelining)
    for secret in fleet.secrets():
        assert secret not in result.output, f"a secret ({secret[:6]}...) is in the output of {result.log}"
    return result


def tail(result, n: int = 3000) -> str:
    """Why a run failed: its failed tasks, then the end of its output."""
    failures = [line[:1500] for line in result.stdout.splitlines() if line.startswith(("fatal:", "failed:"))]
    return (f"(full log: {result.log})\n" + "\n".join(failures) + "\n...\n" + result.stdout[-n:]
            + result.stderr[-2000:])


def snapshot(fleet: SshFleet, names=MIGRATING) -> dict:
    """Every watched file (content, mode, owner), the running Synapse and worker, both databases."""
    state = {}
    for name in names:
        hs = fleet.hosts[name]
        state[name] = {
            "files": hs.files(WATCHED), "pid": hs.pid(), "worker_pid": hs.worker_pid(),
            "mas": fleet.pg.dump(hs.mas_db),
            "synapse_users": fleet.pg.execute("SELECT name, password_hash, deactivated FROM users ORDER BY name",
                                              hs.synapse_db),
        }
    return state


def changes(before: dict, after: dict) -> list[str]:
    """What differs between two snapshots, said briefly: changed files, restarted processes, databases."""
    found = []
    for name in before:
        b, a = before[name], after[name]
        files = sorted(p for p in set(b["files"]) | set(a["files"]) if b["files"].get(p) != a["files"].get(p))
        if files:
            found.append(f"{name}: files {files}")
        for key in ("pid", "worker_pid"):
            if b[key] != a[key]:
                found.append(f"{name}: {key} {b[key]} -> {a[key]}")
        if b["mas"] != a["mas"]:
            found.append(f"{name}: MAS's database changed")
        if b["synapse_users"] != a["synapse_users"]:
            found.append(f"{name}: Synapse's users changed")
    return found


def host_state(hs) -> str:
    if not os.path.exists(hs.state_file):
        return "legacy"
    with open(hs.state_file) as handle:
        return json.load(handle)["state"]


class Problems:
    """What is wrong, host by host: a step checks every host before it fails, naming all of them."""

    def __init__(self, found=()):
        self.found: list[str] = list(found)

    def check(self, ok, what: str) -> bool:
        if not ok:
            self.found.append(what)
        return bool(ok)

    def assert_none(self) -> None:
        assert not self.found, "\n".join(self.found)


def check_legacy_and_healthy(problems: Problems, hs) -> None:
    """Synapse answers and runs its own authentication, as configured and as a client sees it."""
    if not problems.check(hs.healthy(), f"{hs.name}: Synapse is down; log: {hs.log_tail(5)}"):
        return
    if hs.spec.worker:
        problems.check(hs.worker_healthy(), f"{hs.name}: the worker is down")
    config = hs.effective_config()
    problems.check(not (config.get("matrix_authentication_service") or {}).get("enabled"),
                   f"{hs.name}: Synapse's config still delegates to MAS")
    problems.check((config.get("password_config") or {}).get("enabled") is True,
                   f"{hs.name}: password_config.enabled is not true")
    status, body = hs.login("alice", homeservers.PASSWORDS["alice"])
    if problems.check(status == 200, f"{hs.name}: password login fails: {status} {body}"):
        hs.expected["devices"] += 1  # that login made a device, which the import brings over later


def check_mas_on_its_own_host(problems: Problems, hs) -> None:
    """MAS's config is on MAS's host only: the Synapse host never got a copy of it, nor of its backup."""
    absent = hs.fleet.ssh(hs.name, f"sudo -n test -e {hs.mas_yaml} || echo absent")
    problems.check(absent.stdout.strip() == "absent", f"{hs.name}: MAS's config path exists on the Synapse host")
    copies = [p for p in hs.files(("etc", "var")) if ":" not in p and os.path.basename(p).startswith("config.yaml")]
    problems.check(not copies, f"{hs.name}: a copy of MAS's config on the Synapse host: {copies}")


def check_stopped_in_preflight(problems: Problems, fleet: SshFleet, name: str, error: str, why: str) -> None:
    """Check mode (with --diff) and the run both fail the host in its preflight, `error` in its report entry,
    before any phase ran (so before Synapse is stopped)."""
    for args in (("--check", "--diff"), ()):
        result = run(fleet, "migrate", *args, limit=name)
        entry = latest_report(fleet)["hosts"][name]
        what = "check mode" if args else "the run"
        problems.check(result.rc != 0, f"{what} did not fail with {why}: {tail(result, 1500)}")
        problems.check(entry["outcome"] == "preflight failed", f"{what}: outcome {entry['outcome']}")
        problems.check(error in (entry["error"] or ""), f"{what}: error {entry['error']}")
        problems.check(entry["phase_seconds"] == [], f"{what}: phases run {entry['phase_seconds']}")


def check_unchanged(problems: Problems, fleet: SshFleet, before: dict) -> None:
    """Nothing changed on the hosts of `before` (a snapshot): files, Synapse's and the worker's pids, both
    databases."""
    found = changes(before, snapshot(fleet, tuple(before)))
    problems.check(not found, f"changed: {found}")


def mas_counts(fleet: SshFleet, hs) -> dict:
    return dict(fleet.pg.execute("""
        SELECT 'users', count(*) FROM users UNION ALL
        SELECT 'deactivated', count(*) FROM users WHERE deactivated_at IS NOT NULL UNION ALL
        SELECT 'passwords', count(*) FROM user_passwords UNION ALL
        SELECT 'links', count(*) FROM upstream_oauth_links UNION ALL
        SELECT 'sessions', count(*) FROM compat_sessions UNION ALL
        SELECT 'tokens', count(*) FROM compat_access_tokens""", hs.mas_db))


# -- the steps ---------------------------------------------------------------------------------------


def test_01_the_fleet_is_what_users_run(fleet):
    """The shape itself: SSH with host keys, sudo, a bare host Python, Synapse as its own user,
    root:<synapse group> 0640 configs, the built collection, a controller venv without host libraries."""
    for name, hs in fleet.hosts.items():
        probe = fleet.ssh(name, f"id -un; sudo -n id -u; {DEBIAN_PYTHON} -c 'import psycopg2' 2>&1 | tail -1")
        assert probe.returncode == 0, probe.stderr
        lines = probe.stdout.splitlines()
        assert lines[0] == ADMIN_USER and lines[1] == "0"
        assert "No module named 'psycopg2'" in lines[2]
        # Synapse (and its worker) run as the host's unprivileged user.
        for pid in filter(None, (hs.pid(), hs.worker_pid())):
            with open(f"/proc/{pid}/status") as handle:
                uid = int(re.search(r"^Uid:\s+(\d+)", handle.read(), re.M).group(1))
            assert uid == pwd.getpwnam(hs.user).pw_uid != 0
        for path in hs.config_files():
            st = os.stat(path)
            assert (st.st_uid, oct(st.st_mode & 0o777)) == (0, "0o640"), path
        if hs.spec.worker:
            assert hs.worker_pid() and hs.worker_healthy()
    # hs1's MAS config exists on MAS's host only: the Synapse host does not have the path.
    hs1 = fleet.hosts["hs1"]
    there = fleet.ssh(hs1.mas.name, f"sudo -n test -f {hs1.mas_yaml} && echo present")
    here = fleet.ssh("hs1", f"sudo -n test -e {hs1.mas_yaml} || echo absent")
    assert there.stdout.strip() == "present" and here.stdout.strip() == "absent", (there, here)
    # So is the file its config names for MAS's database password: the runbook reads it there.
    assert (hs1.mas_config()["database"] or {}).get("password_file") == hs1.mas_db_password_file
    assert "uri" not in hs1.mas_config()["database"] and "password" not in hs1.mas_config()["database"]
    there = fleet.ssh(hs1.mas.name, f"sudo -n test -f {hs1.mas_db_password_file} && echo present")
    here = fleet.ssh("hs1", f"sudo -n test -e {hs1.mas_db_password_file} || echo absent")
    assert there.stdout.strip() == "present" and here.stdout.strip() == "absent", (there, here)
    # The collection as a user installs it, and a controller with only what a controller needs.
    manifest = os.path.join(fleet.collections, "ansible_collections", "matrix", "syn2mas", "MANIFEST.json")
    assert os.path.isfile(manifest)
    for module in ("psycopg2", "bcrypt"):
        proc = subprocess.run([os.path.join(CONTROLLER_VENV, "bin", "python"), "-c", f"import {module}"],
                              capture_output=True, check=False)
        assert proc.returncode != 0, f"the controller venv has {module}: it needs only requirements-controller.txt"


def test_02_advisor_over_ssh(fleet):
    before = {name: fleet.hosts[name].pid() for name in MIGRATING}
    result = run(fleet, "advisor", limit=NOT_HS6)
    assert result.rc == 0, tail(result)
    report = latest_report(fleet, "advisor")
    for name in MIGRATING:
        assert report["hosts"][name]["outcome"] in ("ready", "needs attention"), (name, report["hosts"][name])
    assert {name: fleet.hosts[name].pid() for name in MIGRATING} == before


def test_03_check_mode_changes_nothing(fleet):
    problems = Problems(fleet.heal(restore=True))  # before the migration: back to the legacy set-up
    before = snapshot(fleet)
    calls_before = len(fleet.hosts["hs1"].mas.cli_calls())
    result = run(fleet, "migrate", "--check", "--diff", *ONE_WAVE, "-e", f"syn2mas_window_service_seconds={SERVICE_SECONDS}",
                 limit=NOT_HS6)
    problems.check(result.rc == 0, tail(result, 1500))
    problems.check(not changes(before, snapshot(fleet)), f"changed: {changes(before, snapshot(fleet))}")
    out = result.stdout
    # The window checks no role's arguments: the preparation did, before the stop.
    for tasks in window_tasks(out):
        problems.check(not [t for t in tasks if "Validating arguments" in t], f"argument checks in the window: {tasks}")
    prepare = out[out.find("TASK [Phase prepare"):out.find("TASK [Phase synapse_stop")]
    problems.check("Validating arguments against arg spec 'check_arguments'" in prepare,
                   "the preparation did not check the window's entry points' arguments")
    for name in MIGRATING:
        hs = fleet.hosts[name]
        # Where Synapse's change goes: homeserver.yaml in place, or the conf.d override file.
        # Each diff shows the lines that change (an empty one: the run showed no diff of that file).
        target = hs.homeserver_yaml if hs.spec.in_place else hs.override_path
        synapse_diff = shown_diff(out, target)
        problems.check(re.search(r"^\+matrix_authentication_service:$", synapse_diff, re.M)
                       and re.search(r"^\+  enabled: true$", synapse_diff, re.M),
                       f"{name}: the diff of {target} does not delegate to MAS: {synapse_diff[:600]!r}")
        # The shared secret is in the change, shown redacted (run() checks that no secret is in the output).
        problems.check(re.search(r"^\+  secret: <redacted>$", synapse_diff, re.M),
                       f"{name}: the diff of {target} does not show the secret redacted: {synapse_diff[:600]!r}")
        well_known_diff = shown_diff(out, hs.well_known)
        problems.check(re.search(r'^\+ +"org\.matrix\.msc2965\.authentication": \{$', well_known_diff, re.M),
                       f"{name}: the diff of {hs.well_known} does not add MAS's issuer: {well_known_diff[:600]!r}")
        # MAS's generated default (localhost:8008) is judged as the run would rewrite it.
        if not hs.spec.sso:
            mas_diff = shown_diff(out, hs.mas_yaml)
            problems.check(re.search(rf"^\+ +homeserver: {re.escape(hs.server_name)}$", mas_diff, re.M),
                           f"{name}: the diff of {hs.mas_yaml} does not set matrix.homeserver: {mas_diff[:600]!r}")
            # MAS's config accepts Synapse's bcrypt hashes (its generated scheme 1 is argon2id).
            problems.check(re.search(r"^\+ +algorithm: bcrypt$", mas_diff, re.M),
                           f"{name}: the diff of {hs.mas_yaml} does not add the bcrypt scheme: {mas_diff[:600]!r}")
    problems.check(out.count(f"Dry run: users {fleet.hosts['hs1'].expected['users']}, passwords 3") == 1,
                   "hs1: no dry-run counts")
    # hs1's MAS is on its own host: its config's diff is shown, mas-cli ran there with --dry-run only.
    hs1 = fleet.hosts["hs1"]
    problems.check(hs1.mas_yaml in out and f"homeserver: {hs1.server_name}" in out, "hs1: no diff of MAS's config")
    calls = hs1.mas.cli_calls()[calls_before:]
    problems.check(calls == [["config", "sync", f"--config={hs1.mas_yaml}", "--dry-run"]],
                   f"hs1: mas-cli calls on MAS's host: {calls}")
    check_mas_on_its_own_host(problems, hs1)
    problems.check(out.count("Dry run: users 4, passwords 3") == 4, "hs2-hs5: not 4 dry-run counts")
    report = latest_report(fleet)
    problems.check(report["check_mode"] is True, "the report does not say check mode")
    outcomes = {h: report["hosts"].get(h, {}).get("outcome") for h in MIGRATING}
    problems.check(outcomes == {h: "would migrate (check mode)" for h in MIGRATING}, f"outcomes: {outcomes}")
    # The predicted window is made of what this run measured: its own window (every task of it, the dry-run import
    # among them, less the dry run's wait for its cross-check, a blink on a few users) from its phase marks,
    # verify's reads measured by the dry run, and the service seconds it was given. test_06 shows it beside the
    # window the real run measures.
    for name in MIGRATING:
        entry = report["hosts"].get(name, {})
        parts = entry.get("predicted_window") or {}
        seconds = {p["phase"]: p["seconds"] for p in entry.get("phase_seconds") or []}
        check_window = sum(seconds.get(p, 0) for p in entry.get("window_phases") or [])
        problems.check(
            # (less the cross-check's wait, which the dry-run import spends inside its own seconds; the phases
            # are given to a tenth of a second each)
            parts and -0.3 <= check_window - parts["check_window_seconds"] <= (entry.get("import_seconds") or 0) + 0.3
            and parts["check_window_seconds"] > (entry.get("import_seconds") or 0) > 0
            and 0 < parts["verify_seconds"] < parts["check_window_seconds"]
            and parts["service_seconds"] == SERVICE_SECONDS
            and abs(entry["predicted_window_seconds"] - sum(parts.values())) <= 0.06,
            f"{name}: the prediction is not made of this run's measurements: {parts}, phases {seconds}, "
            f"import {entry.get('import_seconds')}, predicted {entry.get('predicted_window_seconds')}")
    # Synapse would be stopped, by the operator's command, and was not: the report shows no downtime and no
    # backup (none was written), nor does its markdown.
    problems.check(out.count("would stop Synapse with: ") == len(MIGRATING), "not one 'would stop Synapse' per host")
    md = open(os.path.join(fleet.report_dir, report["run_id"], "migrate.md")).read()
    for name in MIGRATING:
        entry = report["hosts"].get(name, {})
        problems.check(entry.get("downtime_seconds") is None and entry.get("synapse_down") is False
                       and entry.get("backup_path") is None,
                       f"{name}: a check-mode entry with a downtime or a backup: {entry}")
        problems.check(fleet.hosts[name].backup_dir not in md, f"{name}: the markdown report names a backup: {md}")
    problems.assert_none()


def test_04_rollback_on_never_migrated_hosts_changes_nothing(fleet):
    problems = Problems(fleet.heal(restore=True))  # before the migration: back to the legacy set-up
    before = snapshot(fleet)
    mas_pids = {name: fleet.hosts[name].mas_service.pid() for name in MIGRATING}
    result = run(fleet, "rollback", limit=NOT_HS6)
    # Synapse was never stopped (same processes), no file was written, not even a state record.
    problems.check(not changes(before, snapshot(fleet)), f"changed: {changes(before, snapshot(fleet))}")
    after = {name: fleet.hosts[name].mas_service.pid() for name in MIGRATING}
    problems.check(after == mas_pids, f"MAS restarted: {mas_pids} -> {after}")
    problems.check(all(s["changed"] == 0 for s in recap(result.stdout).values()), f"recap: {recap(result.stdout)}")
    problems.check(result.rc == 0, tail(result, 1500))
    outcomes = {name: entry["outcome"] for name, entry in latest_report(fleet, "rollback")["hosts"].items()}
    expected = dict.fromkeys(MIGRATING, "nothing to roll back (legacy)") | {"hs6": "not run"}  # hs6: not in --limit
    problems.check(outcomes == expected, f"the report says: {outcomes}")
    problems.assert_none()


def test_04b_a_mas_that_does_not_answer_stops_the_host_before_synapse_is_stopped(fleet):
    """MAS stopped: the advisor names MAS and the URL tried, check mode fails, and the run fails the host in
    its preflight; Synapse is never stopped (same pid), and its files and both databases are unchanged."""
    problems = Problems(fleet.heal(restore=True))  # before the migration: back to the legacy set-up
    hs = fleet.hosts["hs4"]
    url = f"{hs.mas_service.url}/health"
    before = snapshot(fleet, ("hs4",))
    hs.mas_service.stop()
    try:
        advice = run(fleet, "advisor", limit="hs4")
        entry = latest_report(fleet, "advisor")["hosts"]["hs4"]
        problems.check(advice.rc == 0 and entry["outcome"] == "blocked", f"advisor: {entry['outcome']} {tail(advice)}")
        problems.check(any(f"mas_answers: MAS does not answer at {url}" in line for line in entry["findings"]["errors"]),
                       f"the advisor's errors do not name MAS and {url}: {entry['findings']['errors']}")
        check_stopped_in_preflight(problems, fleet, "hs4", f"MAS does not answer at {url}", "MAS down")
        problems.check(not hs.mas_service.running, "the run started MAS behind the operator's back")
    finally:
        hs.mas_service.start()
    check_unchanged(problems, fleet, before)
    problems.assert_none()


def test_04c_a_mas_whose_public_url_does_not_answer_from_the_controller_stops_the_host_before_any_stop(fleet):
    """MAS answers where Synapse reaches it, but not at its public URL (http.public_base, where clients reach it)
    as asked from the controller: the advisor reports the host blocked naming the URL, check mode and the run
    fail it in its preflight, Synapse is never stopped (same pid), nothing changes. Where the controller cannot
    reach MAS's public URL by design, syn2mas_check_mas_public_url: false skips the question."""
    problems = Problems(fleet.heal(restore=True))  # before the migration: back to the legacy set-up
    hs = fleet.hosts["hs4"]
    dead = f"http://127.0.0.1:{homeservers.free_port()}/"
    url = f"{dead}.well-known/openid-configuration"
    with open(hs.mas_yaml_seen) as handle:
        config = handle.read()
    assert config.count(f"public_base: {hs.mas_service.url}/") == 1
    with open(hs.mas_yaml_seen, "w") as handle:  # MAS keeps running on its config as it read it at its start
        handle.write(config.replace(f"public_base: {hs.mas_service.url}/", f"public_base: {dead}"))
    before = snapshot(fleet, ("hs4",))
    try:
        advice = run(fleet, "advisor", limit="hs4")
        entry = latest_report(fleet, "advisor")["hosts"]["hs4"]
        problems.check(advice.rc == 0 and entry["outcome"] == "blocked", f"advisor: {entry['outcome']} {tail(advice)}")
        problems.check(any(line.startswith(f"mas_public_url: MAS does not answer at its public URL {url} from the "
                                           "controller") for line in entry["findings"]["blocking"]),
                       f"the advisor's blocking findings do not name {url}: {entry['findings']['blocking']}")
        check_stopped_in_preflight(problems, fleet, "hs4", f"MAS does not answer at its public URL {url}",
                                   "MAS's public URL dead")
        skipped = run(fleet, "advisor", "-e", '{"syn2mas_check_mas_public_url": false}', limit="hs4")
        entry = latest_report(fleet, "advisor")["hosts"]["hs4"]
        problems.check(skipped.rc == 0 and entry["outcome"] in ("ready", "needs attention"),
                       f"advisor with the check skipped: {entry['outcome']} {entry['findings']['blocking']}")
        check_unchanged(problems, fleet, before)
    finally:
        with open(hs.mas_yaml_seen, "w") as handle:
            handle.write(config)
    problems.assert_none()


def test_05_a_failure_in_each_phase_is_rolled_back(fleet):
    """One run, one fault per host, all hosts in one wave; hs6 fails its preflight."""
    problems = Problems(fleet.heal(restore=True))  # before the migration: back to the legacy set-up
    hs1, hs2, hs3, hs4, hs5, hs6 = (fleet.hosts[n] for n in ("hs1", "hs2", "hs3", "hs4", "hs5", "hs6"))
    psql = (f"{fleet.pg.bin('psql')} -X -q -h {fleet.pg.sockdir} -p {fleet.pg.port} -U postgres")
    faults = {
        # stop (real): a client left on Synapse's database, as a forgotten admin shell or an exporter.
        # config (injected by the operator's stop command): MAS's config is left unparseable.
        # Safe to run twice (the rollback stops Synapse again), as an operator's command must be.
        "hs2": {"synapse_service_stop_command":
                f"{hs2.stop_command}; grep -q unclosed {hs2.mas_yaml} || printf 'matrix: [unclosed\\n' >> {hs2.mas_yaml}"},
        # import (injected by the operator's stop command): MAS's database is no longer fresh, as if
        # MAS had been started on it meanwhile.
        "hs3": {"synapse_service_stop_command":
                f"{hs3.stop_command}; {psql} -d {hs3.mas_db} -c \"INSERT INTO users (user_id, username, created_at) "
                f"VALUES (gen_random_uuid(), 'early-bird', now()) ON CONFLICT DO NOTHING\""},
        # start (real): the shared secret is given as a file Synapse's own user cannot read.
        "hs4": {"auth_delegation_synapse_secret_path": os.path.join(hs4.secrets_dir, "mas_shared_secret")},
        # .well-known (real): the document is written where the web server does not serve it from.
        "hs5": {"syn2mas_well_known_path": hs5.stale_well_known()},
    }
    hs5_stale = hs5.stale_well_known()
    configs_before = {name: fleet.hosts[name].files(CONFIGS) for name in MIGRATING}
    hs6_before = snapshot(fleet, ["hs6"])["hs6"]
    leftover = psycopg2.connect(host="127.0.0.1", port=fleet.pg.port, dbname=hs1.synapse_db, user=hs1.synapse_role,
                                password=hs1.synapse_db_password, application_name="psql")
    fleet.write_inventory(faults)
    try:
        result = run(fleet, "migrate", *ONE_WAVE)
    finally:
        leftover.close()
        fleet.write_inventory()
        fleet.pg.execute("DELETE FROM users WHERE username = 'early-bird'", hs3.mas_db)
    assert result.rc != 0
    report = latest_report(fleet)["hosts"]
    # Where each failure must have happened (the failed task's message, as the report keeps it).
    where = {"hs1": r"client", "hs2": re.escape(hs2.mas_yaml), "hs3": r"not (empty|fresh)|holds? (data|rows)",
             "hs4": r"\bstart|health", "hs5": re.escape(hs5.well_known_url)}
    for name in MIGRATING:
        hs = fleet.hosts[name]
        entry = report.get(name, {})
        error = entry.get("error") or ""
        problems.check(entry.get("outcome") == "failed" and entry.get("rolled_back") is True,
                       f"{name}: outcome {entry.get('outcome')!r}, rolled back {entry.get('rolled_back')!r}: {error[:300]}")
        problems.check(re.search(where[name], error, re.I),
                       f"{name}: not failed where injected ({where[name]!r}): {error[:300]}")
        problems.check(host_state(hs) == "legacy", f"{name}: state {host_state(hs)!r}")
        check_legacy_and_healthy(problems, hs)
        # Every file the run created or changed is back as it was (the override file gone, MAS's
        # config and .well-known restored), with its owner and mode.
        after = hs.files(CONFIGS)
        changed = sorted(p for p in set(after) | set(configs_before[name])
                         if after.get(p) != configs_before[name].get(p))
        problems.check(not changed, f"{name}: files not restored: {changed}")
    problems.check(os.path.exists(hs5_stale), "hs5: the stale .well-known copy is gone")
    # hs6 failed before anything happened, naming what it lacks.
    entry = report.get("hs6", {})
    problems.check(entry.get("outcome") == "preflight failed" and "psycopg2" in (entry.get("error") or ""),
                   f"hs6: {entry.get('outcome')!r}: {(entry.get('error') or '')[:300]}")
    problems.check(not changes({"hs6": hs6_before}, snapshot(fleet, ["hs6"])),
                   f"hs6: changed although its preflight failed: {changes({'hs6': hs6_before}, snapshot(fleet, ['hs6']))}")
    problems.check(recap(result.stdout).get("hs6", {}).get("changed") == 0, "hs6: changed tasks")
    problems.assert_none()


def test_06_the_real_run_migrates(fleet):
    problems = Problems(fleet.heal(restore=True))  # before the migration: back to the legacy set-up
    starts = {name: fleet.hosts[name].mas_service.starts for name in MIGRATING}
    # With ansible's defaults, no pipelining: the migration as a controller without any configuration runs it.
    result = run(fleet, "migrate", "-vvv", "-e", '{"syn2mas_serial": [1, "100%"]}', limit=NOT_HS6,
                 pipelining=False)
    problems.check(result.rc == 0, tail(result, 1500))
    report = latest_report(fleet)["hosts"]
    for name in MIGRATING:
        hs = fleet.hosts[name]
        check = problems.check
        # MAS (its stand-in) restarted on the config the run wrote, in the preparation, then stopped for the
        # import and started again in the window: two starts, and it runs on the config as it is now.
        check(hs.mas_service.starts - starts[name] == 2, f"{name}: MAS started {hs.mas_service.starts - starts[name]} "
              "times in the run, expected 2 (restarted on its new config, then started after the import)")
        with open(hs.mas_yaml_seen, "rb") as handle:
            now = hashlib.sha256(handle.read()).hexdigest()
        check(hs.mas_service.running and hs.mas_service.fingerprint == now,
              f"{name}: MAS is not running on its config as the run left it")
        check(report.get(name, {}).get("outcome") == "migrated", f"{name}: {report.get(name)}")
        # Beside the window measured, test_03's check-run prediction (the latest check report that predicted this
        # host), and what only this real run spent (the window minus what the check run measured of it): the
        # service seconds to give the next prediction.
        entry = report.get(name, {})
        parts, downtime = entry.get("predicted_window") or {}, entry.get("downtime_seconds")
        check(parts and downtime and abs(entry["predicted_window_seconds"] - sum(parts.values())) <= 0.06
              and parts["service_seconds"] == SERVICE_SECONDS
              and abs(entry["window_service_seconds"]
                      - (downtime - parts["check_window_seconds"] - parts["verify_seconds"])) <= 0.06,
              f"{name}: no check-run prediction beside the window measured: {entry}")
        print(f"\n{name}: predicted {entry.get('predicted_window_seconds')} s ({parts}), measured {downtime} s, of "
              f"which only the real run's {entry.get('window_service_seconds')} s")
        # The import was proven against Synapse on the host, and the live checks ran from it.
        verified = report.get(name, {}).get("verified") or {}
        check(verified.get("ok") is True and verified.get("verdict", "").endswith(" rows in 9 entities, 0 missing"),
              f"{name}: verify: {verified}")
        live = report.get(name, {}).get("live_checks") or {}
        check(live.get("ok") is True, f"{name}: live checks: {live}")
        check(host_state(hs) == "delegated", f"{name}: state {host_state(hs)!r}")
        if not check(hs.healthy(), f"{name}: Synapse is down; log: {hs.log_tail(5)}"):
            continue
        if hs.spec.worker:
            check(hs.worker_healthy(), f"{name}: the worker is down")
        # Synapse delegates to MAS, as configured and as a client sees it.
        config = hs.effective_config()
        check((config.get("matrix_authentication_service") or {}).get("enabled") is True,
              f"{name}: Synapse does not delegate to MAS")
        check(not (config.get("password_config") or {}).get("enabled"), f"{name}: password_config still enabled")
        check(not config.get("oidc_providers"), f"{name}: oidc_providers still set")
        status, body = hs.login("alice", homeservers.PASSWORDS["alice"])
        check(status != 200, f"{name}: Synapse still takes password logins")
        if not hs.spec.in_place and check(os.path.exists(hs.override_path), f"{name}: no override file"):
            # Synapse's own user reads it (Synapse started); nobody else may.
            check(os.stat(hs.override_path).st_mode & 0o007 == 0, f"{name}: the override file is world-readable")
        try:
            mas = hs.mas_config()
        except Exception as exc:  # pylint: disable=broad-exception-caught  # reported, like every other problem
            check(False, f"{name}: MAS's config does not parse: {exc}")
        else:
            check(mas["matrix"]["homeserver"] == hs.server_name, f"{name}: MAS matrix.homeserver {mas['matrix']}")
            v1 = [s for s in mas["passwords"]["schemes"] if s["version"] == 1][0]
            check(v1.get("algorithm") == "bcrypt" and v1.get("unicode_normalization") is True
                  and v1.get("secret") == homeservers.PEPPER, f"{name}: MAS's scheme 1 is not Synapse's bcrypt")
        # Users, passwords, links, sessions and tokens in MAS, the registration tokens among them.
        expected = hs.expected
        want = {"users": expected["users"], "deactivated": 1, "passwords": expected["passwords"],
                "links": expected["sso_links"], "sessions": expected["devices"], "tokens": expected["devices"]}
        counts = mas_counts(fleet, hs)
        check(counts == want, f"{name}: MAS holds {counts}, expected {want}")
        tokens = [hs.tokens[who] for who in ("alice", "bob", "admin")]
        found = fleet.pg.execute("SELECT count(*) FROM compat_access_tokens WHERE access_token = ANY(%s)",
                                 hs.mas_db, (tokens,))[0][0]
        check(found == 3, f"{name}: {found} of the 3 old access tokens in MAS")
        status, served = homeservers.http("GET", hs.well_known_url)
        check(status == 200 and served.get("org.matrix.msc2965.authentication") == {
            "issuer": f"https://auth.{hs.server_name}/", "account": f"{hs.mas_service.url}/account/"}  # public_base
            and served.get("m.homeserver") == {"base_url": f"https://matrix.{hs.server_name}"},
            f"{name}: .well-known serves {served}")
        loose = [path for path, (_digest, mode, _uid, _gid) in hs.files(("var/backups",)).items() if mode != "0o600"]
        check(not loose, f"{name}: backup files not 0600: {loose}")
    # hs1: MAS on its own host was linked, given Synapse's bcrypt scheme and provider, backed up there; its
    # provider's row was written by mas-cli there; the SSO-linked users came over with their links.
    hs1 = fleet.hosts["hs1"]
    mas = hs1.mas_config()
    providers = (mas.get("upstream_oauth2") or {}).get("providers") or []
    check = problems.check
    check([p.get("synapse_idp_id") for p in providers] == ["oidc-google"], f"hs1: MAS's providers {providers}")
    check(mas["matrix"].get("secret") == hs1.mas_shared_secret, "hs1: MAS's shared secret is not Synapse's")
    rows = fleet.pg.execute("SELECT p.upstream_oauth_provider_id::text, count(l.upstream_oauth_link_id) "
                            "FROM upstream_oauth_providers p LEFT JOIN upstream_oauth_links l USING "
                            "(upstream_oauth_provider_id) GROUP BY 1", hs1.mas_db)
    if check(len(providers) == 1, "hs1: no provider"):
        # One provider row, the one MAS's config names, with every SSO link on it. test_05's attempt on hs1 was
        # rolled back after its preparation had synced the provider (config sync never prunes, and the rollback
        # keeps MAS's database when nothing was imported): this run gave the provider the same id again.
        check(rows == [(str(parse_provider_id(providers[0]["id"])), hs1.expected["sso_links"])]
              and hs1.expected["sso_links"] > 0,
              f"hs1: MAS's provider rows and their links {rows}, its config names {providers[0]['id']}")
    calls = [c for c in hs1.mas.cli_calls() if c[:2] == ["config", "sync"]]
    check(calls[-1:] == [["config", "sync", f"--config={hs1.mas_yaml}"]], f"hs1: mas-cli calls {calls}")
    check(not any("--prune" in c for c in hs1.mas.cli_calls()), "hs1: mas-cli ran with --prune")
    backups = [p for p in hs1.files(("var/backups",)) if p.startswith(f"{hs1.mas.name}:")
               and p.endswith("config.yaml")]
    check(backups, "hs1: MAS's config not backed up on MAS's host")
    check_mas_on_its_own_host(problems, hs1)
    problems.assert_none()


def test_07_a_second_run_changes_nothing(fleet):
    problems = Problems(fleet.heal())
    before = snapshot(fleet)
    result = run(fleet, "migrate", *ONE_WAVE, limit=NOT_HS6)
    problems.check(result.rc == 0, tail(result, 1500))
    problems.check(all(s["changed"] == 0 for s in recap(result.stdout).values()), f"recap: {recap(result.stdout)}")
    problems.check(not changes(before, snapshot(fleet)), f"changed: {changes(before, snapshot(fleet))}")
    problems.assert_none()


def test_07b_verify_playbook_runs_on_the_hosts_bare_python(fleet):
    """playbooks/verify.yml after the real run: the inventory's interpreter is Debian's bare /usr/bin/python3
    (no psycopg2), so it must find the Python for the database work itself, as migrate.yml does. One host's
    MAS is tampered with (a password hash changed) for the run: that host alone is a mismatch."""
    problems = Problems(fleet.heal())
    hs5 = fleet.hosts["hs5"]
    user_id, original = fleet.pg.execute(
        "SELECT p.user_id, p.hashed_password FROM user_passwords p JOIN users u USING (user_id) "
        "WHERE u.username = 'bob'", hs5.mas_db)[0]
    fleet.pg.execute("UPDATE user_passwords SET hashed_password = 'tampered' WHERE user_id = %s", hs5.mas_db, (user_id,))
    try:
        result = run(fleet, "verify", limit=NOT_HS6)
    finally:
        fleet.pg.execute("UPDATE user_passwords SET hashed_password = %s WHERE user_id = %s", hs5.mas_db,
                         (original, user_id))
    problems.check(result.rc != 0, "verify.yml passed a tampered MAS")
    problems.check("No module named 'psycopg2'" not in result.output, tail(result, 1500))
    stats = recap(result.stdout)
    report = latest_report(fleet, "verify")["hosts"]
    for name in MIGRATING:
        entry = report.get(name, {})
        verified = entry.get("verified") or {}
        if name == "hs5":
            problems.check(entry.get("outcome") == "mismatch" and stats.get(name, {}).get("failed") == 1,
                           f"{name}: {entry}")
            problems.check(verified.get("damaged") == ["passwords"] and verified.get("different") == 1,
                           f"{name}: verify: {verified}")
            continue
        problems.check(entry.get("outcome") == "verified" and stats.get(name, {}).get("failed") == 0,
                       f"{name}: {entry}; {tail(result, 1500)}")
        problems.check(verified.get("ok") is True and verified.get("verdict", "").endswith(" rows in 9 entities, 0 missing"),
                       f"{name}: verify: {verified}")
        problems.check((entry.get("live_checks") or {}).get("ok") is True, f"{name}: live checks: {entry.get('live_checks')}")
    problems.assert_none()


def test_08_rollback_brings_legacy_logins_and_old_tokens_back(fleet):
    problems = Problems(fleet.heal())
    for name in MIGRATING:  # else there is nothing to roll back, and this step proves nothing
        problems.check(host_state(fleet.hosts[name]) == "delegated",
                       f"{name}: not migrated by step 6 (state {host_state(fleet.hosts[name])!r})")
    result = run(fleet, "rollback", limit=NOT_HS6)
    problems.check(result.rc == 0, tail(result, 1500))
    for name in MIGRATING:
        hs = fleet.hosts[name]
        check_legacy_and_healthy(problems, hs)
        if hs.healthy():
            for who in ("bob", "admin"):
                status, body = hs.login(who, homeservers.PASSWORDS[who])
                problems.check(status == 200, f"{name}: {who} cannot log in: {status} {body}")
            for who in ("alice", "bob", "admin"):
                status, body = hs.whoami(hs.tokens[who])
                problems.check(status == 200 and body.get("user_id") == f"@{who}:{hs.server_name}",
                               f"{name}: {who}'s old access token: {status} {body}")
        status, served = homeservers.http("GET", hs.well_known_url)
        problems.check("org.matrix.msc2965.authentication" not in served, f"{name}: .well-known still names MAS")
        problems.check(host_state(hs) == "legacy", f"{name}: state {host_state(hs)!r}")
        # Every file the runs created is gone, every file they changed is as it was before them.
        after = hs.files(CONFIGS)
        changed = sorted(p for p in set(after) | set(fleet.baseline[name]) if after.get(p) != fleet.baseline[name].get(p))
        problems.check(not changed, f"{name}: not as before the migration: {changed}")
    # hs1's MAS config is back on MAS's host, byte for byte (the comparison above covers that host's files).
    hs1 = fleet.hosts["hs1"]
    key = f"{hs1.mas.name}:{os.path.relpath(hs1.mas_yaml, hs1.mas.dir)}"
    problems.check(key in fleet.baseline["hs1"] and hs1.files(CONFIGS).get(key) == fleet.baseline["hs1"][key],
                   f"hs1: MAS's config on MAS's host is not as before: {hs1.files(CONFIGS).get(key)}")
    check_mas_on_its_own_host(problems, hs1)
    problems.assert_none()
