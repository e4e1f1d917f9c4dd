"""Refusals, skips, atomicity, dry run and re-runs of the import, against real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest

from _syn2mas.errors import DatabaseError, DataError, RefusedError
from _syn2mas.migration.mas_writer import ADVISORY_LOCK_KEY
from tests.support import mas_schema
from tests.support.import_load import bulk_homeserver, wait_until_no_importer
from tests.support.migration_env import small_homeserver, without_timings
from tests.support.pgcluster import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- refusals: nothing is written -------------------------------------------------------------

def test_users_of_another_server_name_stop_the_import_before_any_write(env):
    small_homeserver(env)
    with env.populate() as s:
        s.user("mallory", server_name="other.example")
    before = env.mas_dump()
    with pytest.raises(DataError) as err:
        env.run()
    assert "1 user in Synapse's users table" in str(err.value) and "@mallory:other.example" in str(err.value)
    assert "server_name" in str(err.value)
    assert env.mas_dump() == before


def test_a_mas_database_holding_data_is_refused_naming_the_table(env_on_small_homeserver):
    env = env_on_small_homeserver
    env.mas("INSERT INTO users (user_id, username, created_at) VALUES (gen_random_uuid(), 'someone', now())")
    with pytest.raises(RefusedError, match=r"not empty: rows found in users"):
        env.run()


def test_data_in_a_table_pointing_at_users_is_refused_too(env_on_small_homeserver):
    env = env_on_small_homeserver
    env.mas("ALTER TABLE user_sessions DROP CONSTRAINT user_sessions_user_id_fkey")
    env.mas("INSERT INTO user_sessions (user_session_id, user_id, created_at) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), now())")
    env.mas("ALTER TABLE user_sessions ADD CONSTRAINT user_sessions_user_id_fkey FOREIGN KEY (user_id) "
            "REFERENCES users(user_id) NOT VALID")
    with pytest.raises(RefusedError, match=r"rows found in user_sessions"):
        env.run()


def test_mas_homeserver_must_equal_synapse_server_name(env):
    env.write_configs(mas_extra={"matrix": {"homeserver": "wrong.example", "secret": "x"}})
    with pytest.raises(RefusedError, match=r"matrix.homeserver is 'wrong.example'.*'example.test'"):
        env.run()


def test_unmapped_sso_provider_is_an_error_naming_it_unless_skipped(env):
    small_homeserver(env)
    with env.populate() as s:
        s.external_id("@bob:example.test", "saml", "bob-saml")
    before = env.mas_dump()
    with pytest.raises(DataError, match=r"1 user link of auth_provider 'saml' \(SAML login\)"):
        env.run()
    assert env.mas_dump() == before
    result = env.run(skip_unmapped_providers=True)
    assert result["counts"]["upstream_links"]["migrated"] == 1
    assert result["counts"]["upstream_links"]["skipped_reasons"]["SSO provider not mapped to MAS"]["count"] == 1
    assert any("saml" in w for w in result["warnings"])


def test_explicit_provider_mapping_links_subjects_to_that_provider(env):
    small_homeserver(env)
    with env.populate() as s:
        s.external_id("@bob:example.test", "saml", "bob-saml")
    from tests.support.migration_env import LEGACY_ID

    result = env.run(upstream_provider_mapping=[f"saml:{LEGACY_ID}"])
    assert result["counts"]["upstream_links"]["migrated"] == 2
    assert env.mas("SELECT subject FROM upstream_oauth_links WHERE upstream_oauth_provider_id = %s",
                   (LEGACY_ID,)) == [("bob-saml",)]


def test_a_mapped_provider_missing_from_mas_database_stops_before_any_write(env_on_small_homeserver):
    env = env_on_small_homeserver
    env.mas("DELETE FROM upstream_oauth_providers")
    before = env.mas_dump()
    with pytest.raises(RefusedError) as err:
        env.run()
    assert "oidc-google" in str(err.value) and "mas-cli config sync" in str(err.value)
    assert env.mas_dump() == before


def test_running_synapse_refuses_the_real_import_naming_the_client_but_not_the_dry_run(env_on_small_homeserver):
    env = env_on_small_homeserver
    synapse = psycopg2.connect(env.pg.dsn(env.synapse_db, application_name="synapse_homeserver_main"))
    try:
        with pytest.raises(RefusedError, match=r"synapse_homeserver_main \(pid \d+"):
            env.run()
        result = env.run(dry_run=True)
        assert result["counts"]["users"]["migrated"] == 3
        assert any("synapse_homeserver_main" in w for w in result["warnings"])
    finally:
        synapse.close()
    assert env.run()["changed"] is True


def test_a_second_concurrent_import_is_refused_at_once(env_on_small_homeserver):
    env = env_on_small_homeserver
    holder = env.pg.connect(env.mas_db)
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        started = time.monotonic()
        with pytest.raises(RefusedError,
                           match=r"another syn2mas import is already running against this MAS database \(pid \d+, "):
            env.run()
        assert time.monotonic() - started < 10
    finally:
        holder.close()
    assert env.run()["changed"] is True


def test_an_unmigrated_database_is_not_taken_for_mas(env):
    env.mas("DROP TABLE _sqlx_migrations")
    with pytest.raises(RefusedError, match=r"no _sqlx_migrations table.*mas-cli database migrate"):
        env.run()


def test_an_unknown_mas_schema_is_refused_naming_what_differs(env):
    env.mas("ALTER TABLE compat_sessions ADD COLUMN tenant text NOT NULL")
    env.mas("ALTER TABLE user_passwords DROP COLUMN version")
    with pytest.raises(RefusedError) as err:
        env.run()
    assert "compat_sessions.tenant is new and required" in str(err.value)
    assert "user_passwords.version is missing" in str(err.value)


def test_a_mas_schema_older_than_1_0_is_refused(env):
    env.mas("DELETE FROM _sqlx_migrations WHERE version > 20250101000000")
    with pytest.raises(RefusedError, match=r"older than MAS 1.0.0.*upgrade MAS"):
        env.run()


# -- skips: counted and reported, never a crash ---------------------------------------------

def test_rows_without_user_or_device_and_overlong_values_are_skipped_and_counted(env):
    small_homeserver(env)
    with env.populate() as s:
        ghost = "@ghost:example.test"  # rows whose user row is gone
        s.threepid(ghost, "email", "ghost@example.test")
        s.device(ghost, "GHOSTDEV")
        s.access_token(ghost, "GHOSTDEV")
        s.external_id(ghost, "oidc-google", "ghost-sub")
        s.access_token("@alice:example.test", "DELETEDDEV")  # token whose device was deleted
        s.threepid("@bob:example.test", "email", "b" * 2500 + "@example.test")
        s.access_token("@bob:example.test", "BOBDEV", token="syt_" + "x" * 3000)
    result = env.run()
    counts = result["counts"]
    missing = "user missing from the users table"
    assert counts["emails"]["skipped_reasons"][missing] == {"count": 1, "examples": ["@ghost:example.test ghost@example.test"]}
    assert counts["device_sessions"]["skipped_reasons"][missing]["count"] == 1
    assert counts["access_tokens"]["skipped_reasons"][missing]["count"] == 1
    assert counts["upstream_links"]["skipped_reasons"][missing]["count"] == 1
    assert counts["access_tokens"]["skipped_reasons"]["device gone"]["count"] == 1
    assert counts["emails"]["skipped_reasons"]["value longer than 2000 bytes"]["count"] == 1
    assert counts["access_tokens"]["skipped_reasons"]["value longer than 2000 bytes"]["count"] == 1
    assert env.mas("SELECT count(*) FROM compat_access_tokens") == [(3,)]


def test_ip_addresses_in_every_form_postgres_accepts_are_kept(env):
    good = ["192.0.2.1", "0.0.0.0", "255.255.255.255", "::1", "::", "2001:db8::1", "fe80::1:2:3:4",
            "2001:0db8:0000:0000:0000:0000:0000:0001", "::ffff:192.0.2.1", "64:ff9b::192.0.2.33",
            "1:2:3:4:5:6:7::", "0:0:0:0:0:0:192.0.2.1",
            # PostgreSQL reads IPv4 octets with leading zeros as decimal, so MAS can hold them.
            "01.2.3.4", "010.000.001.0255", "0001.2.3.4"]
    bad = ["256.1.1.1", "1.2.3", "1.2.3.4:8080", "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", "::ffff:999.1.1.1",
           "hello", "12345::", "0256.1.1.1", "::ffff:01.2.3.4", "2001:00db8::1", "0x1.2.3.4"]
    with env.populate() as s:
        user = s.user("alice")
        for i, ip in enumerate(good + bad):
            s.device(user, f"D{i}", ip=ip)
    result = env.run()
    kept = {row[0]: row[1] for row in env.mas("SELECT device_id, host(last_active_ip) FROM compat_sessions")}
    for i, ip in enumerate(good):
        assert kept[f"D{i}"] is not None, ip
        assert kept[f"D{i}"] == env.mas("SELECT host(%s::inet)", (ip,))[0][0], ip
    for i, ip in enumerate(bad, start=len(good)):
        assert kept[f"D{i}"] is None, ip
    assert result["counts"]["device_sessions"]["fixed"] == {"invalid IP address stored as unknown": len(bad)}


# -- atomicity ---------------------------------------------------------------------------------

def test_a_failure_in_the_middle_leaves_mas_as_it_was_and_the_next_run_works(env):
    small_homeserver(env)
    # Make the device stage (after users, passwords, emails, links were loaded) fail.
    env.mas("ALTER TABLE compat_sessions ADD CONSTRAINT test_no_boom CHECK (human_name IS DISTINCT FROM 'boom')")
    with env.populate() as s:
        s.device("@bob:example.test", "BOOMDEV", display_name="boom")
    before = env.mas_dump()
    with pytest.raises(DatabaseError, match="MAS was left as it was"):
        env.run()
    assert env.mas_dump() == before
    env.mas("ALTER TABLE compat_sessions DROP CONSTRAINT test_no_boom")
    assert env.run()["counts"]["device_sessions"]["migrated"] == 4


def test_a_constraint_broken_by_the_data_fails_the_rebuild_and_nothing_is_kept(make_env):
    from tests.support.migration_env import GOOGLE_ID

    # Two Synapse providers mapped onto one MAS provider, with the same subject: MAS's unique
    # (provider, subject) cannot hold, which only the rebuild at the end finds out.
    env = make_env()
    with env.populate() as s:
        a = s.user("a", password_hash=None)
        b = s.user("b", password_hash=None)
        s.external_id(a, "oidc-google", "same-subject")
        s.external_id(b, "oidc", "same-subject")
    before = env.mas_dump()
    with pytest.raises(DataError) as err:
        env.run(upstream_provider_mapping=[f"oidc:{GOOGLE_ID}"])
    assert "upstream_oauth_links_subject_unique" in str(err.value)
    assert "Nothing was written to MAS" in str(err.value)
    assert env.mas_dump() == before


def cli(env, *args, **kw):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bin", "syn2mas"), "--command", "migrate",
         "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def importer_backend(env):
    rows = env.pg.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = 'syn2mas' "
        "AND query LIKE 'COPY%%'", params=(env.mas_db,))
    return rows[0] if rows else None


def test_killing_the_importer_mid_load_leaves_mas_as_it_was(env):
    bulk_homeserver(env, 150_000)
    before = env.mas_dump()
    proc = cli(env)
    try:
        assert wait_for(lambda: importer_backend(env) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the import finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until_no_importer(env)
    assert env.mas_dump() == before
    rerun = cli(env)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert env.mas("SELECT count(*) FROM users") == [(150_000,)]


def test_losing_the_mas_connection_mid_load_leaves_mas_as_it_was(env):
    bulk_homeserver(env, 150_000)
    before = env.mas_dump()
    proc = cli(env)
    backend = wait_for(lambda: importer_backend(env) or proc.poll() is not None, timeout=60)
    assert proc.poll() is None
    env.pg.execute("SELECT pg_terminate_backend(%s)", params=(backend[0],))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("syn2mas: error:")]
    assert len(lines) == 1 and "MAS was left as it was" in lines[0]
    assert "Traceback" not in err
    wait_until_no_importer(env)
    assert env.mas_dump() == before


# -- dry run, re-run, Synapse untouched --------------------------------------------------------

@pytest.mark.parametrize("mas_variant", list(mas_schema.VARIANTS))
def test_dry_run_counts_like_the_real_run_and_leaves_both_databases_byte_for_byte(make_env, mas_variant):
    env = make_env(mas_variant=mas_variant, synapse_filled_by=small_homeserver)
    mas_before, synapse_before = env.mas_dump(), env.synapse_dump()
    dry = env.run(dry_run=True)
    assert env.mas_dump() == mas_before
    assert env.synapse_dump() == synapse_before
    real = env.run()
    assert without_timings(dry["counts"]) == without_timings(real["counts"])
    assert dry["dry_run"] is True and real["dry_run"] is False
    assert env.mas("SELECT count(*) FROM users") == [(3,)]


def test_the_dry_run_predicts_the_window_from_what_it_measured(env_on_small_homeserver):
    """The dry run's predicted window: its own duration, verify's reads measured on its rolled-back rows,
    and the service seconds given (else the default); a real import predicts nothing."""
    from _syn2mas.migration import window

    env = env_on_small_homeserver
    mas_before = env.mas_dump()
    dry = env.run(dry_run=True, window_service_seconds=7)
    parts = dry["predicted_window"]
    assert parts["service_seconds"] == 7.0
    assert 0 < parts["import_seconds"] <= dry["duration_seconds"] + 0.05
    assert parts["verify_seconds"] > 0
    counted = ("import_seconds", "verify_seconds", "service_seconds")
    assert dry["predicted_window_seconds"] == pytest.approx(sum(parts[k] for k in counted), abs=0.06)
    # What only the dry run waited for (its cross-check against Synapse) is given beside the parts, not counted.
    assert parts["cross_check_wait_seconds"] == dry["verify_record_seconds"]["after_rebuild"]
    assert parts["import_seconds"] == pytest.approx(dry["duration_seconds"] - parts["cross_check_wait_seconds"], abs=0.06)
    # Synapse's side of verify is read by the dry run too, as by the real import it predicts.
    assert dry["verify_record_seconds"]["total"] > 0
    assert env.mas_dump() == mas_before
    assert env.run(dry_run=True)["predicted_window"]["service_seconds"] == window.DEFAULT_SERVICE_SECONDS
    real = env.run()
    assert "predicted_window_seconds" not in real and real["dry_run"] is False


def test_the_dry_run_cross_checks_what_it_writes_against_synapse_and_refuses_a_trigger_on_the_way(
        env_on_small_homeserver):
    """The dry run recomputes from Synapse's snapshot every row MAS must hold and compares it with the rows its
    own transaction wrote: on a clean pair it says how many rows it cross-checked. A trigger on a MAS table the
    import writes would change rows on the way (and the real run's verify compares MAS with what it wrote): the
    dry run refuses it before writing, naming it, with both databases as they were."""
    from _syn2mas.migration.stages import STAGES

    env = env_on_small_homeserver
    dry = env.run(dry_run=True)
    migrated = sum(count["migrated"] for count in dry["counts"].values())
    assert migrated > 0
    assert dry["verify_cross_check"] == {"stages": len(STAGES), "rows": migrated}

    env.mas("CREATE FUNCTION flip_admin() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.can_request_admin := NOT NEW.can_request_admin; RETURN NEW; END $$")
    env.mas("CREATE TRIGGER flip_admin BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION flip_admin()")
    mas_before, synapse_before = env.mas_dump(), env.synapse_dump()
    with pytest.raises(RefusedError) as err:
        env.run(dry_run=True)
    assert str(err.value).startswith("mas_row_rewriters: 1 trigger or rule on tables the import writes would change "
                                     "its rows on the way: users (trigger flip_admin)")
    assert (env.mas_dump(), env.synapse_dump()) == (mas_before, synapse_before)


def test_a_second_run_reports_no_change_and_touches_nothing(env):
    small_homeserver(env)
    first = env.run()
    after_first = env.mas_dump()
    second = env.run()
    assert second["changed"] is False and second["already_imported"] is True
    assert second["counts"]["users"]["migrated"] == first["counts"]["users"]["migrated"]
    assert env.mas_dump() == after_first
    # Synapse moved on since: the re-run still changes nothing but says so.
    with env.populate() as s:
        s.user("latecomer")
    third = env.run()
    assert third["changed"] is False
    assert any("does not merge" in w for w in third["warnings"])


def test_the_import_never_writes_to_synapse(env_on_small_homeserver):
    env = env_on_small_homeserver
    before = env.synapse_dump()
    env.run()
    assert env.synapse_dump() == before


def test_synapse_writes_during_the_snapshot_are_blocked_not_lost(env):
    """A real import locks Synapse's tables in SHARE mode: a late write waits for the snapshot (one that will not
    wait is refused). A write still waiting when the import would commit is not lost: the import refuses, naming
    it, and writes nothing to MAS, and the write then lands in Synapse."""
    bulk_homeserver(env, 60_000)
    result, late = {}, {}

    def importer():
        try:
            result["r"] = env.run()
        except RefusedError as exc:
            result["refused"] = str(exc)

    def patient_writer():
        conn = env.pg.connect(env.synapse_db)
        try:
            conn.cursor().execute("INSERT INTO users (name, creation_ts) VALUES ('@late:example.test', 2)")
            late["written"] = True
        except psycopg2.Error as exc:
            late["error"] = exc
        finally:
            conn.close()

    thread = threading.Thread(target=importer)
    thread.start()
    assert wait_for(lambda: importer_backend(env) or not thread.is_alive(), timeout=60)
    writer = env.pg.connect(env.synapse_db)
    writer.cursor().execute("SET lock_timeout = '100ms'")
    with pytest.raises(psycopg2.errors.LockNotAvailable):
        writer.cursor().execute("INSERT INTO users (name, creation_ts) VALUES ('@late:example.test', 1)")
    writer.close()
    waiting = threading.Thread(target=patient_writer)
    waiting.start()
    thread.join(timeout=300)
    waiting.join(timeout=300)
    assert "r" not in result, result["r"]["counts"]
    assert "got other clients during the import" in result["refused"] and "(waiting to write)" in result["refused"]
    assert "nothing was written to MAS" in result["refused"]
    assert env.mas("SELECT count(*) FROM users") == [(0,)]
    assert late == {"written": True}, late
    assert env.pg.execute("SELECT creation_ts FROM users WHERE name = '@late:example.test'", env.synapse_db) == [(2,)]


def test_a_synapse_schema_older_than_1_136_is_refused(env):
    small_homeserver(env)
    env.pg.execute("UPDATE schema_version SET version = 88", env.synapse_db)
    with pytest.raises(RefusedError, match=r"older than Synapse 1.136.0: its schema version is 88, Synapse 1.136.0 has 92"):
        env.run()
