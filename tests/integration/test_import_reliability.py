"""Reliability of the import on real PostgreSQL and the real Synapse schema (issue 9): the outcome
reported is what MAS holds, a failed run can always be re-run, no credential in any message,
sessions dated faithfully, bad values counted instead of stopping the run.

Each fault case checks MAS (and Synapse where it matters) by dump, the reported outcome, and that
the next run succeeds. The slow cases (a big homeserver to interrupt) are marked `slow`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
import yaml

from _syn2mas.errors import ConnectionLostError, PrivilegeError, RefusedError
from tests.support import synapse_data
from tests.support.ansible_run import run_tasks
from tests.support.pgcluster import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTC = dt.timezone.utc
T0 = 1_600_000_000_000  # ms, 2020-09-13


def at_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def syn2mas(*args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "syn2mas"), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def migrate_args(env, *extra):
    return ["--command", "migrate", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml,
            *extra]


def small_homeserver(env):
    with env.populate() as s:
        alice = s.user("alice", admin=True)
        s.threepid(alice, "email", "alice@example.test")
        s.login(alice, "PHONE", ip="192.0.2.1")
        s.login(alice, "LAPTOP", with_refresh=True)
        bob = s.user("bob")
        s.login(bob, "BOBDEV")


def bulk_homeserver(env, users: int):
    """Many users, fast (plain SQL), so that an import takes long enough to be interrupted."""
    env.pg.execute(f"""
        INSERT INTO users (name, password_hash, creation_ts, admin, is_guest, deactivated)
        SELECT '@user' || i || ':{env.server_name}', '$2b$12$' || md5(i::text), 1700000000 + i, 0, 0, 0
        FROM generate_series(1, {users}) i;
        INSERT INTO devices (user_id, device_id, display_name, last_seen, ip, user_agent)
        SELECT '@user' || i || ':{env.server_name}', 'DEV' || i, 'Device ' || i, 1700000000000 + i,
               '10.0.' || (i % 250) || '.' || (i % 200), 'Agent/' || i
        FROM generate_series(1, {users}) i;
        INSERT INTO access_tokens (id, user_id, device_id, token, last_validated)
        SELECT i, '@user' || i || ':{env.server_name}', 'DEV' || i, 'syt_' || md5(i::text) || i, 1700000000000 + i
        FROM generate_series(1, {users}) i;
        ANALYZE;""", env.synapse_db)


def backend(env, dbname, query_prefix=None):
    """The pid of the import's session on `dbname` (optionally only while it runs `query_prefix`)."""
    sql = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'syn2mas'"
    params = [dbname]
    if query_prefix:
        sql += " AND state = 'active' AND query LIKE %s"
        params.append(query_prefix + "%")
    rows = env.pg.execute(sql, params=params)
    return rows[0][0] if rows else None


def wait_until_no_importer(env):
    assert wait_for(lambda: not env.pg.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname IN (%s, %s) AND application_name = 'syn2mas'",
        params=(env.mas_db, env.synapse_db)), timeout=30)


def assert_next_run_imports(env, users: int):
    result = env.run()
    assert result["changed"] is True and result["already_imported"] is False
    assert env.mas("SELECT count(*) FROM users") == [(users,)]


# -- session dates and the deactivated-user rule --------------------------------------------------

def test_a_device_session_is_dated_no_later_than_its_earliest_token_and_its_last_activity(env):
    day = 86_400_000
    with env.populate() as s:
        alice = s.user("alice", creation_ts=T0 // 1000 - 365 * 86400)
        # The case seen on real data: token validated 2020-09-13, device last seen 2021-06-10.
        s.device(alice, "LATE_SEEN", last_seen=T0 + 270 * day)
        s.access_token(alice, "LATE_SEEN", last_validated=T0)
        # Two tokens; the first one (lower id) was validated later than the second.
        s.device(alice, "TWO_TOKENS", last_seen=T0 + 300 * day)
        s.access_token(alice, "TWO_TOKENS", last_validated=T0 + 20 * day)
        s.access_token(alice, "TWO_TOKENS", last_validated=T0 + 10 * day)
        # Last seen before its token's last validation: the activity dates it.
        s.device(alice, "SEEN_FIRST", last_seen=T0 + 5 * day)
        s.access_token(alice, "SEEN_FIRST", last_validated=T0 + 50 * day)
        # No token: its last activity; nothing at all: its user's creation.
        s.device(alice, "NO_TOKEN", last_seen=T0 + 7 * day)
        s.device(alice, "NOTHING", last_seen=None)
        # A deviceless token: dated by its last validation, with no activity.
        s.access_token(alice, None, last_validated=T0 + 9 * day)
    env.run()
    sessions = {row[0]: row[1:] for row in env.mas(
        "SELECT COALESCE(device_id, 'DEVICELESS'), created_at, last_active_at FROM compat_sessions")}
    assert sessions["LATE_SEEN"] == (at_ms(T0), at_ms(T0 + 270 * day))
    assert sessions["TWO_TOKENS"] == (at_ms(T0 + 10 * day), at_ms(T0 + 300 * day))
    assert sessions["SEEN_FIRST"] == (at_ms(T0 + 5 * day), at_ms(T0 + 5 * day))
    assert sessions["NO_TOKEN"] == (at_ms(T0 + 7 * day), at_ms(T0 + 7 * day))
    assert sessions["NOTHING"] == (at_ms(T0 - 365 * day), None)
    assert sessions["DEVICELESS"] == (at_ms(T0 + 9 * day), None)
    # The session id is a ULID of its creation time, as MAS makes them.
    for (session_id, created_at) in env.mas("SELECT compat_session_id, created_at FROM compat_sessions"):
        assert int(session_id.hex[:12], 16) == int(created_at.timestamp() * 1000)


def test_on_generated_real_shaped_data_no_session_is_younger_than_its_tokens_or_activity(make_env):
    env = make_env()
    conn = env.pg.connect(env.synapse_db)
    try:
        synapse_data.generate(conn, 300, seed=7, server_name=env.server_name)
    finally:
        conn.close()
    env.run(skip_unmapped_providers=True)
    later_than_token = env.mas("""
        SELECT count(*) FROM compat_sessions s JOIN compat_access_tokens t USING (compat_session_id)
        WHERE s.created_at > t.created_at""")
    later_than_activity = env.mas("SELECT count(*) FROM compat_sessions WHERE created_at > last_active_at")
    deviceless_active = env.mas("SELECT count(*) FROM compat_sessions WHERE device_id IS NULL "
                                "AND last_active_at IS NOT NULL")
    assert env.mas("SELECT count(*) FROM compat_access_tokens")[0][0] > 100
    assert later_than_token == [(0,)] and later_than_activity == [(0,)] and deviceless_active == [(0,)]


def test_a_deactivated_users_emails_are_left_behind_like_phone_numbers(env):
    with env.populate() as s:
        gone = s.user("gone", deactivated=True)
        s.threepid(gone, "email", "gone@example.test")
        s.threepid(gone, "msisdn", "447700900123")
        here = s.user("here")
        s.threepid(here, "email", "here@example.test")
    result = env.run()
    assert env.mas("SELECT email FROM user_emails") == [("here@example.test",)]
    assert env.mas("SELECT count(*) FROM user_unsupported_third_party_ids") == [(0,)]
    reason = "user deactivated (MAS drops these on deactivation)"
    assert result["counts"]["emails"]["skipped_reasons"][reason]["examples"] == ["@gone:example.test gone@example.test"]
    assert result["counts"]["other_threepids"]["skipped_reasons"][reason]["count"] == 1
    # the user itself comes over, deactivated
    assert env.mas("SELECT deactivated_at IS NOT NULL FROM users WHERE username = 'gone'") == [(True,)]


# -- out-of-range values: counted, named, never a stop -----------------------------------------

def test_out_of_range_timestamps_are_replaced_and_counted_naming_table_and_row(env):
    with env.populate() as s:
        alice = s.user("alice", creation_ts=1_700_000_000)
        s.device(alice, "FARFUTURE", last_seen=10 ** 17)
        _id, far_token = s.access_token(alice, "FARFUTURE", valid_until_ms=9 * 10 ** 18, last_validated=T0)
        s.device(alice, "PAST", last_seen=T0)
        _id, past_token = s.access_token(alice, "PAST", valid_until_ms=-9 * 10 ** 18, last_validated=10 ** 17)
        s.threepid(alice, "email", "alice@example.test", added_at=10 ** 17, validated_at=-10 ** 17)
        s.user("ancient", creation_ts=10 ** 15)
    result = env.run()
    counts = result["counts"]
    assert counts["device_sessions"]["fixed"] == {"devices.last_seen out of range, stored as unknown": 1}
    assert counts["device_sessions"]["fixed_examples"] == {
        "devices.last_seen out of range, stored as unknown": ["@alice:example.test FARFUTURE"]}
    assert counts["access_tokens"]["fixed"] == {
        "access_tokens.valid_until_ms out of range (after year 9999: no expiry)": 1,
        "access_tokens.last_validated out of range, dated at the import": 1}
    assert counts["users"]["fixed"] == {"users.creation_ts out of range, dated at the import": 1}
    assert counts["users"]["fixed_examples"]["users.creation_ts out of range, dated at the import"] == [
        "@ancient:example.test"]
    assert counts["emails"]["fixed"] == {"user_threepids.added_at out of range, dated at the import": 1}
    assert env.mas("SELECT last_active_at FROM compat_sessions WHERE device_id = 'FARFUTURE'") == [(None,)]
    expiry = dict(env.mas("SELECT access_token, expires_at FROM compat_access_tokens"))
    assert expiry[far_token] is None  # after year 9999: no expiry
    assert expiry[past_token] < at_ms(0)  # before year 1: long expired
    assert env.mas("SELECT count(*) FROM users") == [(2,)]


def test_the_cli_summary_names_the_rows_whose_values_were_replaced(env):
    with env.populate() as s:
        alice = s.user("alice")
        s.device(alice, "BOGUS", last_seen=10 ** 17)
    run = syn2mas(*migrate_args(env))
    assert run.returncode == 0, run.stderr
    assert "1: devices.last_seen out of range, stored as unknown (e.g. @alice:example.test BOGUS)" in run.stdout


# -- no credential in any message ------------------------------------------------------------------

SECRET = "Pw-Secret-7741"
# With an unencoded `@`, libpq splits the password at it and shows the rest as the host name.
SECRET_WITH_AT = "Pw@Secret-7741"


def malformed_uri(user="mas_user", secret=SECRET):
    # libpq quotes the whole URI in its error for an unclosed IPv6 bracket.
    return f"postgresql://{user}:{secret}@[::1"


def bad_uri_sources(secret=SECRET):
    """(name, configs to write, extra CLI args, extra module args) for each place a database URI is given."""
    mas_uri, synapse_uri = malformed_uri(secret=secret), malformed_uri("synapse_user", secret=secret)
    return [
        ("MAS database.uri", {"mas_extra": {"database": {"uri": mas_uri}}}, [], {}),
        ("Synapse database.args.dsn", {"synapse_extra": {"database": {"name": "psycopg2", "args": {
            "dsn": synapse_uri}}}}, [], {}),
        ("--masDatabaseUri", {}, ["--masDatabaseUri", mas_uri], {"mas_database_uri": mas_uri}),
        ("--synapseDatabaseUri", {}, ["--synapseDatabaseUri", synapse_uri], {"synapse_database_uri": synapse_uri}),
    ]


def secret_parts():
    return [SECRET, SECRET_WITH_AT, "Secret-7741"]


def assert_no_secret(text, where):
    for part in secret_parts():
        assert part not in text, f"{part!r} shown in {where}:\n{text}"


@pytest.mark.parametrize("secret", [SECRET, SECRET_WITH_AT], ids=["plain", "with-at"])
@pytest.mark.parametrize("source", range(4), ids=["mas-config-uri", "synapse-config-dsn", "masDatabaseUri",
                                                  "synapseDatabaseUri"])
def test_a_malformed_database_uri_never_shows_its_password_on_the_cli(env, source, secret):
    name, configs, cli_args, _module_args = bad_uri_sources(secret)[source]
    env.write_configs(**configs)
    outputs = []
    for command in (["--command", "migrate"], ["--command", "migrate", "--dryRun"], ["--command", "advisor"]):
        for output in ("text", "json"):
            run = syn2mas(*command, "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml,
                          *cli_args, "--output", output, "--verbose")
            assert run.returncode != 0, (name, command, run.stdout, run.stderr)
            outputs.append(run.stdout + run.stderr)
            assert_no_secret(run.stdout + run.stderr, f"{name}, {command}, --output {output}")
    migrate_error = outputs[0]
    if secret == SECRET_WITH_AT:  # libpq parses that one: the connection fails instead
        assert "cannot connect to the" in migrate_error and "********" in migrate_error
        return
    assert "invalid database URI" in migrate_error and "IPv6 host address" in migrate_error
    # the message says which URI it is
    where = {"MAS database.uri": "mas.yaml: database", "Synapse database.args.dsn": "homeserver.yaml: database",
             "--masDatabaseUri": "the given MAS database URI",
             "--synapseDatabaseUri": "the given Synapse database URI"}[name]
    assert where in migrate_error
    assert "invalid database URI" in outputs[4]  # the advisor's finding


def test_a_malformed_database_uri_never_shows_its_password_in_module_results_or_logs(env, tmp_path):
    tasks = []
    for name, configs, _cli_args, module_args in bad_uri_sources() + bad_uri_sources(SECRET_WITH_AT):
        name += " @" if SECRET_WITH_AT in json.dumps(configs) + json.dumps(module_args) else ""
        workdir = tmp_path / name.replace(" ", "_").replace("-", "").replace(".", "_").replace("@", "at")
        workdir.mkdir()
        env.homeserver_yaml, env.mas_yaml = str(workdir / "homeserver.yaml"), str(workdir / "mas.yaml")
        env.write_configs(**configs)
        common = {"synapse_config": [env.homeserver_yaml], "mas_config": [env.mas_yaml], **module_args}
        tasks.append({"name": f"import, {name}", "matrix.syn2mas.syn2mas_import": common})
        tasks.append({"name": f"advisor, {name}", "matrix.syn2mas.syn2mas_advisor": common})
    log = tmp_path / "ansible.log"
    run = run_tasks(tmp_path, tasks, env={"ANSIBLE_VERBOSITY": "3", "ANSIBLE_LOG_PATH": str(log)})
    assert_no_secret(run.stdout, "ansible-playbook -vvv output")
    assert_no_secret(log.read_text(), "ansible.log")
    for task, result in zip(tasks, run.results):
        assert result.get("failed") is True, (task["name"], result)
        assert_no_secret(json.dumps(result), task["name"])
        if "@" not in task["name"]:
            assert "invalid database URI" in json.dumps(result), (task["name"], result)


def test_a_failing_connection_never_shows_the_password_anywhere(env, tmp_path):
    """A well-formed URI whose password is wrong or whose server is down: libpq's errors do not
    quote it, but the library masks it everywhere anyway (known secrets are remembered)."""
    uri = env.pg.tcp_uri(env.mas_db, "nobody", SECRET, host="127.0.0.1").replace(str(env.pg.port), "1")
    run = syn2mas(*migrate_args(env, "--masDatabaseUri", uri, "--output", "json", "--verbose"))
    assert run.returncode == 1
    assert "cannot connect to the MAS database" in run.stderr
    assert_no_secret(run.stdout + run.stderr, "CLI")
