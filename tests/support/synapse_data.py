"""Puts authentication data into a real-schema Synapse database, with plain SQL (psycopg2).

Three entry points, used by the tests, the demo and the benchmark:

* `SynapseData`: a row builder with realistic defaults (`user`, `threepid`, `external_id`,
  `device`, `access_token`, `refresh_token`, and `login`/`refresh` which reproduce what a real
  Synapse login / token refresh writes).
* `populate_sample(conn, server_name)`: a deterministic set of ~40 varied users for the demo,
  covering every case the migration treats specially.
* `generate(conn, n_users, seed=0, server_name=...)`: bulk, deterministic data for the benchmark,
  produced entirely server-side (INSERT ... SELECT over generate_series).

Encodings follow Synapse (see docs/migration-reference.md section 1): `users.creation_ts` is in
seconds; `admin`, `deactivated`, `is_guest` are smallint 0/1; `users.locked`, `devices.hidden`
and `access_tokens.used` are booleans; every other timestamp is in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import random
import string
import time
from collections import Counter
from dataclasses import dataclass

# A real bcrypt hash (cost 12, as Synapse's default `bcrypt_rounds`, empty pepper) of the
# password "password", computed once with bcrypt.hashpw and frozen here so that every database
# built by this module is byte-for-byte reproducible. The tests check it with bcrypt.checkpw.
SAMPLE_PASSWORD = "password"
PASSWORD_HASH = "$2b$12$lrVsFl2Im/H1i84UKb7rTOfTq8sOm/l7XAhTRu.CXvqXlui0s1K8."

# A fixed clock (2026-01-01T00:00:00Z) for the sample and the generator, so they are
# deterministic. SynapseData uses the real clock unless given `now_ms`.
FIXED_NOW_MS = 1_767_225_600_000

# The tables this module writes (the six the migration reads).
TABLES = ("users", "user_threepids", "user_external_ids", "devices", "access_tokens", "refresh_tokens")

# Columns added to Synapse over time: only written when present (and then only when the caller
# asks for a non-default value if the column is missing, which raises).
_OPTIONAL_COLUMNS = {
    "users": ("locked", "suspended", "approved", "shadow_banned", "user_type"),
    "access_tokens": ("used", "refresh_token_id", "last_validated", "puppets_user_id"),
    "refresh_tokens": ("expiry_ts", "ultimate_session_expiry_ts"),
    "devices": ("hidden",),
}

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# Access tokens issued together with a refresh token live 5 minutes (Synapse's default
# `access_token_lifetime` when refresh tokens are enabled).
REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS = 5 * 60 * 1000


def _base62(num: int, minwidth: int = 1) -> str:
    res = ""
    while num:
        num, rem = divmod(num, 62)
        res = _BASE62[rem] + res
    return "0" * (minwidth - len(res)) + res


def _unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def localpart_of(user_id: str) -> str:
    """The text between '@' and the first ':' of an MXID (what Synapse calls the localpart)."""
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id.split(":", 1)[0]


def make_token(prefix: str, localpart: str, random_part: str) -> str:
    """`<prefix>_<unpadded b64 localpart>_<random>_<base62 crc32>`, Synapse's token shape."""
    base = f"{prefix}_{_unpadded_b64(localpart.encode('utf-8'))}_{random_part}"
    return f"{base}_{_base62(binascii.crc32(base.encode('ascii')), minwidth=6)}"


@dataclass(frozen=True)
class Login:
    """What `SynapseData.login` / `refresh` created."""

    user_id: str
    device_id: str
    access_token_id: int
    access_token: str
    refresh_token_id: int | None = None
    refresh_token: str | None = None


class SynapseData:
    """Inserts Synapse auth rows through a psycopg2 connection.

    Each method commits its own work unless the connection is in autocommit mode. `stats`
    counts what was inserted, per kind (e.g. `users`, `admins`, `threepids.email`,
    `external_ids.oidc`, `hidden_devices`, `puppet_tokens`). Random parts of tokens and device
    IDs come from `random.Random(seed)`: pass a seed for reproducible data.
    """

    def __init__(self, conn, server_name: str, *, seed: int | None = None, now_ms: int | None = None,
                 localpart_prefix: str = ""):
        self.conn = conn
        self.server_name = server_name
        self.localpart_prefix = localpart_prefix
        self.rng = random.Random(seed)
        self._now_ms = now_ms
        self.stats: Counter[str] = Counter()
        self.columns = self._introspect()
        self._next_access_token_id = self._max_id("access_tokens") + 1
        self._next_refresh_token_id = self._max_id("refresh_tokens") + 1

    # -- plumbing ---------------------------------------------------------------------------

    def _introspect(self) -> dict[str, set[str]]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                (list(TABLES),),
            )
            rows = cur.fetchall()
        self._done()
        columns: dict[str, set[str]] = {t: set() for t in TABLES}
        for table, column in rows:
            columns[table].add(column)
        missing = [t for t, cols in columns.items() if not cols]
        if missing:
            raise RuntimeError(f"not a Synapse database: missing tables {missing}")
        return columns

    def _max_id(self, table: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            value = cur.fetchone()[0]
        self._done()
        return value

    def _done(self) -> None:
        if not self.conn.autocommit:
            self.conn.commit()

    def _insert(self, table: str, values: dict) -> None:
        present = self.columns[table]
        row = {}
        for column, value in values.items():
            if column in present:
                row[column] = value
            elif column in _OPTIONAL_COLUMNS.get(table, ()) and not value:
                continue  # an older schema without this column: the default is implied
            else:
                raise ValueError(f"{table}.{column} does not exist in this Synapse schema")
        cols = ", ".join(row)
        marks = ", ".join(["%s"] * len(row))
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))
        except Exception:
            if not self.conn.autocommit:
                self.conn.rollback()
            raise
        self._done()
        self.stats[table] += 1

    def now_ms(self) -> int:
        return self._now_ms if self._now_ms is not None else int(time.time() * 1000)

    def mxid(self, localpart: str, server_name: str | None = None) -> str:
        return f"@{self.localpart_prefix}{localpart}:{server_name or self.server_name}"

    def random_letters(self, n: int) -> str:
        return "".join(self.rng.choice(string.ascii_letters) for _index in range(n))

    def new_device_id(self) -> str:
        """Like Synapse: 10 random upper-case letters."""
        return "".join(self.rng.choice(string.ascii_uppercase) for _index in range(10))

    def new_access_token(self, user_id: str) -> str:
        return make_token("syt", localpart_of(user_id), self.random_letters(20))

    def new_refresh_token(self, user_id: str) -> str:
        return make_token("syr", localpart_of(user_id), self.random_letters(20))

    # -- rows -------------------------------------------------------------------------------

    def user(
        self,
        localpart: str,
        *,
        password_hash: str | None = PASSWORD_HASH,
        admin: bool = False,
        deactivated: bool = False,
        locked: bool = False,
        guest: bool = False,
        appservice_id: str | None = None,
        creation_ts: int | None = None,
        server_name: str | None = None,
        name: str | None = None,
        **extra,
    ) -> str:
        """A `users` row; returns the MXID. `creation_ts` is in seconds (default: now).

        `server_name` makes a foreign MXID, `name` overrides the whole MXID verbatim; `extra`
        sets any other column (`user_type`, `shadow_banned`, `suspended`, `approved`, ...).
        """
        user_id = name if name is not None else self.mxid(localpart, server_name)
        values = {
            "name": user_id,
            "password_hash": password_hash,
            "creation_ts": creation_ts if creation_ts is not None else self.now_ms() // 1000,
            "admin": int(bool(admin)),
            "is_guest": int(bool(guest)),
            "appservice_id": appservice_id,
            "deactivated": int(bool(deactivated)),
            "locked": bool(locked),
        }
        # What Synapse writes for a plain registration, on schemas that have these columns.
        for column, value in (("shadow_banned", False), ("approved", True)):
            if column in self.columns["users"]:
                values[column] = value
        values.update(extra)
        self._insert("users", values)
        for flag, kind in ((admin, "admins"), (deactivated, "deactivated"), (locked, "locked"),
                           (guest, "guests"), (appservice_id, "appservice_users"),
                           (password_hash, "password_users")):
            if flag:
                self.stats[kind] += 1
        return user_id

    def threepid(self, user_id: str, medium: str, address: str, added_at: int | None = None,
                 validated_at: int | None = None) -> tuple[str, str]:
        """A `user_threepids` row (timestamps in ms, default now; both columns are NOT NULL)."""
        added_at = added_at if added_at is not None else self.now_ms()
        self._insert("user_threepids", {
            "user_id": user_id, "medium": medium, "address": address, "added_at": added_at,
            "validated_at": validated_at if validated_at is not None else added_at,
        })
        self.stats[f"threepids.{medium}"] += 1
        return medium, address

    def external_id(self, user_id: str, auth_provider: str, external_id: str) -> tuple[str, str]:
        """A `user_external_ids` row (an SSO link)."""
        self._insert("user_external_ids", {
            "user_id": user_id, "auth_provider": auth_provider, "external_id": external_id,
        })
        self.stats[f"external_ids.{auth_provider}"] += 1
        return auth_provider, external_id

    def device(self, user_id: str, device_id: str | None = None, display_name: str | None = None,
               last_seen: int | None = None, ip: str | None = None, user_agent: str | None = None,
               hidden: bool = False) -> str:
        """A `devices` row; returns the device ID (10 random upper-case letters if None)."""
        device_id = device_id if device_id is not None else self.new_device_id()
        self._insert("devices", {
            "user_id": user_id, "device_id": device_id, "display_name": display_name,
            "last_seen": last_seen, "ip": ip, "user_agent": user_agent, "hidden": hidden,
        })
        if hidden:
            self.stats["hidden_devices"] += 1
        return device_id

    def cross_signing_devices(self, user_id: str) -> list[str]:
        """The hidden devices Synapse adds when a user uploads cross-signing keys."""
        ids = []
        for key_type in ("master", "self_signing", "user_signing"):
            pubkey = _unpadded_b64(bytes(self.rng.getrandbits(8) for _index in range(32)))
            ids.append(self.device(user_id, pubkey, display_name=f"{key_type} signing key", hidden=True))
        return ids

    def access_token(self, user_id: str, device_id: str | None, token: str | None = None,
                     valid_until_ms: int | None = None, last_validated: int | None = None,
                     puppets_user_id: str | None = None, refresh_token_id: int | None = None,
                     used: bool | None = None) -> tuple[int, str]:
        """An `access_tokens` row, stored as given (None stays NULL); returns (id, token).

        For a puppet token (admin API "login as user"), `user_id` is the admin and
        `puppets_user_id` the impersonated user, whose localpart the token carries.
        """
        token_id = self._next_access_token_id
        self._next_access_token_id += 1
        token = token if token is not None else self.new_access_token(puppets_user_id or user_id)
        self._insert("access_tokens", {
            "id": token_id, "user_id": user_id, "device_id": device_id, "token": token,
            "valid_until_ms": valid_until_ms, "puppets_user_id": puppets_user_id,
            "last_validated": last_validated, "refresh_token_id": refresh_token_id, "used": used,
        })
        if device_id is None:
            self.stats["deviceless_tokens"] += 1
        if puppets_user_id is not None:
            self.stats["puppet_tokens"] += 1
        return token_id, token

    def refresh_token(self, user_id: str, device_id: str, token: str | None = None,
                      next_token_id: int | None = None, expiry_ts: int | None = None,
                      ultimate_session_expiry_ts: int | None = None) -> tuple[int, str]:
        """A `refresh_tokens` row; returns (id, token). `next_token_id` must already exist."""
        token_id = self._next_refresh_token_id
        self._next_refresh_token_id += 1
        token = token if token is not None else self.new_refresh_token(user_id)
        self._insert("refresh_tokens", {
            "id": token_id, "user_id": user_id, "device_id": device_id, "token": token,
            "next_token_id": next_token_id, "expiry_ts": expiry_ts,
            "ultimate_session_expiry_ts": ultimate_session_expiry_ts,
        })
        return token_id, token

    def set_next_token(self, refresh_token_id: int, next_token_id: int | None) -> None:
        with self.conn.cursor() as cur:
            cur.execute("UPDATE refresh_tokens SET next_token_id = %s WHERE id = %s",
                        (next_token_id, refresh_token_id))
        self._done()

    def mark_used(self, access_token_id: int, used: bool = True) -> None:
        with self.conn.cursor() as cur:
            cur.execute("UPDATE access_tokens SET used = %s WHERE id = %s", (used, access_token_id))
        self._done()

    # -- what Synapse does ------------------------------------------------------------------

    def login(self, user_id: str, device_id: str | None = None, with_refresh: bool = False, *,
              refresh_expiry_ts: int | None = None, **device_kw) -> Login:
        """A device plus its access token (and refresh token when asked), like a Synapse login.

        Synapse inserts the device, then (when refresh tokens are requested) the refresh token,
        then the access token with `last_validated = now`, `used = false` and, if refreshable,
        `valid_until_ms = now + 5 min`. `device_kw` goes to `device()`.
        """
        now = self.now_ms()
        device_kw.setdefault("last_seen", now)
        device_id = self.device(user_id, device_id, **device_kw)
        rt_id = rt = None
        valid_until = None
        if with_refresh:
            rt_id, rt = self.refresh_token(user_id, device_id, expiry_ts=refresh_expiry_ts)
            valid_until = now + REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS
        at_id, at = self.access_token(user_id, device_id, valid_until_ms=valid_until,
                                      last_validated=now, refresh_token_id=rt_id, used=False)
        self.stats["logins"] += 1
        return Login(user_id, device_id, at_id, at, rt_id, rt)

    def refresh(self, login: Login, *, successor_used: bool = False) -> Login:
        """Uses `login`'s refresh token like Synapse's /refresh: a new pair whose refresh token
        becomes the old one's `next_token_id`. With `successor_used`, the new access token has
        been used (`used = true`), which makes the old pair obsolete."""
        if login.refresh_token_id is None:
            raise ValueError("this login has no refresh token")
        now = self.now_ms()
        rt_id, rt = self.refresh_token(login.user_id, login.device_id)
        at_id, at = self.access_token(login.user_id, login.device_id,
                                      valid_until_ms=now + REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS,
                                      last_validated=now, refresh_token_id=rt_id, used=successor_used)
        self.set_next_token(login.refresh_token_id, rt_id)
        self.stats["refreshes"] += 1
        return Login(login.user_id, login.device_id, at_id, at, rt_id, rt)


# ------------------------------------------------------------------------------------------
# The demo's sample
# ------------------------------------------------------------------------------------------

_DAY_MS = 86_400_000

_CLIENTS = [
    ("Element Web (Firefox, Linux)",
     "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Element Desktop (Windows)",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Element/1.11.85 Chrome/130.0.6723.137 Electron/33.2.1 Safari/537.36"),
    ("Element X (Android)", "Element X/25.01.0 (Google Pixel 8; Android 15; AP4A.250105.002; Sdk 0.2.77)"),
    ("Element X (iOS)", "Element X/25.01.2 (iPhone 15 Pro; iOS 18.2; en_US)"),
    ("Element (Android)", "Element/1.6.28 (Samsung SM-S911B; Android 14; UP1A.231005.007; Flavour GooglePlay; MatrixAndroidSdk2 1.6.28)"),
    ("FluffyChat", "FluffyChat/1.22.1 (linux)"),
]


def populate_sample(conn, server_name: str, localpart_prefix: str = "") -> dict:
    """Fills an (empty) Synapse database with ~40 varied users for the demo; returns counts.

    Deterministic: fixed clock, fixed seed, fixed password hash (every password user's
    password is `SAMPLE_PASSWORD`). Nothing in it makes the migration fail: all MXIDs are on
    `server_name`, SSO links use the providers `oidc-google` and `oidc` (Synapse's legacy
    single-provider id), so the MAS config needs providers mapped to both.
    """
    d = SynapseData(conn, server_name, seed=20260101, now_ms=FIXED_NOW_MS, localpart_prefix=localpart_prefix)
    now = FIXED_NOW_MS
    now_s = now // 1000
    summary: Counter[str] = Counter()

    def ago_s(days: float) -> int:
        return now_s - int(days * 86400)

    def ago_ms(days: float) -> int:
        return now - int(days * _DAY_MS)

    def client(i: int) -> dict:
        name, ua = _CLIENTS[i % len(_CLIENTS)]
        return {"display_name": name, "user_agent": ua, "ip": f"198.51.100.{10 + i}",
                "last_seen": ago_ms(0.5 + i)}

    # Plain password users with emails and one or more logged-in devices.
    alice = d.user("alice", creation_ts=ago_s(900))
    d.threepid(alice, "email", "alice@example.com", added_at=ago_ms(899))
    d.login(alice, "ALICEWEB01", **client(0))
    d.login(alice, "ALICEPHONE", display_name="Téléphone d'Alice 📱",
            user_agent="Element X/25.01.2 (iPhone 15 Pro; iOS 18.2; fr_FR) — Ünïcødé",
            ip="2001:db8::a11c:e", last_seen=ago_ms(0.1))
    d.login(alice, "ALICEDESK1", **client(1))
    d.cross_signing_devices(alice)  # three hidden devices
    summary["users_with_several_devices"] += 1

    bob = d.user("bob", creation_ts=ago_s(800))
    d.threepid(bob, "email", "bob@example.com", added_at=ago_ms(799))
    d.threepid(bob, "msisdn", "447700900123", added_at=ago_ms(500))
    d.login(bob, "BOBANDROID", **client(2))
    d.login(bob, "BOBLAPTOP1", display_name="Bobs Laptop (Ubuntu) – ĉapelo",
            user_agent="Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 «test»",
            ip="not-an-ip", last_seen=ago_ms(3))
    d.cross_signing_devices(bob)
    summary["users_with_several_devices"] += 1

    carol = d.user("carol", creation_ts=ago_s(700))
    d.threepid(carol, "email", "carol@example.org", added_at=ago_ms(700))
    d.threepid(carol, "email", "carol.work@example.net", added_at=ago_ms(100))
    d.login(carol, "CAROLPHONE", display_name="Кэрол — телефон", user_agent="FluffyChat/1.22.1 (android; ру)",
            ip="-", last_seen=ago_ms(1))
    d.login(carol, "CAROLOLDPC", display_name=None, user_agent=None, ip=None, last_seen=None)

    # An admin, who also holds a deviceless admin-API token and a puppet token ("login as").
    admin = d.user("admin", admin=True, creation_ts=ago_s(1000))
    d.threepid(admin, "email", "admin@example.com", added_at=ago_ms(1000))
    d.login(admin, "ADMINWEB01", **client(3))
    d.access_token(admin, None, last_validated=ago_ms(2), used=False)  # admin API style
    d.access_token(admin, None, puppets_user_id=carol, valid_until_ms=now + 3600_000,
                   last_validated=ago_ms(0.2), used=False)

    # Deactivated: Synapse cleared the password; an old email, device and token were left over.
    dave = d.user("dave", deactivated=True, password_hash=None, creation_ts=ago_s(600))
    d.threepid(dave, "email", "dave@example.com", added_at=ago_ms(600))
    d.login(dave, "DAVEOLDDEV", **client(4))

    # Locked (and still logged in).
    mallory = d.user("mallory", locked=True, creation_ts=ago_s(300))
    d.threepid(mallory, "email", "mallory@example.com", added_at=ago_ms(300))
    d.login(mallory, "MALLORYDEV", **client(5))

    # A guest (numeric localpart, no password), logged in on its device.
    guest = d.user("1042", guest=True, password_hash=None, creation_ts=ago_s(20))
    d.login(guest, "GUESTDEV01", display_name="Guest (Element Web)", user_agent=_CLIENTS[0][1],
            ip="203.0.113.7", last_seen=ago_ms(19))

    # Appservice users: the bridge bot with a device and token, and a ghost without any.
    bridge = d.user("_irc_bot", appservice_id="irc-bridge", password_hash=None, creation_ts=ago_s(400))
    d.login(bridge, "IRCBOTDEV1", display_name="IRC bridge", user_agent="matrix-appservice-irc/3.0.3",
            ip="127.0.0.1", last_seen=ago_ms(0.01))
    d.user("_irc_dan", appservice_id="irc-bridge", password_hash=None, creation_ts=ago_s(399))

    # Phone numbers only.
    frank = d.user("frank", creation_ts=ago_s(250))
    d.threepid(frank, "msisdn", "33612345678", added_at=ago_ms(250))
    d.login(frank, "FRANKPHONE", **client(2))

    # SSO-only users (no password hash), linked to Google and to the legacy single OIDC provider.
    grace = d.user("grace", password_hash=None, creation_ts=ago_s(200))
    d.external_id(grace, "oidc-google", "108429716312301234567")
    d.threepid(grace, "email", "grace@gmail.example", added_at=ago_ms(200))
    d.login(grace, "GRACEWEB01", **client(0))
    heidi = d.user("heidi", password_hash=None, creation_ts=ago_s(190))
    d.external_id(heidi, "oidc", "f3c2b1a0-heidi-legacy-sub")
    d.login(heidi, "HEIDIPHONE", **client(3))
    ivan = d.user("ivan", password_hash=None, creation_ts=ago_s(180))
    d.external_id(ivan, "oidc-google", "117734120987654321000")
    d.external_id(ivan, "oidc", "ivan@legacy-idp")
    trent = d.user("trent", creation_ts=ago_s(170))  # password AND an SSO link
    d.threepid(trent, "email", "trent@example.com", added_at=ago_ms(170))
    d.external_id(trent, "oidc-google", "100000000000000000042")
    d.login(trent, "TRENTDESK1", **client(1))

    # Refresh tokens: a fresh pair; a refreshed pair whose successor was used (rt0 -> rt1, the
    # successor access token has used = true, so the rt0 pair is obsolete); a refreshed pair
    # whose successor was never used (both pairs still valid).
    judy = d.user("judy", creation_ts=ago_s(150))
    d.threepid(judy, "email", "judy@example.com", added_at=ago_ms(150))
    d.login(judy, "JUDYPHONE1", with_refresh=True, **client(2))
    summary["refresh_pairs_fresh"] += 1
    ken = d.user("ken", creation_ts=ago_s(140))
    d.threepid(ken, "email", "ken@example.com", added_at=ago_ms(140))
    d.refresh(d.login(ken, "KENPHONE01", with_refresh=True, **client(3)), successor_used=True)
    summary["refresh_pairs_obsolete"] += 1
    leo = d.user("leo", creation_ts=ago_s(130))
    d.threepid(leo, "email", "leo@example.com", added_at=ago_ms(130))
    d.refresh(d.login(leo, "LEOTABLET1", with_refresh=True, refresh_expiry_ts=now + 7 * _DAY_MS,
                      **client(4)), successor_used=False)
    summary["refresh_pairs_refreshed_unused"] += 1

    # A bot account that only ever used a deviceless token.
    ops = d.user("ops-bot", creation_ts=ago_s(120), user_type="bot")
    d.access_token(ops, None, last_validated=ago_ms(0.3))

    # The rest: ordinary users, 0 to 3 devices each, all with an email.
    for i in range(1, 23):
        lp = f"user{i:02d}"
        uid = d.user(lp, creation_ts=ago_s(100 - i))
        d.threepid(uid, "email", f"{lp}@example.org", added_at=ago_ms(100 - i),
                   validated_at=ago_ms(100 - i) + 60_000)
        for k in range(i % 4):
            d.login(uid, f"{lp.upper()}D{k}", **client(i + k))
        if i % 4 >= 2:
            summary["users_with_several_devices"] += 1
        if i % 7 == 0:
            d.threepid(uid, "msisdn", f"1555010{i:04d}", added_at=ago_ms(50))

    stats = d.stats
    summary.update({
        "users": stats["users"],
        "password_users": stats["password_users"],
        "sso_only_users": 3,
        "admins": stats["admins"],
        "deactivated": stats["deactivated"],
        "locked": stats["locked"],
        "guests": stats["guests"],
        "appservice_users": stats["appservice_users"],
        "emails": stats["threepids.email"],
        "msisdns": stats["threepids.msisdn"],
        "external_ids.oidc-google": stats["external_ids.oidc-google"],
        "external_ids.oidc": stats["external_ids.oidc"],
        "devices": stats["devices"],
        "hidden_devices": stats["hidden_devices"],
        "access_tokens": stats["access_tokens"],
        "refresh_tokens": stats["refresh_tokens"],
        "deviceless_tokens": stats["deviceless_tokens"],
        "puppet_tokens": stats["puppet_tokens"],
        "invalid_ip_devices": 2,  # 'not-an-ip' and '-'
    })
    return dict(summary)


# ------------------------------------------------------------------------------------------
# The benchmark's generator
# ------------------------------------------------------------------------------------------

# Rates are fractions of ALL users. Appservice users and guests have only a device and a token.
RATES = {
    "appservice": 0.01,
    "guest": 0.01,
    "deactivated": 0.05,
    "admin": 0.005,
    "locked": 0.005,
    "email": 0.60,
    "msisdn": 0.03,
    "sso": 0.20,          # half oidc-google, half oidc-github; SSO users have no password
    "refresh": 0.10,      # of which 50% obsolete refreshed pair, 20% refreshed-unused, 30% fresh
    "cross_signing": 0.15,  # three hidden devices each
    "deviceless": 0.02,
    "puppet": 0.005,      # an admin's "login as" token for this user
}
# Devices per account (regular or deactivated): 0..4 with these probabilities (mean 1.95).
DEVICE_COUNT_CDF = (0.10, 0.35, 0.70, 0.90)
# Share of devices holding a second, older plain access token.
SECOND_TOKEN_RATE = 0.25

GENERATED_PROVIDERS = ("oidc-google", "oidc-github")


def generate(conn, n_users: int, seed: int = 0, server_name: str = "bench.example") -> dict:
    """Bulk-inserts `n_users` users with their auth data; deterministic for (n_users, seed).

    Everything is computed server-side from hashes of (seed, user number), so the result does not
    depend on insertion order. Expects the six tables empty (localparts `user<N>`,
    `_bridge_u<N>` and `<N>` for guests, ids derived from N). User 1 is always an active admin
    (the owner of the puppet tokens). Deactivated users keep devices/tokens/threepids as leftovers
    so the migration's skip paths are exercised. Runs ANALYZE; returns rows per table.
    """
    if n_users < 1:
        raise ValueError("n_users must be >= 1")
    accounts = 1 - RATES["appservice"] - RATES["guest"]  # regular + deactivated share

    def r(salt: int, key: str = "g.u") -> str:
        """A deterministic uniform number in [0, 1) from (seed, key, salt)."""
        return f"((hashint8extended({key}::bigint, {int(seed) * 1000 + salt}) & 2147483647)::float8 / 2147483648.0)"

    def md5(expr: str) -> str:
        return f"md5({int(seed)} || ':' || {expr})"

    def letters(expr: str, n: int) -> str:
        return f"translate(substr({md5(expr)}, 1, {n}), '0123456789abcdef', 'aBcDeFgHiJkLmNoP')"

    def b64(expr: str) -> str:
        return f"rtrim(replace(encode(convert_to({expr}, 'UTF8'), 'base64'), E'\\n', ''), '=')"

    def token(prefix: str, lp_expr: str, key_expr: str) -> str:
        crc_src = md5(key_expr + " || ':crc'")
        crc = f"translate(substr({crc_src}, 1, 6), 'abcdef', 'QRSxyz')"
        return f"'{prefix}_' || {b64(lp_expr)} || '_' || {letters(key_expr, 20)} || '_' || {crc}"

    now = FIXED_NOW_MS
    lifetime = REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS
    c1, c2, c3, c4 = DEVICE_COUNT_CDF
    as_cut = RATES["appservice"]
    guest_cut = as_cut + RATES["guest"]
    deact_cut = guest_cut + RATES["deactivated"]
    clients = [ua for _name, ua in _CLIENTS]
    names = [name for name, _ua in _CLIENTS]

    def pick(options: list[str], salt: int, key: str) -> str:
        arr = "ARRAY[" + ", ".join("'" + o.replace("'", "''") + "'" for o in options) + "]"
        return f"({arr})[1 + floor({r(salt, key)} * {len(options)})::int]"

    sql_users = f"""
    CREATE TEMP TABLE _gen_users ON COMMIT DROP AS
    WITH base AS (
      SELECT g.u,
        {r(1)} AS r_kind, {r(2)} AS r_admin, {r(3)} AS r_email, {r(4)} AS r_msisdn,
        {r(5)} AS r_sso, {r(6)} AS r_dev, {r(7)} AS r_refresh, {r(8)} AS r_extra,
        {r(9)} AS r_ts, {r(10)} AS r_xsign, {r(11)} AS r_locked
      FROM generate_series(1::bigint, {int(n_users)}::bigint) AS g(u)
    ), kinded AS (
      SELECT *, CASE WHEN u = 1 THEN 'regular'
                     WHEN r_kind < {as_cut} THEN 'appservice'
                     WHEN r_kind < {guest_cut} THEN 'guest'
                     WHEN r_kind < {deact_cut} THEN 'deactivated'
                     ELSE 'regular' END AS kind
      FROM base
    ), flagged AS (
      SELECT *,
        CASE kind WHEN 'appservice' THEN '_bridge_u' || u WHEN 'guest' THEN u::text
                  ELSE 'user' || u END AS localpart,
        kind IN ('regular', 'deactivated') AS account,
        (u = 1 OR (kind IN ('regular', 'deactivated') AND r_admin < {RATES['admin'] / accounts})) AS admin,
        (kind = 'regular' AND r_locked < {RATES['locked'] / accounts}) AS locked,
        (kind IN ('regular', 'deactivated') AND r_email < {RATES['email'] / accounts}) AS has_email,
        (kind IN ('regular', 'deactivated') AND r_msisdn < {RATES['msisdn'] / accounts}) AS has_msisdn,
        CASE WHEN kind IN ('regular', 'deactivated') AND r_sso < {RATES['sso'] / accounts}
             THEN CASE WHEN r_sso < {RATES['sso'] / accounts / 2} THEN '{GENERATED_PROVIDERS[0]}'
                       ELSE '{GENERATED_PROVIDERS[1]}' END END AS sso,
        CASE WHEN kind IN ('regular', 'deactivated') AND r_refresh < {RATES['refresh'] / accounts}
             THEN CASE WHEN r_refresh < {RATES['refresh'] / accounts * 0.5} THEN 'obsolete'
                       WHEN r_refresh < {RATES['refresh'] / accounts * 0.7} THEN 'refreshed'
                       ELSE 'fresh' END END AS refresh
      FROM kinded
    )
    SELECT u, kind, localpart, '@' || localpart || ':' || %(server)s AS name, account, admin,
      locked, has_email, has_msisdn, sso, refresh,
      CASE WHEN NOT account THEN 1
           WHEN refresh IS NOT NULL THEN greatest(1, {_device_count('r_dev', c1, c2, c3, c4)})
           ELSE {_device_count('r_dev', c1, c2, c3, c4)} END AS n_devices,
      (account AND r_xsign < {RATES['cross_signing'] / accounts}) AS cross_signing,
      (kind <> 'guest' AND kind <> 'appservice' AND r_extra < {RATES['deviceless'] / accounts}) AS deviceless,
      (u <> 1 AND account AND r_extra >= {RATES['deviceless'] / accounts}
         AND r_extra < {(RATES['deviceless'] + RATES['puppet']) / accounts}) AS puppet,
      {now // 1000} - floor(r_ts * 3 * 365 * 86400)::bigint AS creation_ts
    FROM flagged
    """

    sql_insert_users = f"""
    INSERT INTO users (name, password_hash, creation_ts, admin, is_guest, appservice_id,
                       deactivated{_opt(conn, 'users', 'locked', ', locked')}, shadow_banned, approved)
    SELECT name,
           CASE WHEN kind = 'regular' AND sso IS NULL THEN %(hash)s END,
           creation_ts, admin::int, (kind = 'guest')::int,
           CASE WHEN kind = 'appservice' THEN 'bridge' END,
           (kind = 'deactivated')::int{_opt(conn, 'users', 'locked', ', locked')}, false, true
    FROM _gen_users ORDER BY u
    """

    sql_threepids = """
    INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)
    SELECT name, 'email', localpart || '@example.org', creation_ts * 1000 + 60000, creation_ts * 1000
      FROM _gen_users WHERE has_email
    UNION ALL
    SELECT name, 'msisdn', '4479' || lpad(u::text, 9, '0'), creation_ts * 1000 + 120000, creation_ts * 1000 + 90000
      FROM _gen_users WHERE has_msisdn
    """

    sql_external_ids = """
    INSERT INTO user_external_ids (auth_provider, external_id, user_id)
    SELECT sso, CASE sso WHEN 'oidc-google' THEN (100000000000000000000 + u)::text
                         ELSE (5000000 + u)::text END, name
      FROM _gen_users WHERE sso IS NOT NULL
    """

    dev_key = "(g.u * 8 + k)"
    sql_devices = f"""
    CREATE TEMP TABLE _gen_devices ON COMMIT DROP AS
    SELECT g.u, k, g.name AS user_id, g.localpart, g.refresh, g.kind,
      translate(substr({md5("g.u || ':dev:' || k")}, 1, 10), '0123456789abcdef', 'ABCDEFGHIJKLMNOP') AS device_id,
      {pick(names, 20, dev_key)} AS display_name,
      {pick(clients, 21, dev_key)} AS user_agent,
      CASE WHEN {r(22, dev_key)} < 0.08 THEN NULL
           ELSE {now} - floor({r(23, dev_key)} * 90 * {_DAY_MS})::bigint END AS last_seen,
      CASE WHEN {r(24, dev_key)} < 0.01 THEN '-'
           WHEN {r(24, dev_key)} < 0.15 THEN '2001:db8:' || to_hex(g.u % 65536) || '::' || to_hex(k)
           ELSE '10.' || (g.u / 65536 % 256) || '.' || (g.u / 256 % 256) || '.' || (g.u % 256) END AS ip,
      (k = 1 AND g.refresh IS NOT NULL) AS refresh_device,
      ({r(25, dev_key)} < {SECOND_TOKEN_RATE}) AS second_token
    FROM _gen_users g, generate_series(1, g.n_devices) AS k
    """

    sql_insert_devices = f"""
    INSERT INTO devices (user_id, device_id, display_name, last_seen, ip, user_agent, hidden)
    SELECT user_id, device_id, display_name, last_seen,
           CASE WHEN last_seen IS NULL THEN NULL ELSE ip END,
           CASE WHEN last_seen IS NULL THEN NULL ELSE user_agent END, false
      FROM _gen_devices
    UNION ALL
    SELECT g.name,
           rtrim(encode(decode({md5("g.u || ':xs:' || t.i")} || {md5("g.u || ':xs2:' || t.i")}, 'hex'), 'base64'), '='),
           t.key_type || ' signing key', NULL, NULL, NULL, true
      FROM _gen_users g,
           (VALUES (1, 'master'), (2, 'self_signing'), (3, 'user_signing')) AS t(i, key_type)
     WHERE g.cross_signing
    """

    # Refresh tokens: slot 2 = current, slot 1 = its predecessor (next_token_id -> slot 2).
    sql_refresh_current = f"""
    INSERT INTO refresh_tokens (id, user_id, device_id, token, next_token_id, expiry_ts)
    SELECT u * 4 + 2, user_id, device_id, {token('syr', 'localpart', "u || ':rt2'")}, NULL,
           CASE WHEN {r(30, 'u')} < 0.3 THEN {now} + {30 * _DAY_MS} END
      FROM _gen_devices WHERE refresh_device
    """
    sql_refresh_previous = f"""
    INSERT INTO refresh_tokens (id, user_id, device_id, token, next_token_id, expiry_ts)
    SELECT u * 4 + 1, user_id, device_id, {token('syr', 'localpart', "u || ':rt1'")}, u * 4 + 2, NULL
      FROM _gen_devices WHERE refresh_device AND refresh IN ('obsolete', 'refreshed')
    """

    # Access token ids: u * 16 + slot. 1-4 device tokens, 5-8 second tokens, 9 current refresh
    # pair, 10 previous refresh pair, 11 deviceless, 12 puppet.
    at_cols = "id, user_id, device_id, token, valid_until_ms, puppets_user_id, last_validated, refresh_token_id"
    used = _opt(conn, "access_tokens", "used", ", used")
    sql_access_tokens = f"""
    INSERT INTO access_tokens ({at_cols}{used})
    SELECT u * 16 + k, user_id, device_id, {token('syt', 'localpart', "u || ':at:' || k")},
           NULL::bigint, NULL::text, last_seen, NULL::bigint{', false' if used else ''}
      FROM _gen_devices WHERE NOT refresh_device
    UNION ALL
    SELECT u * 16 + 4 + k, user_id, device_id, {token('syt', 'localpart', "u || ':at2:' || k")},
           NULL, NULL, last_seen - {30 * _DAY_MS}, NULL{', false' if used else ''}
      FROM _gen_devices WHERE second_token AND NOT refresh_device
    UNION ALL
    SELECT u * 16 + 9, user_id, device_id, {token('syt', 'localpart', "u || ':at9'")},
           coalesce(last_seen, {now}) + {lifetime}, NULL, coalesce(last_seen, {now}), u * 4 + 2
           {", refresh = 'obsolete'" if used else ''}
      FROM _gen_devices WHERE refresh_device
    UNION ALL
    SELECT u * 16 + 10, user_id, device_id, {token('syt', 'localpart', "u || ':at10'")},
           coalesce(last_seen, {now}) - 3600000 + {lifetime}, NULL, coalesce(last_seen, {now}) - 3600000,
           u * 4 + 1{', true' if used else ''}
      FROM _gen_devices WHERE refresh_device AND refresh IN ('obsolete', 'refreshed')
    UNION ALL
    SELECT u * 16 + 11, name, NULL, {token('syt', 'localpart', "u || ':at11'")},
           NULL, NULL, {now} - floor({r(31, 'u')} * {30 * _DAY_MS})::bigint, NULL{', false' if used else ''}
      FROM _gen_users WHERE deviceless
    UNION ALL
    SELECT u * 16 + 12, (SELECT name FROM _gen_users WHERE u = 1), NULL,
           {token('syt', 'localpart', "u || ':at12'")},
           {now} + 3600000, name, {now} - 600000, NULL{', false' if used else ''}
      FROM _gen_users WHERE puppet
    """

    counts: dict[str, int] = {}
    old_autocommit = conn.autocommit
    if not old_autocommit:
        conn.commit()  # _opt() above may have opened a transaction
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute("SET LOCAL work_mem = '64MB'")
            params = {"server": server_name, "hash": PASSWORD_HASH}
            cur.execute(sql_users, params)
            cur.execute(sql_insert_users, params)
            cur.execute(sql_threepids)
            cur.execute(sql_external_ids)
            cur.execute(sql_devices)
            cur.execute(sql_insert_devices)
            cur.execute(sql_refresh_current)
            cur.execute(sql_refresh_previous)
            cur.execute(sql_access_tokens)
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute(f"ANALYZE {table}")
            for table in TABLES:
                cur.execute(f"SELECT count(*) FROM {table}")
                counts[table] = cur.fetchone()[0]
    except Exception:
        if not conn.autocommit:
            conn.rollback()
        raise
    finally:
        conn.autocommit = old_autocommit
    return counts


def _device_count(col: str, c1: float, c2: float, c3: float, c4: float) -> str:
    return (f"(CASE WHEN {col} < {c1} THEN 0 WHEN {col} < {c2} THEN 1 WHEN {col} < {c3} THEN 2 "
            f"WHEN {col} < {c4} THEN 3 ELSE 4 END)")


def _opt(conn, table: str, column: str, text: str) -> str:
    """`text` when `table.column` exists in this database, else ''."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND column_name = %s", (table, column))
        found = cur.fetchone() is not None
    return text if found else ""
