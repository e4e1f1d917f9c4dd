"""What happens after a good import is not damage: MAS's own routine work on the imported rows
(replayed as SQL that writes what MAS's code writes: a stand-in for MAS, which cannot run here) is
reported as MAS at work, exit 0. Verify and the import keep their own session timeouts, and wait
for a lock a bounded time, naming who holds it."""

from __future__ import annotations

import json
import time

import pytest

from _syn2mas.errors import RefusedError
from _syn2mas.migration.importer import run_import
from _syn2mas.migration.verify import VerifyOptions, run_verify, ulid_text
from tests.support import mas_schema
from tests.support.verify_runs import syn2mas
from tests.support.synapse_data import populate_sample


def verify(env, **kw) -> dict:
    return run_verify(VerifyOptions(synapse_config=[env.homeserver_yaml], mas_config=[env.mas_yaml], **kw))


def label(env, username, device=None):
    return f"@{username}:{env.server_name}" + (f" {device}" if device else "")


# -- MAS at work, replayed (stand-in for MAS: each statement is what MAS's storage code runs) -----

def mas_compat_refresh(env) -> tuple:
    """POST /_matrix/client/v3/refresh as MAS serves it (handlers/compat/refresh.rs): a new access
    token and refresh token in the same session, the old refresh token consumed (every unconsumed
    one of the session but the new), the old access token expired, the session's activity recorded."""
    session, access, username, device = env.mas("""
        SELECT s.compat_session_id, r.compat_access_token_id, u.username, s.device_id
        FROM compat_refresh_tokens r JOIN compat_sessions s USING (compat_session_id) JOIN users u USING (user_id)
        WHERE r.consumed_at IS NULL ORDER BY 1 LIMIT 1""")[0]
    env.mas("""
        WITH a AS (INSERT INTO compat_access_tokens (compat_access_token_id, compat_session_id, access_token,
                                                      created_at, expires_at)
                   VALUES (gen_random_uuid(), %(s)s, 'mct_refreshed', now(), now() + interval '5 minutes')
                   RETURNING compat_access_token_id),
             r AS (INSERT INTO compat_refresh_tokens (compat_refresh_token_id, compat_session_id,
                                                      compat_access_token_id, refresh_token, created_at)
                   SELECT gen_random_uuid(), %(s)s, a.compat_access_token_id, 'mcr_refreshed', now() FROM a
                   RETURNING compat_refresh_token_id)
        UPDATE compat_refresh_tokens SET consumed_at = now() FROM r
        WHERE compat_refresh_tokens.compat_session_id = %(s)s AND consumed_at IS NULL
          AND compat_refresh_tokens.compat_refresh_token_id <> r.compat_refresh_token_id""", {"s": session})
    env.mas("UPDATE compat_access_tokens SET expires_at = now() WHERE compat_access_token_id = %s", (access,))
    env.mas("UPDATE compat_sessions SET last_active_at = now(), last_active_ip = '203.0.113.7' "
            "WHERE compat_session_id = %s", (session,))
    return username, device


def mas_lock_and_unlock(env) -> tuple:
    """An admin locks one user (locked_at = now) and unlocks one the import brought over locked."""
    locked = env.mas("UPDATE users SET locked_at = now() WHERE user_id = (SELECT user_id FROM users "
                     "WHERE locked_at IS NULL AND deactivated_at IS NULL ORDER BY username DESC LIMIT 1) "
                     "RETURNING username")[0][0]
    unlocked = env.mas("UPDATE users SET locked_at = NULL WHERE user_id = (SELECT user_id FROM users "
                       "WHERE locked_at IS NOT NULL AND deactivated_at IS NULL ORDER BY 1 LIMIT 1) "
                       "RETURNING username")
    return locked, unlocked[0][0] if unlocked else None


def mas_deactivation(env) -> str:
    """The deactivate-user job (tasks/user.rs): the user deactivated, its compat sessions finished,
    its emails removed."""
    user_id, username = env.mas("""
        SELECT u.user_id, u.username FROM users u WHERE u.deactivated_at IS NULL AND u.locked_at IS NULL
          AND EXISTS (SELECT 1 FROM user_emails e WHERE e.user_id = u.user_id)
          AND EXISTS (SELECT 1 FROM compat_sessions s WHERE s.user_id = u.user_id AND s.device_id IS NOT NULL)
        ORDER BY 2 LIMIT 1""")[0]
    env.mas("UPDATE users SET deactivated_at = now() WHERE user_id = %s", (user_id,))
    env.mas("UPDATE compat_sessions SET finished_at = now() WHERE user_id = %s AND finished_at IS NULL", (user_id,))
    env.mas("DELETE FROM user_emails WHERE user_id = %s", (user_id,))
    return username


def mas_logout(env) -> tuple:
    """POST /logout on a compat session: the session finished."""
    username, device = env.mas("""
        UPDATE compat_sessions s SET finished_at = now() FROM users u
        WHERE u.user_id = s.user_id AND s.compat_session_id = (
            SELECT s2.compat_session_id FROM compat_sessions s2 JOIN users u2 USING (user_id)
            WHERE s2.device_id IS NOT NULL AND s2.finished_at IS NULL AND u2.deactivated_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM compat_refresh_tokens r WHERE r.compat_session_id = s2.compat_session_id)
            ORDER BY u2.username DESC, s2.device_id LIMIT 1)
        RETURNING u.username, s.device_id""")[0]
    return username, device


def mas_email_removed(env) -> str:
    """A user removes an email (graphql removeEmail): the row deleted, the user's provisioning queued."""
    user_id, username = env.mas("""
        DELETE FROM user_emails e USING users u WHERE u.user_id = e.user_id AND e.user_email_id = (
            SELECT e2.user_email_id FROM user_emails e2 JOIN users u2 USING (user_id)
            WHERE u2.deactivated_at IS NULL ORDER BY u2.username DESC LIMIT 1)
        RETURNING u.user_id, u.username""")[0]
    env.mas("INSERT INTO queue_jobs (queue_job_id, created_at, queue_name, payload) "
            "VALUES (gen_random_uuid(), now(), 'provision-user', %s::jsonb)",
            (json.dumps({"user_id": ulid_text(str(user_id))}),))
    return username


def mas_new_login(env) -> str:
    """A password login through MAS's compat API: a session and token of MAS's own."""
    env.mas("WITH s AS (INSERT INTO compat_sessions (compat_session_id, user_id, device_id, created_at, "
            "is_synapse_admin) SELECT gen_random_uuid(), user_id, 'MASLOGIN', now(), false FROM users "
            "WHERE deactivated_at IS NULL ORDER BY username LIMIT 1 RETURNING compat_session_id) "
            "INSERT INTO compat_access_tokens (compat_access_token_id, compat_session_id, access_token, created_at) "
            "SELECT gen_random_uuid(), compat_session_id, 'mct_newlogin', now() FROM s")
    return "MASLOGIN"


@pytest.mark.skipif("real-1.22" not in mas_schema.VARIANTS,
                    reason=f"MAS 1.22's reference dump {mas_schema.real_path('1.22')} is not available")
def test_mas_routine_work_is_reported_as_such_and_not_damage(make_imported_env):
    env = make_imported_env(mas_variant="real-1.22")  # MAS's own schema: its job queue is where removals show
    refreshed = mas_compat_refresh(env)
    locked, unlocked = mas_lock_and_unlock(env)
    deactivated = mas_deactivation(env)
    logged_out = mas_logout(env)
    removed = mas_email_removed(env)
    mas_new_login(env)

    result = verify(env)
    assert result["exit_code"] == 0 and result["ok"] is True, result["verdict"]
    entities = result["entities"]
    changed = {name: e["examples"].get("changed_in_mas", []) for name, e in entities.items()}
    assert label(env, *refreshed) in changed["device_sessions"]
    assert entities["access_tokens"]["changed_in_mas"] >= 1 and entities["refresh_tokens"]["changed_in_mas"] >= 1
    assert entities["access_tokens"]["added_in_mas"] == 2  # the refresh's and the new login's
    assert entities["refresh_tokens"]["added_in_mas"] == 1
    assert label(env, locked) in changed["users"] and label(env, deactivated) in changed["users"]
    if unlocked:
        assert label(env, unlocked) in changed["users"]
    assert label(env, *logged_out) in changed["device_sessions"]
    gone = changed["emails"]
    assert any(n.startswith(label(env, deactivated)) and n.endswith("(gone: user deactivated)") for n in gone), gone
    assert any(n.startswith(label(env, removed)) and n.endswith("(gone: removed by its user)") for n in gone), gone
    assert entities["device_sessions"]["examples"]["added_in_mas"][0].endswith(" device MASLOGIN")
    assert "MAS at work since the import" in result["verdict"]

    # The same email removed with no trace of MAS's work: damage.
    env.mas("DELETE FROM queue_jobs")
    result = verify(env)
    assert result["exit_code"] == 12 and result["entities"]["emails"]["missing"] == 1, result["verdict"]


def test_a_role_with_short_idle_timeouts_does_not_end_import_or_verify(make_env):
    """Some DBAs set idle_in_transaction_session_timeout on every role: the import holds its
    Synapse snapshot open between stages and verify its reads, so both set their own."""
    env = make_env()
    conn = env.pg.connect(env.synapse_db)
    try:
        populate_sample(conn, env.server_name)
    finally:
        conn.close()
    for db in (env.synapse_db, env.mas_db):
        env.pg.execute(f"ALTER DATABASE {db} SET idle_in_transaction_session_timeout = '250ms'")
        env.pg.execute(f"ALTER DATABASE {db} SET statement_timeout = '1s'")
        env.pg.execute(f"ALTER DATABASE {db} SET lock_timeout = '1ms'")
    # The import pauses longer than the idle timeout between its steps (a slow network, a large stage).
    from _syn2mas.migration import importer
    original = importer._load

    def slow_load(*args, **kw):
        time.sleep(0.5)
        return original(*args, **kw)

    importer._load = slow_load
    try:
        result = run_import(env.options())
    finally:
        importer._load = original
    assert result["changed"] is True
    import _syn2mas.migration.verify as verify_module
    original_stage = verify_module._verify_stage

    def slow_stage(*args, **kw):
        time.sleep(0.4)
        return original_stage(*args, **kw)

    verify_module._verify_stage = slow_stage
    try:
        assert verify(env)["exit_code"] == 0
    finally:
        verify_module._verify_stage = original_stage


def test_verify_waits_a_bounded_time_for_a_lock_and_names_its_holder(imported_env):
    # The wait given (the CLI and the module keep the default, 10 s): the bound is what is tested, not its length.
    env = imported_env
    holder = env.pg.connect(env.mas_db, autocommit=False, application_name="dba-shell")
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE compat_sessions IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(RefusedError) as refused:
            verify(env, lock_wait_seconds=1)
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    error = str(refused.value)
    assert "verify waited 1s for a lock on MAS's tables held by dba-shell (pid " in error, error
    assert "compat_sessions" in error
    assert 1 <= waited < 30


def test_a_missing_option_is_a_command_line_error(env):
    run = syn2mas("--command", "verify", "--synapseConfigFile", env.homeserver_yaml)
    assert run.returncode == 2
    assert run.stderr.strip().endswith("syn2mas: error: --masConfigFile is required for verify")
