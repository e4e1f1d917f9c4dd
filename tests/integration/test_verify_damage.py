"""Verify against damage planted in MAS, one kind at a time, on MAS 1.0 and 1.22: each exits 12 and
names the user, device or token and the column. Database level only (one real import per MAS
schema, each case on a copy of its MAS database), so it stays fast."""

from __future__ import annotations

import itertools
import json

import pytest

from _syn2mas.migration.mas_schema import WRITTEN_TABLES
from _syn2mas.migration.stages import STAGES
from _syn2mas.migration.verify import EXIT_MISMATCH, VerifyOptions, run_verify
from tests.support import synapse_schema

_copies = itertools.count()
SERVER = "example.test"


@pytest.fixture(scope="module", params=["own-1.0", "own-1.22"], ids=lambda v: f"mas-{v}")
def imported(request, imported_samples, tmp_path_factory):
    """The real import of the sample Synapse into MAS `variant`, made once for the session
    (conftest's imported_samples); its MAS database is the template each case copies, its Synapse
    database is only read (one case adds a token and takes it out again)."""
    env = imported_samples.read_only(str(tmp_path_factory.mktemp("verify-damage")), synapse_schema.LATEST,
                                     request.param)
    assert env.server_name == SERVER
    env.variant = request.param
    return env


def verify_copy(env, damage) -> tuple:
    """Applies `damage(cursor)` to a copy of the imported MAS database; returns (what damage()
    returned, verify's result on the copy)."""
    copy = f"{env.mas_db}_c{next(_copies)}"
    env.pg.create_database(copy, template=env.mas_db)
    try:
        conn = env.pg.connect(copy)
        try:
            with conn.cursor() as cur:
                # Foreign keys are not what these cases test: the planted value stands as planted.
                cur.execute("SET session_replication_role = replica")
                planted = damage(cur)
        finally:
            conn.close()
        result = run_verify(VerifyOptions(synapse_config=[env.homeserver_yaml], mas_config=[env.mas_yaml],
                                          mas_database_uri=env.pg.dsn(copy)))
    finally:
        env.pg.drop_database(copy)
    return planted, result


def one(cur, sql, params=None):
    cur.execute(sql, params)
    return cur.fetchone()


# -- the cases: each plants one kind of damage and returns (entity, [what its example names]) ------

def created_at_shifted_1us(cur):
    name, = one(cur, "UPDATE users SET created_at = created_at + interval '1 microsecond' WHERE user_id = "
                     "(SELECT user_id FROM users WHERE username <> '' ORDER BY 1 LIMIT 1) RETURNING username")
    return "users", [f"@{name}:{SERVER}", "(created_at)"]


def email_in_lookalike_unicode(cur):
    # A Cyrillic "а" for the Latin "a": looks the same, is another address.
    name, = one(cur, "UPDATE user_emails e SET email = replace(email, 'a', 'а') FROM users u "
                     "WHERE u.user_id = e.user_id AND e.user_email_id = (SELECT user_email_id FROM user_emails "
                     "WHERE email LIKE '%%a%%' ORDER BY 1 LIMIT 1) RETURNING u.username")
    return "emails", [f"@{name}:{SERVER}", "(email)"]


def session_finished_before_the_import(cur):
    name, device = one(cur, "UPDATE compat_sessions s SET finished_at = s.created_at FROM users u "
                            "WHERE u.user_id = s.user_id AND s.compat_session_id = (SELECT compat_session_id "
                            "FROM compat_sessions WHERE device_id IS NOT NULL ORDER BY 1 LIMIT 1) RETURNING u.username, s.device_id")
    return "device_sessions", [f"@{name}:{SERVER} {device}", "(finished_at)"]


def refresh_token_consumed_without_successor(cur):
    name, = one(cur, "UPDATE compat_refresh_tokens r SET consumed_at = now() FROM compat_sessions s, users u "
                     "WHERE s.compat_session_id = r.compat_session_id AND u.user_id = s.user_id AND "
                     "r.compat_refresh_token_id = (SELECT compat_refresh_token_id FROM compat_refresh_tokens ORDER BY 1 LIMIT 1) "
                     "RETURNING u.username")
    return "refresh_tokens", [f"@{name}:{SERVER} refresh token", "(consumed_at)"]


def access_token_expired_without_refresh(cur):
    name, = one(cur, "UPDATE compat_access_tokens t SET expires_at = now() FROM compat_sessions s, users u "
                     "WHERE s.compat_session_id = t.compat_session_id AND u.user_id = s.user_id AND "
                     "t.compat_access_token_id = (SELECT compat_access_token_id FROM compat_access_tokens ORDER BY 1 LIMIT 1) "
                     "RETURNING u.username")
    return "access_tokens", [f"@{name}:{SERVER} token", "(expires_at)"]


def session_tied_to_a_browser_session(cur):
    name, device = one(cur, "UPDATE compat_sessions s SET user_session_id = gen_random_uuid() FROM users u "
                            "WHERE u.user_id = s.user_id AND s.compat_session_id = (SELECT compat_session_id "
                            "FROM compat_sessions WHERE device_id IS NOT NULL ORDER BY 1 DESC LIMIT 1) RETURNING u.username, s.device_id")
    return "device_sessions", [f"@{name}:{SERVER} {device}", "(user_session_id)"]


def password_upgraded_from_another(cur):
    name, = one(cur, "UPDATE user_passwords p SET upgraded_from_id = (SELECT user_password_id "
                     "FROM user_passwords ORDER BY 1 DESC LIMIT 1) FROM users u WHERE u.user_id = p.user_id AND p.user_password_id = "
                     "(SELECT user_password_id FROM user_passwords ORDER BY 1 LIMIT 1) RETURNING u.username")
    return "passwords", [f"@{name}:{SERVER}", "(upgraded_from_id)"]


def link_with_an_account_name(cur):
    name, = one(cur, "UPDATE upstream_oauth_links l SET human_account_name = 'someone else' FROM users u "
                     "WHERE u.user_id = l.user_id AND l.upstream_oauth_link_id = "
                     "(SELECT upstream_oauth_link_id FROM upstream_oauth_links ORDER BY 1 LIMIT 1) RETURNING u.username")
    return "upstream_links", [f"@{name}:{SERVER}", "(human_account_name)"]


def primary_email_set(cur):
    name, = one(cur, "UPDATE users u SET primary_user_email_id = e.user_email_id FROM user_emails e "
                     "WHERE e.user_id = u.user_id AND e.user_email_id = (SELECT user_email_id FROM user_emails ORDER BY 1 LIMIT 1) "
                     "RETURNING u.username")
    return "users", [f"@{name}:{SERVER}", "(primary_user_email_id)"]


def session_handed_to_another_user_and_used(cur):
    # A recent last_active_at (MAS at work) must not hide the user_id changed with it.
    name, device = one(cur, """
        UPDATE compat_sessions s SET user_id = (SELECT user_id FROM users WHERE user_id <> s.user_id ORDER BY 1 LIMIT 1),
               last_active_at = now()
        FROM users u WHERE u.user_id = s.user_id AND s.compat_session_id = (
            SELECT compat_session_id FROM compat_sessions WHERE device_id IS NOT NULL ORDER BY 1 LIMIT 1)
        RETURNING u.username, s.device_id""")
    return "device_sessions", [f"{device}", "(user_id)"]


def username_changed_with_a_lock(cur):
    name, = one(cur, "UPDATE users SET username = username || 'x', locked_at = now() WHERE user_id = "
                     "(SELECT user_id FROM users WHERE deactivated_at IS NULL ORDER BY 1 DESC LIMIT 1) RETURNING username")
    return "users", [f"@{name[:-1]}:{SERVER}", "(username)"]


def password_hash_changed(cur):
    name, = one(cur, "UPDATE user_passwords p SET hashed_password = hashed_password || 'x' FROM users u "
                     "WHERE u.user_id = p.user_id AND p.user_password_id = (SELECT user_password_id "
                     "FROM user_passwords ORDER BY 1 LIMIT 1) RETURNING u.username")
    return "passwords", [f"@{name}:{SERVER}", "(hashed_password)"]


def admin_flag_on_an_imported_user(cur):
    name, = one(cur, "UPDATE users SET can_request_admin = NOT can_request_admin WHERE user_id = "
                     "(SELECT user_id FROM users ORDER BY 1 LIMIT 1) RETURNING username")
    return "users", [f"@{name}:{SERVER}", "(can_request_admin)"]


def user_deleted(cur):
    name, = one(cur, "DELETE FROM users WHERE user_id = (SELECT user_id FROM users ORDER BY 1 LIMIT 1) RETURNING username")
    return "users", [f"@{name}:{SERVER}"]


def access_token_deleted(cur):
    name, = one(cur, "DELETE FROM compat_access_tokens t USING compat_sessions s, users u "
                     "WHERE s.compat_session_id = t.compat_session_id AND u.user_id = s.user_id AND "
                     "t.compat_access_token_id = (SELECT compat_access_token_id FROM compat_access_tokens ORDER BY 1 DESC LIMIT 1) "
                     "RETURNING u.username")
    return "access_tokens", [f"@{name}:{SERVER} token"]


def email_deleted_behind_mas_back(cur):
    name, = one(cur, "DELETE FROM user_emails e USING users u WHERE u.user_id = e.user_id AND "
                     "e.user_email_id = (SELECT user_email_id FROM user_emails ORDER BY 1 DESC LIMIT 1) RETURNING u.username")
    return "emails", [f"@{name}:{SERVER}"]


def extra_admin_user(cur):
    cur.execute("INSERT INTO users (user_id, username, created_at, can_request_admin) VALUES "
                "(gen_random_uuid(), 'sneaky', now(), true)")
    return "users", ["sneaky", "admin flag"]


def extra_user_dated_before_the_import(cur):
    cur.execute("INSERT INTO users (user_id, username, created_at) VALUES "
                "('01234567-89ab-cdef-0123-456789abcdef', 'intruder', timestamptz '2020-01-01')")
    return "users", ["intruder"]


def token_on_an_imported_session(cur):
    name, device = one(cur, """
        INSERT INTO compat_access_tokens (compat_access_token_id, compat_session_id, access_token, created_at)
        SELECT gen_random_uuid(), s.compat_session_id, 'mct_planted', now() FROM compat_sessions s
        WHERE s.compat_session_id = (SELECT compat_session_id FROM compat_sessions WHERE device_id IS NOT NULL ORDER BY 1 LIMIT 1)
        RETURNING (SELECT u.username FROM users u JOIN compat_sessions s USING (user_id)
                   WHERE s.compat_session_id = compat_access_tokens.compat_session_id),
                  (SELECT s.device_id FROM compat_sessions s
                   WHERE s.compat_session_id = compat_access_tokens.compat_session_id)""")
    return "access_tokens", [f"{name} access token of device {device}", "no refresh issued"]


def unique_constraint_dropped(cur):
    cur.execute("ALTER TABLE compat_access_tokens DROP CONSTRAINT compat_access_tokens_access_token_unique")
    return "schema", ["compat_access_tokens_access_token_unique", "missing"]


def foreign_key_dropped(cur):
    cur.execute("ALTER TABLE compat_sessions DROP CONSTRAINT compat_sessions_user_id_fkey")
    return "schema", ["compat_sessions_user_id_fkey", "missing"]


def foreign_key_not_valid(cur):
    cur.execute("ALTER TABLE user_emails DROP CONSTRAINT user_emails_user_id_fkey")
    cur.execute("ALTER TABLE user_emails ADD CONSTRAINT user_emails_user_id_fkey FOREIGN KEY (user_id) "
                "REFERENCES users (user_id) ON DELETE CASCADE NOT VALID")
    return "schema", ["user_emails_user_id_fkey", "NOT VALID"]


def index_dropped(cur):
    name, = one(cur, "SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = "
                     "'compat_sessions'::regclass AND NOT i.indisprimary AND NOT i.indisunique ORDER BY 1 LIMIT 1")
    cur.execute(f"DROP INDEX {name}")
    return "schema", [name, "missing"]


def marker_run_time_edited(cur):
    # The marker's clock moved a day back: without the check, every row would look newer than the
    # import and damage would pass for "Synapse changed".
    cur.execute("SELECT obj_description('users'::regclass, 'pg_class')")
    text = cur.fetchone()[0]
    prefix, payload = text.split(": ", 1)
    marker = json.loads(payload)
    marker["replay"]["run_ms"] -= 86400000
    cur.execute("COMMENT ON TABLE users IS %s", (f"{prefix}: {json.dumps(marker)}",))
    return "marker", ["edited"]


CASES = [created_at_shifted_1us, email_in_lookalike_unicode, session_finished_before_the_import,
         refresh_token_consumed_without_successor, access_token_expired_without_refresh,
         session_tied_to_a_browser_session, password_upgraded_from_another, link_with_an_account_name,
         primary_email_set, session_handed_to_another_user_and_used, username_changed_with_a_lock,
         password_hash_changed, admin_flag_on_an_imported_user, user_deleted, access_token_deleted,
         email_deleted_behind_mas_back, extra_admin_user, extra_user_dated_before_the_import,
         token_on_an_imported_session, unique_constraint_dropped, foreign_key_dropped, foreign_key_not_valid,
         index_dropped, marker_run_time_edited]


def test_a_clean_copy_verifies(imported):
    _planted, result = verify_copy(imported, lambda cur: None)
    assert result["ok"] is True and result["exit_code"] == 0, result["verdict"]
    assert result["schema"]["problems"] == [] and result["schema"]["complete"] is True
    assert all(e["remembered"] for e in result["entities"].values()) and result["notes"] == []


def strip_to_an_older_import(cur):
    """The marker as an import made before the record of what it wrote existed."""
    cur.execute("SELECT obj_description('users'::regclass, 'pg_class')")
    prefix, payload = cur.fetchone()[0].split(": ", 1)
    marker = json.loads(payload)
    for key in ("xid", "digest", "rebuilt"):
        marker.pop(key)
    cur.execute("COMMENT ON TABLE users IS %s", (f"{prefix}: {json.dumps(marker)}",))


def test_an_import_made_before_the_record_still_verifies_and_says_what_it_cannot_tell(imported):
    _planted, result = verify_copy(imported, strip_to_an_older_import)
    assert result["exit_code"] == 0, result["verdict"]
    assert not any(e["remembered"] for e in result["entities"].values())
    assert any("told from damage by its dates only" in note for note in result["notes"])
    assert any("a missing one cannot be told" in note for note in result["notes"])
    # Damage is still damage.
    _planted, result = verify_copy(imported, lambda cur: (strip_to_an_older_import(cur),
                                                          password_hash_changed(cur)))
    assert result["exit_code"] == EXIT_MISMATCH and result["damaged"] == ["passwords"], result["verdict"]


@pytest.mark.parametrize("damage", [case for case in CASES if case is not primary_email_set], ids=lambda f: f.__name__)
def test_planted_damage_exits_12_and_is_named(imported, damage):
    assert_damage_named(imported, damage)


# users.primary_user_email_id exists on MAS 1.0 only: the case runs there, and is not generated for 1.22.
@pytest.mark.parametrize("imported", ["own-1.0"], indirect=True, ids=lambda v: f"mas-{v}")
def test_planted_primary_email_exits_12_and_is_named(imported):
    assert_damage_named(imported, primary_email_set)


def assert_damage_named(imported, damage):
    (entity, needles), result = verify_copy(imported, damage)
    assert result["exit_code"] == EXIT_MISMATCH and result["ok"] is False, result["verdict"]
    assert entity in result["damaged"], result["verdict"]
    if entity == "schema":
        named = result["schema"]["problems"]
    elif entity == "marker":
        named = [result["verdict"]]
    else:
        examples = result["entities"][entity]["examples"]
        named = [n for kind in ("missing", "different", "unexpected") for n in examples.get(kind, [])]
    assert any(all(needle in name for needle in needles) for name in named), (needles, named)


def test_every_column_the_import_sets_is_compared(imported):
    """The compared columns come from the import's own lists: a column added to the import (or one
    it leaves NULL) cannot be left out of the proof."""
    _planted, result = verify_copy(imported, lambda cur: None)
    query = "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
    release_columns = {t: {r[0] for r in imported.mas(query, (t,))} for t in WRITTEN_TABLES}
    for stage in STAGES:
        spec = WRITTEN_TABLES[stage.table]
        every = [c for c in spec["write"] + spec["optional"] + spec["leave"] if c in release_columns[stage.table]]
        assert sorted(result["entities"][stage.name]["columns"]) == sorted(every), stage.name
        # ... and the import writes each of them from the stage, or leaves it to NULL.
        assert set(stage.columns) | set(stage.optional_columns) >= set(spec["write"]) | set(spec["optional"])


def test_a_session_hijacked_in_mas_is_damage_though_its_device_logged_in_since(imported):
    """A Synapse device with a token newer than the import explains its activity columns, never its
    user."""
    user, device = imported.pg.execute(
        "SELECT d.user_id, d.device_id FROM devices d JOIN users u ON u.name = d.user_id WHERE NOT d.hidden "
        "AND u.deactivated = 0 AND u.is_guest = 0 AND u.appservice_id IS NULL ORDER BY 1, 2 LIMIT 1",
        imported.synapse_db)[0]
    # A token issued after the import (above its high-water mark), not yet validated: the session's
    # id, dated by its first validated token, stays as imported.
    imported.pg.execute("INSERT INTO access_tokens (id, user_id, device_id, token, used) "
                        "SELECT max(id) + 1, %s, %s, 'syt_after_the_import', false FROM access_tokens",
                        imported.synapse_db, (user, device))
    try:
        def hijack(cur):
            cur.execute("UPDATE compat_sessions s SET user_id = (SELECT user_id FROM users WHERE user_id <> s.user_id "
                        "ORDER BY 1 LIMIT 1) FROM users u WHERE u.user_id = s.user_id AND u.username = %s "
                        "AND s.device_id = %s", (user[1:].split(":")[0], device))
        _planted, result = verify_copy(imported, hijack)
    finally:
        imported.pg.execute("DELETE FROM access_tokens WHERE token = 'syt_after_the_import'", imported.synapse_db)
    sessions = result["entities"]["device_sessions"]
    assert result["exit_code"] == EXIT_MISMATCH, result["verdict"]
    assert sessions["examples"].get("different") == [f"{user} {device} (user_id)"], sessions
    assert result["entities"]["access_tokens"]["changed_in_synapse"] == 1
