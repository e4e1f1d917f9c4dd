"""Helpers of the import's fault tests: a Synapse big enough to interrupt, and waiting for the
import's sessions to be gone."""

from __future__ import annotations

from .pgcluster import wait_for


def bulk_homeserver(env, users: int) -> None:
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


def importer_sessions(env) -> list:
    """The import's sessions (and their parallel workers) on MAS's and Synapse's databases."""
    return env.pg.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname IN (%s, %s) AND application_name = 'syn2mas'",
        params=(env.mas_db, env.synapse_db))


def wait_until_no_importer(env, timeout: float = 30) -> None:
    assert wait_for(lambda: not importer_sessions(env), timeout=timeout)
