"""The Synapse data builder, the demo sample and the benchmark generator, on real Synapse schemas."""

from __future__ import annotations

import base64
import binascii
import re

import bcrypt
import pytest

from tests.support.pgcluster import new_db_name
from tests.support import synapse_schema
from tests.support.synapse_data import (
    FIXED_NOW_MS,
    PASSWORD_HASH,
    SAMPLE_PASSWORD,
    TABLES,
    SynapseData,
    generate,
    make_token,
    populate_sample,
)

SERVER = "example.com"
TOKEN_RE = re.compile(r"^(syt|syr)_([A-Za-z0-9+/]+)_([A-Za-z]{20})_([0-9A-Za-z]{6})$")


@pytest.fixture
def conn(pg, synapse_db):
    c = pg.connect(synapse_db)
    yield c
    c.close()


@pytest.fixture
def other_db(pg, synapse_version):
    """A second fresh database of the same Synapse release (for determinism checks)."""
    name = new_db_name("synapse_b")
    pg.create_database(name, template=synapse_schema.create_template(pg, synapse_version))
    yield name
    pg.drop_database(name)


def q(pg, db, sql, params=None):
    return pg.execute(sql, db, params)


def one(pg, db, sql, params=None):
    return q(pg, db, sql, params)[0][0]


def table_contents(pg, db) -> dict[str, list[str]]:
    return {t: [r[0] for r in q(pg, db, f"SELECT x::text FROM {t} x ORDER BY 1")] for t in TABLES}


def localpart_from_token(token: str) -> str:
    m = TOKEN_RE.match(token)
    assert m, token
    b64 = m.group(2)
    return base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-8")


def test_password_hash_is_a_real_bcrypt_hash_of_password():
    assert bcrypt.checkpw(SAMPLE_PASSWORD.encode(), PASSWORD_HASH.encode())
    assert PASSWORD_HASH.startswith("$2b$12$")


def test_token_shape_matches_synapse():
    token = make_token("syt", "alice", "A" * 20)
    m = TOKEN_RE.match(token)
    assert m and m.group(2) == "YWxpY2U"
    base = token.rsplit("_", 1)[0]
    crc = binascii.crc32(base.encode("ascii"))
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    decoded = 0
    for ch in m.group(4):
        decoded = decoded * 62 + digits.index(ch)
    assert decoded == crc


# -- the builder ------------------------------------------------------------------------------

def test_user_encodings_and_overrides(pg, synapse_db, conn):
    d = SynapseData(conn, SERVER, seed=1)
    alice = d.user("alice", creation_ts=1_700_000_000)
    boss = d.user("boss", admin=True, locked=True)
    gone = d.user("gone", deactivated=True, password_hash=None)
    guest = d.user("17", guest=True, password_hash=None)
    bot = d.user("_bridge_bot", appservice_id="bridge", password_hash=None)
    foreign = d.user("eve", server_name="other.example")
    raw = d.user("ignored", name="not-an-mxid")
    assert (alice, foreign, raw) == ("@alice:example.com", "@eve:other.example", "not-an-mxid")

    rows = {r[0]: r[1:] for r in q(pg, synapse_db,
                                   "SELECT name, password_hash, admin, deactivated, locked, is_guest, appservice_id, creation_ts "
                                   "FROM users")}
    assert rows[alice] == (PASSWORD_HASH, 0, 0, False, 0, None, 1_700_000_000)
    assert rows[boss][1:4] == (1, 0, True)
    assert rows[gone][:3] == (None, 0, 1)
    assert rows[guest][4] == 1 and rows[guest][0] is None
    assert rows[bot][5] == "bridge"
    # Default creation_ts is "now" in SECONDS.
    assert abs(rows[boss][6] - d.now_ms() // 1000) < 60
    assert one(pg, synapse_db, "SELECT pg_typeof(admin)::text FROM users LIMIT 1") == "smallint"
    assert d.stats["users"] == 7 and d.stats["admins"] == 1 and d.stats["password_users"] == 4


def test_threepid_external_id_device_rows(pg, synapse_db, conn):
    d = SynapseData(conn, SERVER, seed=2, now_ms=FIXED_NOW_MS)
    u = d.user("bob")
    d.threepid(u, "email", "bob@example.com")
    d.threepid(u, "msisdn", "447700900000", added_at=1_600_000_000_000, validated_at=1_600_000_060_000)
    d.external_id(u, "oidc-google", "1234")
    dev = d.device(u, display_name="Téléphone", ip="not-an-ip", user_agent="Ünï", last_seen=FIXED_NOW_MS)
    hidden = d.cross_signing_devices(u)
    assert re.fullmatch(r"[A-Z]{10}", dev)
    assert sorted(q(pg, synapse_db, "SELECT medium, address, added_at, validated_at FROM user_threepids")) == [
        ("email", "bob@example.com", FIXED_NOW_MS, FIXED_NOW_MS),
        ("msisdn", "447700900000", 1_600_000_000_000, 1_600_000_060_000),
    ]
    assert q(pg, synapse_db, "SELECT * FROM user_external_ids") == [("oidc-google", "1234", u)]
    rows = q(pg, synapse_db, "SELECT device_id, display_name, ip, user_agent, last_seen, hidden FROM devices "
                             "ORDER BY hidden, device_id")
    assert rows[0] == (dev, "Téléphone", "not-an-ip", "Ünï", FIXED_NOW_MS, False)
    assert [r[0] for r in rows[1:]] == sorted(hidden) and all(r[5] is True for r in rows[1:])
    assert {r[1] for r in rows[1:]} == {"master signing key", "self_signing signing key", "user_signing signing key"}


def test_tokens_login_and_refresh(pg, synapse_db, conn):
    d = SynapseData(conn, SERVER, seed=3, now_ms=FIXED_NOW_MS)
    admin = d.user("admin", admin=True)
    carol = d.user("carol")
    plain = d.login(carol, "CAROLDEV01", display_name="Element")
    assert plain.access_token_id == 1 and plain.refresh_token_id is None
    assert localpart_from_token(plain.access_token) == "carol"

    fresh = d.login(carol, "CAROLDEV02", with_refresh=True)
    refreshed = d.refresh(fresh, successor_used=True)
    deviceless = d.access_token(admin, None)
    puppet = d.access_token(admin, None, puppets_user_id=carol)
    assert localpart_from_token(puppet[1]) == "carol"
    assert deviceless[0] == puppet[0] - 1

    at = {r[0]: r[1:] for r in q(pg, synapse_db,
                                 "SELECT id, user_id, device_id, valid_until_ms, last_validated, refresh_token_id, used, puppets_user_id "
                                 "FROM access_tokens")}
    assert at[plain.access_token_id] == (carol, "CAROLDEV01", None, FIXED_NOW_MS, None, False, None)
    assert at[fresh.access_token_id][2:] == (FIXED_NOW_MS + 300_000, FIXED_NOW_MS, fresh.refresh_token_id, False, None)
    assert at[refreshed.access_token_id][4:6] == (refreshed.refresh_token_id, True)
    assert at[deviceless[0]][1] is None
    assert at[puppet[0]][0] == admin and at[puppet[0]][6] == carol
    rt = dict(q(pg, synapse_db, "SELECT id, next_token_id FROM refresh_tokens"))
    assert rt == {fresh.refresh_token_id: refreshed.refresh_token_id, refreshed.refresh_token_id: None}
    assert all(TOKEN_RE.match(t) for (t,) in q(pg, synapse_db,
               "SELECT token FROM access_tokens UNION ALL SELECT token FROM refresh_tokens"))

    # A second builder on the same database continues the id counters.
    d2 = SynapseData(conn, SERVER)
    assert d2.access_token(carol, "CAROLDEV01")[0] == puppet[0] + 1
    assert d2.refresh_token(carol, "CAROLDEV02")[0] == refreshed.refresh_token_id + 1


def test_builder_commits_on_a_non_autocommit_connection(pg, synapse_db):
    c = pg.connect(synapse_db, autocommit=False)
    try:
        d = SynapseData(c, SERVER)
        u = d.user("zed")
        d.login(u, with_refresh=True)
        assert one(pg, synapse_db, "SELECT count(*) FROM access_tokens") == 1  # seen from another session
        with pytest.raises(Exception):
            d.user("zed")  # duplicate name
        d.user("zed2")  # the connection is usable again after the failure
        assert one(pg, synapse_db, "SELECT count(*) FROM users") == 2
    finally:
        c.close()


# -- the demo sample ----------------------------------------------------------------------------

def test_sample_covers_every_case(pg, synapse_db, conn):
    s = populate_sample(conn, SERVER)
    db = synapse_db
    assert 35 <= s["users"] <= 45
    for table, key in (("users", "users"), ("devices", "devices"), ("access_tokens", "access_tokens"),
                       ("refresh_tokens", "refresh_tokens")):
        assert one(pg, db, f"SELECT count(*) FROM {table}") == s[key]
    assert one(pg, db, "SELECT count(*) FROM user_threepids WHERE medium = 'email'") == s["emails"]
    assert one(pg, db, "SELECT count(*) FROM user_threepids WHERE medium = 'msisdn'") == s["msisdns"] >= 2
    assert one(pg, db, f"SELECT count(*) FROM users WHERE name NOT LIKE '%%:{SERVER}'") == 0

    assert one(pg, db, "SELECT count(*) FROM users WHERE admin = 1") == s["admins"] >= 1
    assert one(pg, db, "SELECT count(*) FROM users WHERE deactivated = 1") == s["deactivated"] >= 1
    assert one(pg, db, "SELECT count(*) FROM users WHERE locked") == s["locked"] >= 1
    assert one(pg, db, "SELECT count(*) FROM users WHERE is_guest = 1") == s["guests"] >= 1
    assert one(pg, db, "SELECT count(*) FROM users WHERE appservice_id IS NOT NULL") == s["appservice_users"] >= 1
    # The appservice user holds a token.
    assert one(pg, db, "SELECT count(*) FROM access_tokens a JOIN users u ON u.name = a.user_id "
                       "WHERE u.appservice_id IS NOT NULL") >= 1
    # SSO-only users, on exactly the two providers, without password.
    assert {r[0] for r in q(pg, db, "SELECT DISTINCT auth_provider FROM user_external_ids")} == {"oidc-google", "oidc"}
    assert one(pg, db, "SELECT count(DISTINCT u.name) FROM users u JOIN user_external_ids e ON e.user_id = u.name "
                       "WHERE u.password_hash IS NULL") == s["sso_only_users"] >= 2
    assert {r[0] for r in q(pg, db, "SELECT DISTINCT password_hash FROM users WHERE password_hash IS NOT NULL")} \
        == {PASSWORD_HASH}
    # Users with several devices.
    assert one(pg, db, "SELECT count(*) FROM (SELECT user_id FROM devices WHERE NOT hidden GROUP BY user_id "
                       "HAVING count(*) >= 2) x") >= 3
    # Obsolete refreshed pair: rt0 -> rt1 whose access token has been used.
    assert one(pg, db, """SELECT count(*) FROM refresh_tokens rt0
                          JOIN access_tokens at1 ON at1.refresh_token_id = rt0.next_token_id
                          WHERE at1.used""") == 1
    # Refreshed pair whose successor is unused (both kept by the migration).
    assert one(pg, db, """SELECT count(*) FROM refresh_tokens rt0
                          JOIN access_tokens at1 ON at1.refresh_token_id = rt0.next_token_id
                          WHERE NOT at1.used""") == 1
    assert one(pg, db, "SELECT count(*) FROM access_tokens WHERE device_id IS NULL AND puppets_user_id IS NULL") >= 1
    assert one(pg, db, "SELECT count(*) FROM access_tokens WHERE puppets_user_id IS NOT NULL") == s["puppet_tokens"] == 1
    assert one(pg, db, "SELECT count(*) FROM devices WHERE hidden") == s["hidden_devices"] >= 1
    assert {r[0] for r in q(pg, db, "SELECT ip FROM devices WHERE ip IN ('not-an-ip', '-')")} == {"not-an-ip", "-"}
    assert one(pg, db, "SELECT count(*) FROM devices WHERE display_name ~ '[^\\x01-\\x7f]'") >= 2
    assert one(pg, db, "SELECT count(*) FROM devices WHERE user_agent ~ '[^\\x01-\\x7f]'") >= 2
    # Every dependent row belongs to a user; every token has its device (or none).
    for table in ("user_threepids", "user_external_ids", "devices", "access_tokens", "refresh_tokens"):
        assert one(pg, db, f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                           "(SELECT 1 FROM users u WHERE u.name = t.user_id)") == 0
    assert one(pg, db, "SELECT count(*) FROM access_tokens a WHERE device_id IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM devices d WHERE d.user_id = a.user_id AND d.device_id = a.device_id)") == 0


def test_sample_is_deterministic(pg, synapse_db, conn, other_db):
    first = populate_sample(conn, SERVER)
    c2 = pg.connect(other_db)
    try:
        second = populate_sample(c2, SERVER)
    finally:
        c2.close()
    assert first == second
    assert table_contents(pg, synapse_db) == table_contents(pg, other_db)


# -- the benchmark generator ----------------------------------------------------------------------

def test_generate_proportions_and_integrity(pg, synapse_db, conn):
    n = 1000
    counts = generate(conn, n, seed=0, server_name="bench.example")
    db = synapse_db
    assert counts == {t: one(pg, db, f"SELECT count(*) FROM {t}") for t in TABLES}
    assert counts["users"] == n

    def share(where: str, table: str = "users") -> float:
        return one(pg, db, f"SELECT count(*) FROM {table} WHERE {where}") / n

    assert share("medium = 'email'", "user_threepids") == pytest.approx(0.60, abs=0.05)
    assert share("medium = 'msisdn'", "user_threepids") == pytest.approx(0.03, abs=0.015)
    assert share("true", "user_external_ids") == pytest.approx(0.20, abs=0.04)
    providers = dict(q(pg, db, "SELECT auth_provider, count(*) FROM user_external_ids GROUP BY 1"))
    assert set(providers) == {"oidc-google", "oidc-github"} and min(providers.values()) > 0.3 * sum(providers.values())
    assert share("deactivated = 1") == pytest.approx(0.05, abs=0.02)
    assert share("is_guest = 1") == pytest.approx(0.01, abs=0.008)
    assert share("appservice_id IS NOT NULL") == pytest.approx(0.01, abs=0.008)
    assert 1 <= one(pg, db, "SELECT count(*) FROM users WHERE admin = 1") <= 0.015 * n
    assert share("locked") < 0.02
    assert one(pg, db, "SELECT count(DISTINCT user_id) FROM refresh_tokens") / n == pytest.approx(0.10, abs=0.03)
    assert share("NOT hidden", "devices") == pytest.approx(1.95, abs=0.15)
    assert share("true", "access_tokens") == pytest.approx(2.5, abs=0.2)
    assert one(pg, db, "SELECT count(*) FROM devices WHERE hidden") % 3 == 0
    assert one(pg, db, "SELECT count(*) FROM devices WHERE hidden") > 0
    assert one(pg, db, "SELECT count(*) FROM access_tokens WHERE device_id IS NULL AND puppets_user_id IS NULL") > 0
    assert one(pg, db, "SELECT count(*) FROM access_tokens WHERE puppets_user_id IS NOT NULL") > 0
    assert one(pg, db, """SELECT count(*) FROM refresh_tokens rt0
                          JOIN access_tokens at1 ON at1.refresh_token_id = rt0.next_token_id WHERE at1.used""") > 0
    assert one(pg, db, """SELECT count(*) FROM refresh_tokens rt0
                          JOIN access_tokens at1 ON at1.refresh_token_id = rt0.next_token_id WHERE NOT at1.used""") > 0

    # Passwords: one real bcrypt hash, only for regular, non-SSO users.
    assert {r[0] for r in q(pg, db, "SELECT DISTINCT password_hash FROM users")} == {PASSWORD_HASH, None}
    assert one(pg, db, "SELECT count(*) FROM users u WHERE password_hash IS NOT NULL AND (is_guest = 1 OR "
                       "appservice_id IS NOT NULL OR deactivated = 1 OR EXISTS "
                       "(SELECT 1 FROM user_external_ids e WHERE e.user_id = u.name))") == 0
    assert one(pg, db, "SELECT count(*) FROM users WHERE name NOT LIKE '@%%:bench.example'") == 0
    assert one(pg, db, "SELECT count(*) FROM users WHERE creation_ts > %s OR creation_ts < %s",
               (FIXED_NOW_MS // 1000, FIXED_NOW_MS // 1000 - 4 * 365 * 86400)) == 0

    # Integrity, as the migration's reader expects it.
    for table in ("user_threepids", "user_external_ids", "devices", "access_tokens", "refresh_tokens"):
        assert one(pg, db, f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                           "(SELECT 1 FROM users u WHERE u.name = t.user_id)") == 0
    assert one(pg, db, "SELECT count(*) FROM access_tokens a WHERE device_id IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM devices d WHERE d.user_id = a.user_id AND d.device_id = a.device_id)") == 0
    assert one(pg, db, "SELECT count(*) FROM refresh_tokens r WHERE NOT EXISTS (SELECT 1 FROM access_tokens a "
                       "WHERE a.refresh_token_id = r.id AND a.user_id = r.user_id AND a.device_id = r.device_id)") == 0
    for (token,) in q(pg, db, "SELECT token FROM access_tokens WHERE puppets_user_id IS NULL "
                              "UNION ALL SELECT token FROM refresh_tokens ORDER BY 1 LIMIT 200"):
        assert TOKEN_RE.match(token), token
    # A puppet token carries the impersonated user's localpart and belongs to an admin.
    for token, puppet in q(pg, db, "SELECT a.token, a.puppets_user_id FROM access_tokens a "
                                   "JOIN users u ON u.name = a.user_id AND u.admin = 1 "
                                   "WHERE a.puppets_user_id IS NOT NULL"):
        assert "@" + localpart_from_token(token) + ":bench.example" == puppet
    assert one(pg, db, "SELECT count(*) FROM access_tokens WHERE puppets_user_id IS NOT NULL") == \
        one(pg, db, "SELECT count(*) FROM access_tokens a JOIN users u ON u.name = a.user_id AND u.admin = 1 "
                    "WHERE a.puppets_user_id IS NOT NULL")
    # ANALYZE ran: the planner's estimate is set.
    assert one(pg, db, "SELECT reltuples FROM pg_class WHERE relname = 'users'") == n

    # The migration's own readers (reference §1.6 / §1.7) find rows.
    unrefreshable = one(pg, db, """
        SELECT count(*) FROM (
          SELECT at0.token FROM access_tokens at0
            INNER JOIN devices USING (user_id, device_id)
            WHERE at0.puppets_user_id IS NULL AND at0.refresh_token_id IS NULL
          UNION ALL
          SELECT at0.token FROM access_tokens at0
            WHERE at0.puppets_user_id IS NULL AND at0.refresh_token_id IS NULL AND at0.device_id IS NULL) x""")
    refreshable = one(pg, db, """
        SELECT count(*) FROM refresh_tokens rt0
          INNER JOIN devices USING (user_id, device_id)
          INNER JOIN access_tokens at0 ON at0.refresh_token_id = rt0.id AND at0.user_id = rt0.user_id
                                      AND at0.device_id = rt0.device_id
          LEFT JOIN access_tokens at1 ON at1.refresh_token_id = rt0.next_token_id
          WHERE NOT at1.used OR at1.used IS NULL""")
    assert unrefreshable > n and 0 < refreshable < counts["refresh_tokens"]

    # A builder on the generated database continues after the generated ids.
    d = SynapseData(conn, "bench.example")
    u = d.user("late")
    login = d.login(u, with_refresh=True)
    assert login.access_token_id > one(pg, db, "SELECT max(id) FROM access_tokens WHERE user_id <> %s", (u,))


def test_generate_is_deterministic_for_a_seed(pg, synapse_db, conn, other_db):
    generate(conn, 500, seed=7)
    c2 = pg.connect(other_db)
    try:
        generate(c2, 500, seed=7)
        first = table_contents(pg, synapse_db)
        assert first == table_contents(pg, other_db)
        for t in TABLES:
            pg.execute(f"TRUNCATE {t} CASCADE", other_db)
        generate(c2, 500, seed=8)
        assert table_contents(pg, other_db)["access_tokens"] != first["access_tokens"]
        assert table_contents(pg, other_db)["user_threepids"] != first["user_threepids"]
    finally:
        c2.close()


def test_generate_leaves_a_non_autocommit_connection_usable(pg, synapse_db):
    c = pg.connect(synapse_db, autocommit=False)
    try:
        counts = generate(c, 50, seed=1)
        assert c.autocommit is False
        assert counts["users"] == 50 == one(pg, synapse_db, "SELECT count(*) FROM users")
    finally:
        c.close()
