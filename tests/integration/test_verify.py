"""`syn2mas --command verify`: after a real import on real schemas, MAS is proven to hold what
Synapse says it must; damage planted in MAS is found and named; a Synapse that moved on after the
import is told apart from damage; neither database changes."""

from __future__ import annotations

import json

from _syn2mas.migration.verify import EXIT_MISMATCH, VerifyOptions, run_verify
from tests.support.ansible_run import run_tasks
from tests.support.synapse_data import SynapseData
from tests.support.verify_runs import verify_cli


def verify(env) -> dict:
    return run_verify(VerifyOptions(synapse_config=[env.homeserver_yaml], mas_config=[env.mas_yaml]))


def test_clean_import_verifies_and_leaves_both_databases_as_they_were(imported_samples, tmp_path, synapse_version,
                                                                      mas_variant):
    # Every MAS schema (1.0 and 1.22, this project's and MAS's own where present), both Synapse releases; the
    # import of the session's pair, read in place: verify must leave both databases as they were.
    env = imported_samples.read_only(str(tmp_path), synapse_version, mas_variant)
    result = env.import_result
    synapse_before, mas_before = env.synapse_dump(), env.mas_dump()

    run = verify_cli(env)
    assert run.returncode == 0, run.stdout + run.stderr
    total = sum(stage["migrated"] for stage in result["counts"].values())
    last = run.stdout.strip().splitlines()[-1]
    assert last == f"verified: {total} rows in 9 entities, 0 missing"
    # The skips are those of the import, with its reasons.
    appservice = result["counts"]["users"]["skipped_reasons"]["appservice user (not migrated)"]["count"]
    assert f"users: {appservice} skipped as the import skips them: appservice user (not migrated)" in run.stdout

    as_json = json.loads(verify_cli(env, "--output", "json").stdout)
    assert as_json["ok"] is True and as_json["exit_code"] == 0
    for name, stage in result["counts"].items():
        entity = as_json["entities"][name]
        assert entity["expected"] == entity["found"] == entity["imported"] == stage["migrated"], name
        assert sum(entity["skipped"].values()) == stage["skipped"], name

    assert env.synapse_dump() == synapse_before
    assert env.mas_dump() == mas_before


def test_each_kind_of_damage_is_found_and_named(imported_env):
    env = imported_env
    # A missing user (and what hangs on it), a changed password hash, a dropped token, a session
    # moved to another device, an extra row.
    victim = env.mas("SELECT username FROM users u WHERE NOT deactivated_at IS NOT NULL AND NOT EXISTS "
                     "(SELECT 1 FROM user_passwords p WHERE p.user_id = u.user_id) AND NOT EXISTS "
                     "(SELECT 1 FROM compat_sessions s WHERE s.user_id = u.user_id) AND NOT EXISTS "
                     "(SELECT 1 FROM user_emails e WHERE e.user_id = u.user_id) AND NOT EXISTS "
                     "(SELECT 1 FROM user_unsupported_third_party_ids t WHERE t.user_id = u.user_id) AND NOT EXISTS "
                     "(SELECT 1 FROM upstream_oauth_links l WHERE l.user_id = u.user_id) ORDER BY 1 LIMIT 1")[0][0]
    env.mas("DELETE FROM users WHERE username = %s", (victim,))
    hashed = env.mas("SELECT u.username FROM user_passwords p JOIN users u USING (user_id) ORDER BY 1 LIMIT 1")[0][0]
    env.mas("UPDATE user_passwords SET hashed_password = hashed_password || 'x' "
            "WHERE user_id = (SELECT user_id FROM users WHERE username = %s)", (hashed,))
    dropped = env.mas("SELECT u.username, s.device_id, t.access_token FROM compat_access_tokens t "
                      "JOIN compat_sessions s USING (compat_session_id) JOIN users u USING (user_id) "
                      "WHERE s.device_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM compat_refresh_tokens r "
                      "WHERE r.compat_access_token_id = t.compat_access_token_id) ORDER BY 1, 2 LIMIT 1")[0]
    env.mas("DELETE FROM compat_access_tokens WHERE access_token = %s", (dropped[2],))
    moved = env.mas("SELECT u.username, s.device_id FROM compat_sessions s JOIN users u USING (user_id) "
                    "WHERE s.device_id IS NOT NULL AND s.device_id <> %s ORDER BY 1 DESC, 2 LIMIT 1",
                    (dropped[1],))[0]
    env.mas("UPDATE compat_sessions SET device_id = 'ELSEWHERE' WHERE device_id = %s "
            "AND user_id = (SELECT user_id FROM users WHERE username = %s)", (moved[1], moved[0]))
    env.mas("INSERT INTO users (user_id, username, created_at) VALUES "
            "('01234567-89ab-cdef-0123-456789abcdef', 'intruder', timestamptz '2020-01-01')")
    hashes = [row[0] for row in env.mas("SELECT hashed_password FROM user_passwords")]
    synapse_before, mas_before = env.synapse_dump(), env.mas_dump()

    run = verify_cli(env)
    assert run.returncode == EXIT_MISMATCH, run.stdout + run.stderr
    out = run.stdout
    assert f"MISSING in MAS: users: 1 (e.g. @{victim}:{env.server_name})" in out
    # Each different row names the column that differs.
    assert f"DIFFERENT in MAS: passwords: 1 (e.g. @{hashed}:{env.server_name} (hashed_password))" in out
    assert f"MISSING in MAS: access_tokens: 1 (e.g. @{dropped[0]}:{env.server_name} token " in out
    assert f"DIFFERENT in MAS: device_sessions: 1 (e.g. @{moved[0]}:{env.server_name} {moved[1]} (device_id))" in out
    assert "UNEXPECTED in MAS: users: 1 (e.g. intruder)" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("MISMATCH: 2 missing, 2 different, 1 unexpected in users, passwords, "
                           "device_sessions, access_tokens"), last
    # Never a token or a hash in clear.
    assert dropped[2] not in out and not any(h in out for h in hashes)
    as_json = verify_cli(env, "--output", "json")
    assert as_json.returncode == EXIT_MISMATCH
    assert dropped[2] not in as_json.stdout and not any(h in as_json.stdout for h in hashes)
    assert json.loads(as_json.stdout)["entities"]["access_tokens"]["missing"] == 1
    assert json.loads(as_json.stdout)["damaged"] == ["users", "passwords", "device_sessions", "access_tokens"]
    assert env.synapse_dump() == synapse_before and env.mas_dump() == mas_before


def test_a_login_on_synapse_after_the_import_is_a_change_not_damage(imported_env):
    env = imported_env
    conn = env.pg.connect(env.synapse_db)
    try:
        synapse = SynapseData(conn, env.server_name, seed=7)
        user = env.mas("SELECT username FROM users WHERE deactivated_at IS NULL AND NOT is_guest "
                       "ORDER BY 1 LIMIT 1")[0][0]
        login = synapse.login(synapse.mxid(user), "NEWPHONE")
    finally:
        conn.close()

    result = verify(env)
    assert result["ok"] is True and result["exit_code"] == 0
    assert result["synapse_changed_since_import"] is True
    sessions, tokens = result["entities"]["device_sessions"], result["entities"]["access_tokens"]
    assert (sessions["missing"], sessions["changed_in_synapse"]) == (0, 1)
    assert sessions["examples"]["changed_in_synapse"] == [f"{login.user_id} NEWPHONE"]
    assert (tokens["missing"], tokens["changed_in_synapse"]) == (0, 1)
    assert "Synapse changed since the import: 2 row(s)" in result["verdict"]
    run = verify_cli(env)
    assert run.returncode == 0
    assert f"CHANGED in Synapse since the import: device_sessions: 1 (e.g. {login.user_id} NEWPHONE)" in run.stdout
    assert login.access_token not in run.stdout


def test_nothing_to_verify_without_an_import(env):
    run = verify_cli(env, "--output", "json")
    assert run.returncode == 1
    assert "no import by matrix.syn2mas" in json.loads(run.stdout)["error"]


def test_module_in_check_mode_and_for_real_fails_on_damage_only(imported_env, tmp_path):
    env = imported_env
    task = {"matrix.syn2mas.syn2mas_verify": {"synapse_config": [env.homeserver_yaml], "mas_config": [env.mas_yaml]}}
    mas_before, synapse_before = env.mas_dump(), env.synapse_dump()
    for check in (True, False):
        run = run_tasks(tmp_path, [task], check=check)
        result = run.result
        assert not result.get("failed"), result
        assert result["changed"] is False and result["ok"] is True
        assert result["verdict"] == [result["data"]["verdict"]]
        assert result["verdict"][0].endswith(" rows in 9 entities, 0 missing")
    assert env.mas_dump() == mas_before and env.synapse_dump() == synapse_before

    token = env.mas("SELECT access_token FROM compat_access_tokens ORDER BY 1 LIMIT 1")[0][0]
    env.mas("UPDATE compat_access_tokens SET expires_at = timestamptz '2031-01-01' WHERE access_token = %s", (token,))
    relaxed = {"matrix.syn2mas.syn2mas_verify": dict(task["matrix.syn2mas.syn2mas_verify"], fail_on_mismatch=False)}
    run = run_tasks(tmp_path, [task, relaxed])  # one run: verify reads, the damage stays for the second task
    damaged, relaxed_result = run.results
    assert damaged["failed"] is True
    assert damaged["msg"].startswith("MISMATCH: 0 missing, 1 different, 0 unexpected in access_tokens")
    assert damaged["data"]["entities"]["access_tokens"]["different"] == 1
    assert token not in run.stdout
    assert not relaxed_result.get("failed") and relaxed_result["ok"] is False


def test_mas_at_work_after_the_import_is_not_damage(imported_env):
    """Once MAS runs, it uses sessions, locks users and adds logins of its own: not damage."""
    env = imported_env
    env.mas("UPDATE compat_sessions SET last_active_at = now(), last_active_ip = '203.0.113.9' "
            "WHERE compat_session_id = (SELECT compat_session_id FROM compat_sessions WHERE device_id IS NOT NULL "
            "ORDER BY 1 LIMIT 1)")
    env.mas("UPDATE users SET locked_at = now() WHERE username = (SELECT min(username) FROM users)")
    # A login through MAS: a new session of MAS's own (a random ULID) with its token.
    env.mas("INSERT INTO compat_sessions (compat_session_id, user_id, device_id, created_at, is_synapse_admin) "
            "SELECT '01938a6e-1f2b-7c3d-8e4f-5a6b7c8d9e0f', user_id, 'MASLOGIN', now(), false FROM users "
            "ORDER BY username LIMIT 1")
    result = verify(env)
    assert result["ok"] is True, result["verdict"]
    assert result["entities"]["device_sessions"]["changed_in_mas"] == 1
    assert result["entities"]["device_sessions"]["added_in_mas"] == 1
    assert result["entities"]["users"]["changed_in_mas"] == 1
    assert result["verdict"].endswith("MAS at work since the import: 2 row(s) changed (sessions used or logged "
                                      "out, tokens refreshed, users locked or deactivated, emails removed), 1 added")
    assert result["entities"]["device_sessions"]["examples"]["added_in_mas"][0].endswith(" device MASLOGIN")


def test_both_digests_agree_on_a_clean_import(imported_env):
    """PostgreSQL 13 servers digest rows as text (md5): that way proves a clean import too, and a
    changed row shows in its bucket either way."""
    from _syn2mas.migration import verify as v
    from _syn2mas.migration.mas_schema import detect
    from _syn2mas.migration.mas_writer import read_marker
    from _syn2mas.migration.stages import STAGES

    env = imported_env
    synapse, mas = env.pg.connect(env.synapse_db), env.pg.connect(env.mas_db)
    try:
        params = v.replay_params(env.server_name, read_marker(mas)["replay"])
        params["new_token_devices"] = []
        schema = detect(mas)
        for row_hash in v.ROW_HASHES:
            for stage in STAGES:
                columns = schema.target_columns(stage.table)
                types, key = v._mas_columns(mas, stage.table)
                report = v.EntityReport(stage.name, stage.table)
                differing = v.compare_buckets(report, *v.both(
                    synapse, v.expected_buckets_query(stage, columns, types, key, row_hash),
                    mas, v.found_buckets_query(stage, stage.table, columns, types, key, row_hash), params))
                assert differing == [] and report.found > 0, (row_hash, stage.name)
        env.mas("UPDATE users SET can_request_admin = NOT can_request_admin "
                "WHERE username = (SELECT min(username) FROM users)")
        stage = STAGES[0]
        types, key = v._mas_columns(mas, stage.table)
        for row_hash in v.ROW_HASHES:
            report = v.EntityReport(stage.name, stage.table)
            differing = v.compare_buckets(report, *v.both(
                synapse, v.expected_buckets_query(stage, schema.target_columns("users"), types, key, row_hash),
                mas, v.found_buckets_query(stage, "users", schema.target_columns("users"), types, key, row_hash),
                params))
            assert len(differing) == 1, row_hash
    finally:
        synapse.close()
        mas.close()


def test_what_the_import_wrote_stands_for_synapses_side_only_while_synapse_is_unchanged(imported_env):
    """The import records the digests of the rows it wrote, in its transaction: they are what Synapse's
    side recomputed now gives, verify compares MAS with them while Synapse's tables are unchanged, and
    reads Synapse for an entity whose totals differ (damage, then named as before) or once Synapse changed."""
    from _syn2mas.migration import verify as v
    from _syn2mas.migration.mas_schema import detect
    from _syn2mas.migration.mas_writer import read_marker

    env = imported_env
    timing = env.import_result["verify_record_seconds"]
    assert timing["total"] > 0 and 0 <= timing["after_rebuild"] <= timing["total"]
    synapse, mas = env.pg.connect(env.synapse_db), env.pg.connect(env.mas_db)
    try:
        marker = read_marker(mas)
        recorded = marker["expected"]
        now = v.expected_totals(synapse, v.stage_layouts(mas, detect(mas)), marker["replay"], env.server_name,
                                v.row_hash_kind(synapse, mas))
    finally:
        synapse.close()
        mas.close()
    assert now == recorded
    assert all(stage["rows"] > 0 for stage in recorded["stages"].values())

    result = verify(env)
    assert result["ok"] is True
    assert {e["expected_from"] for e in result["entities"].values()} == {"import"}
    for name, entity in result["entities"].items():
        assert entity["expected"] == entity["found"] == recorded["stages"][name]["rows"], name
    # Asked to, verify recomputes every entity from Synapse itself, with the same figures.
    run = verify_cli(env, "--recomputeFromSynapse", "--output", "json")
    assert run.returncode == 0, run.stdout + run.stderr
    audit = json.loads(run.stdout)
    assert {e["expected_from"] for e in audit["entities"].values()} == {"synapse"}
    assert ({n: (e["expected"], e["found"]) for n, e in audit["entities"].items()}
            == {n: (e["expected"], e["found"]) for n, e in result["entities"].items()})

    username = env.mas("SELECT min(username) FROM users")[0][0]
    env.mas("UPDATE users SET can_request_admin = NOT can_request_admin WHERE username = %s", (username,))
    # What a dry run's cross-check would say of such rows: the entity, same number, other values.
    synapse, mas = env.pg.connect(env.synapse_db), env.pg.connect(env.mas_db)
    try:
        skipped = {name: stage["skipped"] for name, stage in recorded["stages"].items()}
        written = v.written_totals(mas, v.stage_layouts(mas, detect(mas)), marker["replay"], env.server_name,
                                   v.row_hash_kind(synapse, mas), skipped)
    finally:
        synapse.close()
        mas.close()
    rows = recorded["stages"]["users"]["rows"]
    assert v.totals_differences(now, written) == [
        f"users: {rows} rows written, {rows} expected from Synapse (the same number, other values)"]
    result = verify(env)
    assert result["exit_code"] == EXIT_MISMATCH and result["damaged"] == ["users"]
    users = result["entities"]["users"]
    assert users["expected_from"] == "synapse"
    named = f"@{username}:{env.server_name} (can_request_admin)"
    assert (users["different"], users["examples"]["different"]) == (1, [named])
    assert {e["expected_from"] for n, e in result["entities"].items() if n != "users"} == {"import"}
    env.mas("UPDATE users SET can_request_admin = NOT can_request_admin WHERE username = %s", (username,))

    active = env.mas("SELECT min(username) FROM users WHERE deactivated_at IS NULL AND NOT is_guest")[0][0]
    conn = env.pg.connect(env.synapse_db)
    try:
        synapse = SynapseData(conn, env.server_name, seed=7)
        synapse.login(synapse.mxid(active), "NEWPHONE")
    finally:
        conn.close()
    result = verify(env)
    assert result["ok"] is True and result["synapse_changed_since_import"] is True
    assert result["entities"]["device_sessions"]["changed_in_synapse"] == 1
    assert {e["expected_from"] for e in result["entities"].values()} == {"synapse"}


def test_module_refuses_data_without_mas_database(tmp_path):
    """Which MAS database to verify is asked for before any configuration is read."""
    run = run_tasks(tmp_path, [{"matrix.syn2mas.syn2mas_verify": {"synapse_config": ["/nonexistent/homeserver.yaml"]}}])
    assert run.result["failed"] is True
    assert run.result["msg"] == "mas_config (or mas_database_uri) is needed to verify the data"
    assert "data" not in run.result
