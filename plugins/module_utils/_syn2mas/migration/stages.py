# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Synapse→MAS mapping: what each MAS table receives, as one SELECT over Synapse's tables per stage.

Every stage already yields the MAS row (ids, timestamps, flags), so the rows stream from Synapse's
`COPY ... TO STDOUT` straight into MAS's `COPY ... FROM STDIN` without being parsed in Python. MAS ids
are ULIDs: the row's time-stamp followed by a hash of a stable key of the row, seeded per run, so that a
dependent row (a token) finds the id of its parent (its session, its user) by recomputing it from the
same key instead of looking it up in a map.

The columns the import writes into MAS (mas_schema.WRITTEN_TABLES) are derived from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A btree index entry must fit in about a third of a page (2704 bytes); longer values in an
# indexed MAS column would make the index rebuild fail, so such rows are skipped and counted.
MAX_INDEXED_BYTES = 2000

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
# Standing alone, PostgreSQL also reads octets with leading zeros (as decimal: 010 is 10); inside
# an IPv6 address it does not.
_IPV4_ALONE = rf"0*{_OCTET}(\.0*{_OCTET}){{3}}"
_H = "[0-9a-f]{1,4}"
_IPV6 = "|".join((
    f"({_H}:){{7}}{_H}",
    f"({_H}:){{1,7}}:",
    f"({_H}:){{1,6}}:{_H}",
    f"({_H}:){{1,5}}(:{_H}){{1,2}}",
    f"({_H}:){{1,4}}(:{_H}){{1,3}}",
    f"({_H}:){{1,3}}(:{_H}){{1,4}}",
    f"({_H}:){{1,2}}(:{_H}){{1,5}}",
    f"{_H}:(:{_H}){{1,6}}",
    f":((:{_H}){{1,7}}|:)",
    f"({_H}:){{6}}{_IPV4}",
    f"::(ffff(:0{{1,4}})?:)?{_IPV4}",
    f"({_H}:){{1,4}}:{_IPV4}",
))
# What PostgreSQL's inet accepts, restricted to the plain forms clients send: anything else
# (ports, zone ids, junk) becomes NULL rather than failing the whole COPY. IPv4 is tried first
# with a case-sensitive pattern: the IPv6 one is several times costlier per row.
IPV4_PATTERN = f"^{_IPV4_ALONE}$"
IPV6_PATTERN = f"^({_IPV6})$"
VALID_IP = "(d.ip ~ %(ipv4_pattern)s OR (strpos(d.ip, ':') > 0 AND d.ip ~* %(ipv6_pattern)s))"


# Each kind of id hashes its key with its own seed and ends with its own tag, so that ids of
# different kinds never meet even where their keys are equal (a user and its password).
_ID_KINDS = {"u": 1, "p": 2, "e": 3, "l": 4, "s": 5, "t": 6, "a": 7, "r": 8}


def _ulid(ts_ms: str, kind: str, key: str) -> str:
    """SQL for a ULID-shaped uuid: 48-bit ms timestamp, 64 bits of a keyed hash of the row's key
    (seeded per run), 16 bits naming the kind. hashtextextended costs half of an md5 per id."""
    number = _ID_KINDS[kind]
    return (f"(lpad(to_hex(LEAST(GREATEST(({ts_ms})::bigint, 0), 281474976710655)), 12, '0')"
            f" || lpad(to_hex(hashtextextended({key}, %(seed)s + {number})), 16, '0') || '{number:04x}')::uuid")


def _ts(ms: str) -> str:
    return f"(timestamptz 'epoch' + ({ms}) * interval '1 millisecond')"


# The milliseconds a MAS timestamp may hold here (years 1 to 9999). Synapse's columns are plain
# bigints: a value outside (a client's bogus last_seen, an expiry of 9e18) would stop the whole
# COPY with "interval out of range", so it is replaced (see each use) and counted, naming the row.
MIN_MS = -62135596800000
MAX_MS = 253402300799999


def _out_of_range(ms: str) -> str:
    """SQL: the millisecond value is set and outside what a timestamp holds."""
    return f"({ms}) NOT BETWEEN {MIN_MS} AND {MAX_MS}"


def _in_range_or_null(ms: str) -> str:
    return f"(CASE WHEN ({ms}) BETWEEN {MIN_MS} AND {MAX_MS} THEN {ms} END)"


CREATION_OUT_OF_RANGE = f"u.creation_ts NOT BETWEEN {MIN_MS // 1000 + 1} AND {MAX_MS // 1000}"
USER_MS = (f"COALESCE(CASE WHEN u.creation_ts BETWEEN {MIN_MS // 1000 + 1} AND {MAX_MS // 1000} "
           "THEN u.creation_ts * 1000 END, %(run_ms)s)")
USER_ID = _ulid(USER_MS, "u", "u.name")
USER_CREATED = _ts(USER_MS)
LAST_SEEN_MS = _in_range_or_null("d.last_seen")
# A device's session is dated no later than its earliest token (by last_validated, as MAS's own
# syn2mas dates it by its first token) and no later than its last activity (last_seen); with
# neither, by its user's creation. `tv` is DEVICE_TOKENS_JOIN.
SESSION_MS = f"COALESCE(LEAST(tv.first_validated, {LAST_SEEN_MS}), {USER_MS})"
DEVICE_TOKENS_JOIN = f"""
    LEFT JOIN (SELECT user_id, device_id, min({_in_range_or_null('last_validated')}) AS first_validated
               FROM access_tokens WHERE device_id IS NOT NULL GROUP BY user_id, device_id) tv
           ON tv.user_id = d.user_id AND tv.device_id = d.device_id"""
# The same for a few devices (those of refresh tokens): looked up per device through Synapse's
# index on access_tokens (user_id, device_id) rather than aggregating every token of the server.
DEVICE_TOKENS_LOOKUP = f"""
    LEFT JOIN LATERAL (SELECT min({_in_range_or_null('dt.last_validated')}) AS first_validated
                       FROM access_tokens dt WHERE dt.user_id = d.user_id AND dt.device_id = d.device_id) tv
           ON true"""
# One compat session per (user, device); the key is unambiguous thanks to the length prefix.
DEVICE_SESSION_ID = _ulid(SESSION_MS, "s", "length(d.user_id) || ':' || d.user_id || d.device_id")
TOKEN_MS = f"COALESCE({_in_range_or_null('at.last_validated')}, %(run_ms)s)"
# An expiry after year 9999 is no expiry; one before year 1 is long past.
TOKEN_EXPIRES = f"CASE WHEN at.valid_until_ms <= {MAX_MS} THEN {_ts(f'GREATEST(at.valid_until_ms, {MIN_MS})')} END"
ADDED_MS = f"COALESCE({_in_range_or_null('t.added_at')}, %(run_ms)s)"
DEVICELESS_SESSION_ID = _ulid(TOKEN_MS, "t", "at.id::text")
ACCESS_TOKEN_ID = _ulid(TOKEN_MS, "a", "at.id::text")
REFRESH_TOKEN_ID = _ulid(TOKEN_MS, "r", "rt.id::text")

SKIP_USER_MISSING = "user missing from the users table"
SKIP_APPSERVICE = "appservice user (not migrated)"
SKIP_DEACTIVATED = "user deactivated"
# MAS deletes a user's third-party ids when it deactivates them: a deactivated user's emails and
# phone numbers alike are left behind.
SKIP_DEACTIVATED_THREEPID = SKIP_DEACTIVATED + " (MAS drops these on deactivation)"
CLAMP_CREATION = ("users.creation_ts out of range, dated at the import", CREATION_OUT_OF_RANGE)
CLAMP_ADDED = ("user_threepids.added_at out of range, dated at the import", _out_of_range("t.added_at"))
SKIP_GUEST = "guest user (MAS has no guest sessions)"
SKIP_TOO_LONG = f"value longer than {MAX_INDEXED_BYTES} bytes"
SKIP_UNMAPPED = "SSO provider not mapped to MAS"
SKIP_DEVICE_GONE = "device gone"

USER_SKIP = (
    ("u.name IS NULL", SKIP_USER_MISSING),
    ("u.appservice_id IS NOT NULL", SKIP_APPSERVICE),
)


def _threepids(medium: str) -> dict:
    """The emails and the other third-party ids are one read of user_threepids, split by `medium` (SQL on
    t.medium), with the same skips: a deactivated user's are left behind (MAS drops them), and so is an
    address too long for MAS's index."""
    return {
        "source_table": "user_threepids",
        "source": f"FROM user_threepids t\nLEFT JOIN users u ON u.name = t.user_id\nWHERE {medium}",
        "skip": USER_SKIP + (
            ("u.deactivated <> 0", SKIP_DEACTIVATED_THREEPID),
            (f"octet_length(t.address) > {MAX_INDEXED_BYTES}", SKIP_TOO_LONG),
        ),
    }


# Refresh tokens: the access token of a refresh token is the first one pointing at it; a pair
# is obsolete once it was refreshed and the successor's access token has been used.
TOKEN_FROM = f"""
    LEFT JOIN users u ON u.name = at.user_id
    LEFT JOIN devices d ON d.user_id = at.user_id AND d.device_id = at.device_id{DEVICE_TOKENS_JOIN}
    LEFT JOIN refresh_tokens rt ON rt.id = at.refresh_token_id
    LEFT JOIN (SELECT refresh_token_id, min(id) AS first_id FROM access_tokens
               WHERE refresh_token_id IS NOT NULL GROUP BY refresh_token_id) p
           ON p.refresh_token_id = at.refresh_token_id
    LEFT JOIN (SELECT DISTINCT refresh_token_id FROM access_tokens
               WHERE used AND refresh_token_id IS NOT NULL) su
           ON su.refresh_token_id = rt.next_token_id"""

TOKEN_SKIP = USER_SKIP + (
    ("at.puppets_user_id IS NOT NULL", "puppet token (admin login as another user)"),
    ("u.deactivated <> 0", SKIP_DEACTIVATED),
    ("u.is_guest <> 0", SKIP_GUEST),
    ("at.device_id IS NOT NULL AND d.device_id IS NULL", SKIP_DEVICE_GONE),
    ("COALESCE(d.hidden, false)", "hidden device"),
    ("at.refresh_token_id IS NOT NULL AND rt.id IS NULL", "refresh token gone"),
    ("rt.id IS NOT NULL AND (rt.user_id <> at.user_id OR rt.device_id IS DISTINCT FROM at.device_id)",
     "refresh token of another device"),
    ("rt.id IS NOT NULL AND p.first_id <> at.id", "second access token of one refresh token"),
    ("su.refresh_token_id IS NOT NULL", "obsolete (refreshed, and the new token was used)"),
    (f"octet_length(at.token) > {MAX_INDEXED_BYTES}", SKIP_TOO_LONG),
)

# The last column of each streamed row: NULL, REPAIRED, or "reason<US>example" (see Stage).
STATUS_SEPARATOR = "\x1f"
STATUS_REPAIRED = "!"


def _literal(text: str) -> str:
    """A SQL string literal; %% keeps a percent sign from being read as a query parameter."""
    if "\x1f" in text:
        return "(" + " || chr(31) || ".join(_literal(part) for part in text.split("\x1f")) + ")"
    return "'" + text.replace("'", "''").replace("%", "%%") + "'"


# The devices stage checks each address once, in a subquery the planner may not flatten (OFFSET 0:
# flattened, the check would run again for each place that uses it).
DEVICES_WITH_IP_CHECK = f"(SELECT dd.*, {VALID_IP.replace('d.ip', 'dd.ip')} AS ip_ok FROM devices dd OFFSET 0)"
INVALID_IP = "(d.ip IS NOT NULL AND d.ip NOT IN ('', '-') AND NOT d.ip_ok)"


@dataclass
class Stage:
    """One MAS table fed from one Synapse query.

    `source` is the FROM/WHERE part: every row it yields is either migrated, or skipped for the
    reason of the first `skip` rule whose SQL condition holds. `columns` maps MAS column -> SQL.
    """

    name: str
    table: str
    source_table: str  # the Synapse table each row of the stage comes from
    source: str
    skip: tuple  # ((SQL condition, reason), ...), first match wins
    example: str
    columns: dict
    optional_columns: dict = field(default_factory=dict)  # written where the MAS schema has them
    fixed: str = ""  # SQL condition counting rows repaired on the way (reported, not skipped)
    fixed_label: str = ""
    # More repairs, reported with example rows: ((label, SQL condition), ...), first match wins
    # (after `fixed`): out-of-range values replaced as the columns say.
    clamps: tuple = ()
    report_skips: bool = True

    def skip_case(self) -> str:
        """SQL for the reason a row is skipped, NULL when it is migrated."""
        whens = " ".join(f"WHEN {condition} THEN {_literal(reason)}" for condition, reason in self.skip)
        return f"CASE {whens} END" if whens else "NULL::text"

    def status_case(self) -> str:
        """SQL for a row's status: NULL when migrated as it is, REPAIRED when migrated repaired,
        else the skip reason, the unit separator and the row's example."""
        example = f"COALESCE(({self.example})::text, '')"
        whens = [f"WHEN {condition} THEN {_literal(reason + STATUS_SEPARATOR)} || {example}"
                 for condition, reason in self.skip]
        if self.fixed:
            whens.append(f"WHEN {self.fixed} THEN {_literal(STATUS_REPAIRED)}")
        for label, condition in self.clamps:
            whens.append(f"WHEN {condition} THEN {_literal(STATUS_REPAIRED + label + STATUS_SEPARATOR)} || {example}")
        return f"CASE {' '.join(whens)} END" if whens else "NULL::text"

    def select(self, target_columns) -> str:
        """Every row of the source, as the MAS row followed by its status as the last column:
        one pass over Synapse both loads MAS and counts what is skipped and why."""
        exprs = {**self.columns, **self.optional_columns}
        cols = ",\n    ".join(f"{exprs[c]} AS {c}" for c in target_columns)
        return f"SELECT\n    {cols},\n    {self.status_case()} AS syn2mas_status\n{self.source}"

    def count(self) -> str:
        fixed = f"({self.fixed})" if self.fixed else "false"
        # Examples only for skipped rows: the FILTER spares building the text for every migrated row.
        return ("SELECT reason, count(*), min(example) FILTER (WHERE reason IS NOT NULL),"
                " max(example) FILTER (WHERE reason IS NOT NULL), count(*) FILTER (WHERE fixed)\n"
                f"FROM (SELECT {self.skip_case()} AS reason, ({self.example})::text AS example,"
                f" {fixed} AS fixed\n{self.source}) s\nGROUP BY reason")


STAGES = (
    Stage(
        name="users", table="users", source_table="users",
        source="FROM users u\nWHERE true",
        skip=(("u.appservice_id IS NOT NULL", SKIP_APPSERVICE),),
        example="u.name",
        columns={
            "user_id": USER_ID,
            "username": "substr(u.name, 2, strpos(u.name, ':') - 2)",
            "created_at": USER_CREATED,
            "locked_at": f"CASE WHEN u.locked THEN {USER_CREATED} END",
            "can_request_admin": "u.admin <> 0",
            "is_guest": "u.is_guest <> 0",
            "deactivated_at": f"CASE WHEN u.deactivated <> 0 THEN {USER_CREATED} END",
        },
        clamps=(CLAMP_CREATION,),
    ),
    Stage(
        name="passwords", table="user_passwords", source_table="users",
        source="FROM users u\nWHERE u.password_hash IS NOT NULL AND u.password_hash <> ''",
        skip=(("u.appservice_id IS NOT NULL", SKIP_APPSERVICE),),
        example="u.name",
        columns={
            "user_password_id": _ulid(USER_MS, "p", "u.name"),
            "user_id": USER_ID,
            "hashed_password": "u.password_hash",
            "created_at": USER_CREATED,
            # Synapse's bcrypt hashes, checked by MAS's password scheme version 1.
            "version": "1",
        },
    ),
    Stage(
        name="emails", table="user_emails", **_threepids("t.medium = 'email'"),
        example="t.user_id || ' ' || t.address",
        columns={
            "user_email_id": _ulid(ADDED_MS, "e", "t.address"),
            "user_id": USER_ID,
            "email": "t.address",
            "created_at": _ts(ADDED_MS),
        },
        optional_columns={"confirmed_at": _ts(f"COALESCE({_in_range_or_null('t.validated_at')}, {ADDED_MS})")},
        clamps=(CLAMP_ADDED, ("user_threepids.validated_at out of range, dated when added",
                              _out_of_range("t.validated_at"))),
    ),
    Stage(
        name="other_threepids", table="user_unsupported_third_party_ids", **_threepids("t.medium <> 'email'"),
        example="t.user_id || ' ' || t.medium || ':' || t.address",
        columns={
            "user_id": USER_ID,
            "medium": "t.medium",
            "address": "t.address",
            "created_at": _ts(ADDED_MS),
        },
        clamps=(CLAMP_ADDED,),
    ),
    Stage(
        name="upstream_links", table="upstream_oauth_links", source_table="user_external_ids",
        source=("FROM user_external_ids x\nLEFT JOIN users u ON u.name = x.user_id\n"
                "LEFT JOIN unnest(%(map_providers)s::text[], %(map_ids)s::uuid[]) AS m(auth_provider, provider_id)"
                " ON m.auth_provider = x.auth_provider\nWHERE true"),
        skip=USER_SKIP + (
            ("m.provider_id IS NULL", SKIP_UNMAPPED),
            (f"octet_length(x.external_id) > {MAX_INDEXED_BYTES}", SKIP_TOO_LONG),
        ),
        example="x.user_id || ' ' || x.auth_provider",
        columns={
            "upstream_oauth_link_id": _ulid(USER_MS, "l", "x.auth_provider || ':' || x.external_id"),
            "upstream_oauth_provider_id": "m.provider_id",
            "user_id": USER_ID,
            "subject": "x.external_id",
            "created_at": USER_CREATED,
        },
    ),
    Stage(
        name="device_sessions", table="compat_sessions", source_table="devices",
        source=f"FROM {DEVICES_WITH_IP_CHECK} d\nLEFT JOIN users u ON u.name = d.user_id{DEVICE_TOKENS_JOIN}\nWHERE true",
        skip=USER_SKIP + (
            ("u.deactivated <> 0", SKIP_DEACTIVATED),
            ("u.is_guest <> 0", SKIP_GUEST),
            ("COALESCE(d.hidden, false)", "hidden device (cross-signing keys, not a session)"),
        ),
        example="d.user_id || ' ' || d.device_id",
        columns={
            "compat_session_id": DEVICE_SESSION_ID,
            "user_id": USER_ID,
            "device_id": "d.device_id",
            "created_at": _ts(SESSION_MS),
            "is_synapse_admin": "u.admin <> 0",
            "last_active_at": _ts(LAST_SEEN_MS),
            "last_active_ip": "CASE WHEN d.ip_ok THEN d.ip END",
            "user_agent": "d.user_agent",
            "human_name": "d.display_name",
        },
        fixed=INVALID_IP,
        fixed_label="invalid IP address stored as unknown",
        clamps=(("devices.last_seen out of range, stored as unknown", _out_of_range("d.last_seen")),),
    ),
    Stage(
        name="deviceless_sessions", table="compat_sessions", source_table="access_tokens",
        source=f"FROM access_tokens at{TOKEN_FROM}\nWHERE at.device_id IS NULL",
        skip=TOKEN_SKIP,
        example="at.user_id || ' token ' || at.id",
        columns={
            "compat_session_id": DEVICELESS_SESSION_ID,
            "user_id": USER_ID,
            "device_id": "NULL",
            "created_at": _ts(TOKEN_MS),
            "is_synapse_admin": "false",
            # A deviceless token's last use is not a session's activity (none is known).
            "last_active_at": "NULL",
            "last_active_ip": "NULL",
            "user_agent": "NULL",
            "human_name": "NULL",
        },
        # Its skips are those of the access tokens stage, which reports them.
        report_skips=False,
    ),
    Stage(
        name="access_tokens", table="compat_access_tokens", source_table="access_tokens",
        source=f"FROM access_tokens at{TOKEN_FROM}\nWHERE true",
        skip=TOKEN_SKIP,
        example="at.user_id || ' token ' || at.id",
        columns={
            "compat_access_token_id": ACCESS_TOKEN_ID,
            "compat_session_id": f"CASE WHEN at.device_id IS NULL THEN {DEVICELESS_SESSION_ID} ELSE {DEVICE_SESSION_ID} END",
            "access_token": "at.token",
            "created_at": _ts(TOKEN_MS),
            "expires_at": TOKEN_EXPIRES,
        },
        clamps=(
            ("access_tokens.last_validated out of range, dated at the import", _out_of_range("at.last_validated")),
            ("access_tokens.valid_until_ms out of range (after year 9999: no expiry)",
             _out_of_range("at.valid_until_ms")),
        ),
    ),
    Stage(
        name="refresh_tokens", table="compat_refresh_tokens", source_table="refresh_tokens",
        source="""FROM refresh_tokens rt
    LEFT JOIN (SELECT refresh_token_id, min(id) AS first_id FROM access_tokens
               WHERE refresh_token_id IS NOT NULL GROUP BY refresh_token_id) p ON p.refresh_token_id = rt.id
    LEFT JOIN access_tokens at ON at.id = p.first_id
    LEFT JOIN users u ON u.name = at.user_id
    LEFT JOIN devices d ON d.user_id = at.user_id AND d.device_id = at.device_id""" + DEVICE_TOKENS_LOOKUP + """
    LEFT JOIN (SELECT DISTINCT refresh_token_id FROM access_tokens
               WHERE used AND refresh_token_id IS NOT NULL) su ON su.refresh_token_id = rt.next_token_id
WHERE true""",
        skip=(("at.id IS NULL", "no access token uses it"),) + TOKEN_SKIP + (
            (f"octet_length(rt.token) > {MAX_INDEXED_BYTES}", SKIP_TOO_LONG),
        ),
        example="rt.user_id || ' refresh token ' || rt.id",
        columns={
            "compat_refresh_token_id": REFRESH_TOKEN_ID,
            "compat_session_id": DEVICE_SESSION_ID,
            "compat_access_token_id": ACCESS_TOKEN_ID,
            "refresh_token": "rt.token",
            "created_at": _ts(TOKEN_MS),
        },
    ),
)


def stage_params(server_name: str, links=None, seed: int = 0, run_ms: int = 0) -> dict:
    """The query parameters of the stages; `links` maps auth_provider -> ProviderLink, `seed`
    keys the ids' hash (random per run)."""
    links = links or {}
    return {
        "seed": seed, "run_ms": run_ms, "server_name": server_name,
        "map_providers": list(links), "map_ids": [str(link.provider_id) for link in links.values()],
        "ipv4_pattern": IPV4_PATTERN, "ipv6_pattern": IPV6_PATTERN,
    }
