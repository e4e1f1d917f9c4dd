"""What lands in MAS for each kind of Synapse row: the mapping rules, on every supported schema pair."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support import mas_schema, synapse_schema
from tests.support.migration_env import GOOGLE_ID, LEGACY_ID

T0 = 1_700_000_000  # seconds
UTC = dt.timezone.utc


def at_s(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def at_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def build(s) -> dict:
    """A small homeserver with one user of each kind; returns the keys the assertions need."""
    k = {}
    k["alice"] = s.user("alice", admin=True, creation_ts=T0)
    k["bob"] = s.user("bob", creation_ts=T0 + 10, password_hash="$2b$12$bobbobbobbobbobbobbobu8mJm4bQhZkP6bMZ6JcxF3aVVpuQ6fS")
    k["carol"] = s.user("carol", locked=True, creation_ts=T0 + 20)
    k["dave"] = s.user("dave", deactivated=True, creation_ts=T0 + 30)
    k["guest"] = s.user("1234", guest=True, password_hash=None, creation_ts=T0 + 40)
    k["sso"] = s.user("sso_user", password_hash=None, creation_ts=T0 + 50)
    k["legacy"] = s.user("legacy_sso", password_hash=None, creation_ts=T0 + 60)
    k["bridge"] = s.user("_bridge_bot", appservice_id="bridge", password_hash=None, creation_ts=T0 + 70)
    k["nocreated"] = s.user("old_timer", creation_ts=None)

    s.threepid(k["alice"], "email", "alice@example.test", added_at=(T0 + 100) * 1000, validated_at=(T0 + 101) * 1000)
    s.threepid(k["alice"], "msisdn", "447700900001", added_at=(T0 + 200) * 1000)
    s.threepid(k["dave"], "email", "dave@example.test", added_at=(T0 + 300) * 1000)
    s.threepid(k["dave"], "msisdn", "447700900002", added_at=(T0 + 300) * 1000)
    s.threepid(k["bridge"], "email", "bridge@example.test", added_at=(T0 + 300) * 1000)
    s.external_id(k["sso"], "oidc-google", "google-subject-1")
    s.external_id(k["legacy"], "oidc", "legacy-subject-1")
    s.external_id(k["bridge"], "oidc-google", "bridge-subject")

    k["phone"] = s.login(k["alice"], "PHONE", display_name="Alice\u2019s phone 📱", last_seen=(T0 + 500) * 1000,
                         ip="2001:db8::1", user_agent="Element X/25.01 (iPhone)")
    k["laptop"] = s.login(k["alice"], "LAPTOP", display_name="Laptop", last_seen=(T0 + 600) * 1000,
                          ip="not-an-ip", user_agent="Firefox")
    k["alice_second_token"] = s.access_token(k["alice"], "PHONE", last_validated=(T0 + 550) * 1000,
                                             valid_until_ms=(T0 + 9999) * 1000)
    s.device(k["alice"], "NOTOKENS", display_name="Idle tablet", last_seen=None, ip="-")
    k["hidden"] = s.cross_signing_devices(k["alice"])
    k["deviceless"] = s.access_token(k["alice"], None, last_validated=(T0 + 700) * 1000)
    k["puppet"] = s.access_token(k["alice"], None, puppets_user_id=k["bob"])
    k["bob_refresh"] = s.login(k["bob"], "BOBDEV", with_refresh=True, ip="192.0.2.7")
    k["bob_refreshed"] = s.refresh(k["bob_refresh"], successor_used=False)  # both pairs stay
    k["carol_login"] = s.login(k["carol"], "CAROLDEV", with_refresh=True)
    k["carol_new"] = s.refresh(k["carol_login"], successor_used=True)  # the old pair is obsolete
    k["dave_login"] = s.login(k["dave"], "DAVEDEV")
    k["guest_login"] = s.login(k["guest"], "guest_device")
    k["bridge_login"] = s.login(k["bridge"], "BRIDGEDEV")
    return k


@pytest.mark.parametrize("mas_variant", list(mas_schema.VARIANTS))
@pytest.mark.parametrize("synapse_version", synapse_schema.VERSIONS)
def test_every_kind_of_row_lands_where_mas_expects_it(make_env, synapse_version, mas_variant):
    env = make_env(synapse_version=synapse_version, mas_variant=mas_variant)
    with env.populate() as s:
        k = build(s)
    result = env.run()
    assert result["changed"] is True and result["dry_run"] is False

    # users: localpart, times, flags; the appservice user stays behind
    users = {row[0]: row[1:] for row in env.mas(
        "SELECT username, created_at, locked_at, can_request_admin, is_guest, deactivated_at FROM users")}
    assert set(users) == {"alice", "bob", "carol", "dave", "1234", "sso_user", "legacy_sso", "old_timer"}
    assert users["alice"] == (at_s(T0), None, True, False, None)
    assert users["carol"] == (at_s(T0 + 20), at_s(T0 + 20), False, False, None)
    assert users["dave"] == (at_s(T0 + 30), None, False, False, at_s(T0 + 30))
    assert users["1234"][3] is True
    assert result["counts"]["users"]["skipped_reasons"] == {
        "appservice user (not migrated)": {"count": 1, "examples": [k["bridge"]]}}

    # user ids are ULIDs: their first 48 bits are the creation time in ms
    (user_id,), = env.mas("SELECT user_id FROM users WHERE username = 'bob'")
    assert int(user_id.hex[:12], 16) == (T0 + 10) * 1000

    # passwords: verbatim, scheme version 1, only for users that had one
    passwords = dict(env.mas("SELECT u.username, p.hashed_password || '|' || p.version FROM user_passwords p "
                             "JOIN users u USING (user_id)"))
    assert passwords["bob"] == "$2b$12$bobbobbobbobbobbobbobu8mJm4bQhZkP6bMZ6JcxF3aVVpuQ6fS|1"
    assert set(passwords) == {"alice", "bob", "carol", "dave", "old_timer"}

    # emails and other third-party ids
    emails = env.mas("SELECT u.username, e.email, e.created_at FROM user_emails e JOIN users u USING (user_id) "
                     "ORDER BY 1")
    # a deactivated user's emails stay behind like its phone numbers: MAS drops both on deactivation
    assert emails == [("alice", "alice@example.test", at_ms((T0 + 100) * 1000))]
    assert result["counts"]["emails"]["skipped_reasons"]["user deactivated (MAS drops these on deactivation)"] == {
        "count": 1, "examples": ["@dave:example.test dave@example.test"]}
    if "confirmed_at" in dict(env.mas("SELECT column_name, 1 FROM information_schema.columns "
                                      "WHERE table_name = 'user_emails'")):
        assert env.mas("SELECT confirmed_at FROM user_emails e JOIN users u USING (user_id) "
                       "WHERE username = 'alice'") == [(at_ms((T0 + 101) * 1000),)]
    assert env.mas("SELECT u.username, t.medium, t.address FROM user_unsupported_third_party_ids t "
                   "JOIN users u USING (user_id)") == [("alice", "msisdn", "447700900001")]
    assert result["counts"]["other_threepids"]["skipped"] == 1  # dave is deactivated

    # SSO links, through each provider's synapse_idp_id
    links = sorted(env.mas("SELECT u.username, l.upstream_oauth_provider_id, l.subject FROM upstream_oauth_links l "
                           "JOIN users u USING (user_id)"))
    assert links == [("legacy_sso", LEGACY_ID, "legacy-subject-1"), ("sso_user", GOOGLE_ID, "google-subject-1")]

    # one compat session per device with its metadata; hidden devices, deactivated users and guests: none
    sessions = {row[0]: row[1:] for row in env.mas(
        "SELECT s.device_id, u.username, s.human_name, s.last_active_at, host(s.last_active_ip), s.user_agent, "
        "s.is_synapse_admin FROM compat_sessions s JOIN users u USING (user_id) WHERE s.device_id IS NOT NULL")}
    assert set(sessions) == {"PHONE", "LAPTOP", "NOTOKENS", "BOBDEV", "CAROLDEV"}
    assert sessions["PHONE"] == ("alice", "Alice\u2019s phone 📱", at_s(T0 + 500), "2001:db8::1",
                                 "Element X/25.01 (iPhone)", True)
    assert sessions["LAPTOP"][3] is None  # 'not-an-ip' stored as unknown, and reported
    assert sessions["NOTOKENS"][3] is None  # '-' is Synapse's "unknown"
    assert sessions["BOBDEV"][5] is False
    assert result["counts"]["device_sessions"]["fixed"] == {"invalid IP address stored as unknown": 1}
    reasons = result["counts"]["device_sessions"]["skipped_reasons"]
    assert reasons["hidden device (cross-signing keys, not a session)"]["count"] == 3
    assert reasons["user deactivated"]["count"] == 1
    assert reasons["guest user (MAS has no guest sessions)"]["count"] == 1
    assert reasons["appservice user (not migrated)"]["count"] == 1

    # access tokens: verbatim, on the session of their device, with their expiry
    tokens = {row[0]: row[1:] for row in env.mas(
        "SELECT t.access_token, s.device_id, u.username, t.expires_at FROM compat_access_tokens t "
        "JOIN compat_sessions s USING (compat_session_id) JOIN users u ON u.user_id = s.user_id")}
    assert tokens[k["phone"].access_token][:2] == ("PHONE", "alice")
    assert tokens[k["alice_second_token"][1]] == ("PHONE", "alice", at_s(T0 + 9999))
    assert tokens[k["laptop"].access_token][:2] == ("LAPTOP", "alice")
    # a deviceless token gets a session of its own, without a device
    assert tokens[k["deviceless"][1]][:2] == (None, "alice")
    # refresh: bob's refreshed pair whose successor was never used stays, with the successor
    assert tokens[k["bob_refresh"].access_token][:2] == ("BOBDEV", "bob")
    assert tokens[k["bob_refreshed"].access_token][:2] == ("BOBDEV", "bob")
    # carol's old pair is obsolete (its successor was used): only the new pair comes over
    assert k["carol_login"].access_token not in tokens
    assert tokens[k["carol_new"].access_token][:2] == ("CAROLDEV", "carol")
    for gone in (k["puppet"][1], k["dave_login"].access_token, k["guest_login"].access_token,
                 k["bridge_login"].access_token):
        assert gone not in tokens
    assert len(tokens) == 7
    token_reasons = result["counts"]["access_tokens"]["skipped_reasons"]
    assert token_reasons["puppet token (admin login as another user)"]["count"] == 1
    assert token_reasons["obsolete (refreshed, and the new token was used)"]["count"] == 1
    # examples name users and token ids, never the secret token strings
    for info in token_reasons.values():
        assert not any(t in e for e in info["examples"] for t in tokens)

    refresh = dict(env.mas(
        "SELECT r.refresh_token, a.access_token FROM compat_refresh_tokens r "
        "JOIN compat_access_tokens a USING (compat_access_token_id) "
        "WHERE r.compat_session_id = a.compat_session_id AND r.consumed_at IS NULL"))
    assert refresh == {k["bob_refresh"].refresh_token: k["bob_refresh"].access_token,
                       k["bob_refreshed"].refresh_token: k["bob_refreshed"].access_token,
                       k["carol_new"].refresh_token: k["carol_new"].access_token}

    # no session was left without its device's tokens, and every session is a device or a deviceless token
    assert env.mas("SELECT count(*) FROM compat_sessions WHERE device_id IS NULL") == [(1,)]
    assert result["counts"]["deviceless_sessions"]["migrated"] == 1


@pytest.mark.parametrize("mas_variant", list(mas_schema.VARIANTS))
def test_mas_schema_is_restored_exactly_after_the_import(make_env, mas_variant):
    """Constraints and indexes are dropped for the load and rebuilt: the schema must be the same."""
    env = make_env(mas_variant=mas_variant)

    def schema():
        return env.mas("""
            SELECT 'c', conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace
            UNION ALL
            SELECT 'i', tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
            ORDER BY 1, 2, 3""")

    before = schema()
    with env.populate() as s:
        build(s)
    env.run()
    assert schema() == before
    assert len(before) > 40


def test_text_with_copy_escapes_control_characters_and_unicode_survives_verbatim(env):
    """Values travel in COPY's text format: backslashes, \\N, tabs and newlines must not be reinterpreted.

    (PostgreSQL text cannot hold NUL bytes, so Synapse's tables never contain them.)
    """
    names = ["\\N", "tab\there", "new\nline\r\n", "back\\slash\\", "\x01\x1f\x7f ctrl", "Zoë 😀 \u202ertl",
             "x" * 10000]
    with env.populate() as s:
        user = s.user("alice")
        for i, name in enumerate(names):
            s.device(user, f"D{i}", display_name=name, user_agent=name)
        s.device(user, "NULLNAME", display_name=None)
    env.run()
    got = dict(env.mas("SELECT device_id, human_name FROM compat_sessions"))
    for i, name in enumerate(names):
        assert got[f"D{i}"] == name
    assert got["NULLNAME"] is None
    agents = dict(env.mas("SELECT device_id, user_agent FROM compat_sessions"))
    assert agents["D0"] == "\\N"
