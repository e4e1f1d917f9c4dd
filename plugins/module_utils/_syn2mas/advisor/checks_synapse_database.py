# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of Synapse's database: who else uses it, its schema, and what the import would read.

The counts come from the import's own stage queries (stages.STAGES), so what is reported
here is exactly what the import carries over and leaves behind.
"""

from __future__ import annotations

from ..migration.stages import SKIP_APPSERVICE, SKIP_DEVICE_GONE, SKIP_TOO_LONG, SKIP_UNMAPPED, SKIP_USER_MISSING, STAGES
from ..migration.synapse_reader import OLDEST_SCHEMA_VERSION, OLDEST_SYNAPSE
from .registry import ERROR, INFO, SYNAPSE_DB, SYNAPSE_SNAPSHOT, WARN, check, examples, finding, plural

# The schema-92 deltas Synapse 1.136.0 applies: a database at version 92 that lacks one of them
# was last run by an older Synapse.
OLDEST_SCHEMA_DELTAS = (
    "92/01_remove_trigger.sql.postgres",
    "92/02_remove_populate_participant_bg_update.sql",
    "92/04_ss_membership_snapshot_idx.sql",
    "92/04_thread_subscriptions.sql",
    "92/04_thread_subscriptions_seq.sql.postgres",
    "92/05_fixup_max_depth_cap.sql",
    "92/05_thread_subscriptions_comments.sql.postgres",
    "92/06_device_federation_inbox_index.sql",
    "92/06_threads_last_sent_stream_ordering_comments.sql.postgres",
    "92/07_add_user_reports.sql",
    "92/07_event_txn_id_device_id_txn_id2.sql",
    "92/08_room_ban_redactions.sql",
    "92/09_thread_subscriptions_update.sql",
    "92/09_thread_subscriptions_update.sql.postgres",
)

# Synapse table each import stage reads, for "where".
STAGE_TABLES = {
    "users": "users", "passwords": "users", "emails": "user_threepids", "other_threepids": "user_threepids",
    "upstream_links": "user_external_ids", "device_sessions": "devices", "deviceless_sessions": "access_tokens",
    "access_tokens": "access_tokens", "refresh_tokens": "refresh_tokens",
}
SNAPSHOT = (SYNAPSE_DB, SYNAPSE_SNAPSHOT)


def table(name: str) -> str:
    return f"Synapse database, table {name}"


@check("synapse_running", SYNAPSE_DB, "other clients of Synapse's database")
def synapse_running(f):
    clients = f.synapse_db.clients
    if not clients:
        return None
    listing = "; ".join(str(c) for c in clients)
    if f.options.for_real_import:
        return finding(ERROR, f"{plural(len(clients), 'other client')} connected to Synapse's database: {listing}",
                       "Synapse database (pg_stat_activity)",
                       "Stop Synapse and all its workers (and close other sessions) before the import: it only runs "
                       "on a database nobody writes to")
    return finding(INFO, f"{plural(len(clients), 'other client')} connected to Synapse's database (Synapse is "
                   f"running): {listing}", "Synapse database (pg_stat_activity)",
                   "Fine for the advisor and a dry run; stop Synapse and its workers before the real import")


def schema_too_old(version, deltas) -> str | None:
    """Why a database of this schema version and these deltas predates OLDEST_SYNAPSE, or None."""
    if version is None:
        return "it has no schema_version (is it a Synapse database?)"
    if version < OLDEST_SCHEMA_VERSION:
        return f"its schema version is {version}, Synapse {OLDEST_SYNAPSE} has {OLDEST_SCHEMA_VERSION}"
    if version == OLDEST_SCHEMA_VERSION:
        missing = [d for d in OLDEST_SCHEMA_DELTAS if d not in deltas]
        if missing:
            return (f"its schema version {version} lacks {plural(len(missing), 'delta')} that Synapse "
                    f"{OLDEST_SYNAPSE} applies (e.g. {missing[-1]})")
    return None


@check("synapse_schema_too_old", SYNAPSE_DB, "schema_version, applied_schema_deltas")
def synapse_schema_too_old(f):
    why = schema_too_old(f.synapse_db.schema_version, f.synapse_db.deltas)
    if not why:
        return None
    return finding(ERROR, f"Synapse's database is older than Synapse {OLDEST_SYNAPSE}: {why}", table("schema_version"),
                   f"Upgrade Synapse to {OLDEST_SYNAPSE} or newer and start it once, so it updates its database "
                   f"(MAS supports Synapse {OLDEST_SYNAPSE} and newer only)")


@check("wrong_server_name_users", SYNAPSE_DB, "users not @localpart:server_name", needs=SNAPSHOT)
def wrong_server_name_users(f):
    count, found = f.synapse_db.wrong_server_name
    if not count:
        return None
    return finding(ERROR, f"{plural(count, 'user')} in Synapse's users table are not @localpart:{f.server_name}"
                   f"{examples(found)}: the import would fail on them", table("users"),
                   f"Check server_name ({f.synapse_where('server_name')}) is this homeserver's; delete or fix these "
                   "rows (leftovers of a renamed server) before the import")


def _skips(f, reason: str):
    """(stage, info) of every reported stage that leaves rows behind for `reason`."""
    counts = f.synapse_db.counts
    return [(stage, counts[stage.name]["skipped_reasons"][reason]) for stage in STAGES
            if stage.report_skips and reason in counts[stage.name]["skipped_reasons"]]


@check("orphan_rows", SYNAPSE_DB, "rows whose user is missing", needs=SNAPSHOT)
def orphan_rows(f):
    return [finding(WARN, f"{plural(info['count'], 'row')} of {STAGE_TABLES[stage.name]} ({stage.name}) belong to "
                    f"users missing from the users table{examples(info['examples'])}: the import leaves them behind",
                    table(STAGE_TABLES[stage.name]),
                    "Leftovers of deleted users: nothing to lose, but check the examples, then delete these rows in "
                    "Synapse (or accept that they are not migrated)")
            for stage, info in _skips(f, SKIP_USER_MISSING)]


@check("tokens_device_gone", SYNAPSE_DB, "tokens whose device is gone", needs=SNAPSHOT)
def tokens_device_gone(f):
    return [finding(WARN, f"{plural(info['count'], 'token')} in {STAGE_TABLES[stage.name]} point at devices that no "
                    f"longer exist{examples(info['examples'])}: the import leaves them behind, so the clients using "
                    "them will be logged out", table(STAGE_TABLES[stage.name]),
                    "Usually leftovers of deleted devices; if a client still uses one, its user logs in again after "
                    "the switch. Delete them in Synapse to make this go away")
            for stage, info in _skips(f, SKIP_DEVICE_GONE)]


@check("values_too_long", SYNAPSE_DB, "values too long for MAS's indexes", needs=SNAPSHOT)
def values_too_long(f):
    return [finding(WARN, f"{plural(info['count'], 'value')} in {STAGE_TABLES[stage.name]} ({stage.name}) are too "
                    f"long for MAS's indexes{examples(info['examples'])}: the import leaves them behind",
                    table(STAGE_TABLES[stage.name]),
                    "Check the examples (usually junk or abuse); shorten or delete them in Synapse")
            for stage, info in _skips(f, SKIP_TOO_LONG)]


# Skips with a check of their own; every other reason is reported by skipped_rows.
_REPORTED_ELSEWHERE = (SKIP_USER_MISSING, SKIP_DEVICE_GONE, SKIP_TOO_LONG, SKIP_APPSERVICE, SKIP_UNMAPPED)


@check("skipped_rows", SYNAPSE_DB, "rows the import leaves behind on purpose", needs=SNAPSHOT)
def skipped_rows(f):
    counts = f.synapse_db.counts
    return [finding(INFO, f"{plural(info['count'], 'row')} of {STAGE_TABLES[stage.name]} ({stage.name}) are not "
                    f"migrated: {reason}{examples(info['examples'])}", table(STAGE_TABLES[stage.name]),
                    "Nothing to do: this is what MAS expects")
            for stage in STAGES if stage.report_skips
            for reason, info in counts[stage.name]["skipped_reasons"].items() if reason not in _REPORTED_ELSEWHERE]


@check("invalid_ip_addresses", SYNAPSE_DB, "device IP addresses MAS cannot store", needs=SNAPSHOT)
def invalid_ip_addresses(f):
    fixed = sum(f.synapse_db.counts["device_sessions"]["fixed"].values())
    if not fixed:
        return None
    return finding(INFO, f"{plural(fixed, 'device')} have a last-seen IP address MAS cannot store; it is imported as "
                   "unknown", table("devices"), "Nothing to do")


@check("guest_users", SYNAPSE_DB, "guest users", needs=SNAPSHOT)
def guest_users(f):
    db = f.synapse_db
    if not db.guests:
        return None
    return finding(WARN, f"{plural(db.guests, 'guest user')} ({db.active_guests:,} not deactivated)"
                   f"{examples([db.guest_example])}: they are imported as guest accounts, but their devices and tokens "
                   "are not, so they lose access", table("users"),
                   "Nothing can keep guest sessions (MAS has no guests, matrix-authentication-service#1445); deactivate "
                   "old guests in Synapse if you want a clean run. WARN as mas-cli has it, not ERROR as the old "
                   "TypeScript advisor had it: blocking the migration would not protect these accounts")


@check("appservice_users", SYNAPSE_DB, "appservice users", needs=SNAPSHOT)
def appservice_users(f):
    counts = f.synapse_db.counts
    appservice = counts["users"]["skipped_reasons"].get(SKIP_APPSERVICE)
    if not appservice:
        return None
    per_service = ", ".join(f"{sid}: {n:,}" for sid, n in f.synapse_db.appservices)
    left = sum(entry["skipped_reasons"].get(SKIP_APPSERVICE, {}).get("count", 0)
               for name, entry in counts.items() if name not in ("users", "passwords"))
    return finding(WARN, f"{plural(appservice['count'], 'appservice user')} ({per_service}) are not migrated"
                   f"{examples(appservice['examples'])}; {plural(left, 'row')} of theirs (devices, tokens, third-party "
                   "ids, SSO links) stay in Synapse only", table("users"),
                   "Bridges and bots keep working through their as_token (Synapse checks it), but MAS's /login refuses "
                   "m.login.application_service: bridges that log their users in that way (double puppeting, device "
                   "creation for encryption) need MSC4190 support (Synapse 1.141 or newer with it enabled) or "
                   "appservice double puppeting; check each bridge before the switch")


@check("non_email_threepids", SYNAPSE_DB, "third-party ids other than email", needs=SNAPSHOT)
def non_email_threepids(f):
    total = f.synapse_db.counts["other_threepids"]["migrated"]
    if not total:
        return None
    return finding(WARN, f"{plural(total, 'third-party id')} other than email (phone numbers) will be kept in MAS's "
                   "user_unsupported_third_party_ids but cannot be used there", table("user_threepids"),
                   "Tell the users who log in or reset passwords with a phone number to add an email address or set a "
                   "password. WARN as mas-cli has it, not ERROR as the old TypeScript advisor had it: the data is kept "
                   "and no setting could make MAS use it")


@check("users_without_email", SYNAPSE_DB, "users without an email address", needs=SNAPSHOT)
def users_without_email(f):
    if not f.synapse_db.without_email:
        return None
    return finding(INFO, f"active users without an email address: {f.synapse_db.without_email:,}",
                   table("user_threepids"), "They cannot recover a forgotten password through MAS; encourage them to "
                   "add one")


@check("migration_counts", SYNAPSE_DB, "what the import will carry over", needs=SNAPSHOT)
def migration_counts(f):
    counts = f.synapse_db.counts
    migrated = {name: entry["migrated"] for name, entry in counts.items()}
    unmapped = counts["upstream_links"]["skipped_reasons"].get(SKIP_UNMAPPED, {}).get("count", 0)
    links = plural(migrated["upstream_links"], "SSO link")
    if unmapped:
        links += f" (and {unmapped:,} more once their providers are mapped to MAS providers)"
    return finding(INFO, f"the import will carry over {plural(migrated['users'], 'user')}, "
                   f"{plural(migrated['passwords'], 'password')}, "
                   f"{plural(migrated['emails'], 'email address', 'email addresses')}, {links}, "
                   f"{plural(migrated['device_sessions'], 'device')}, "
                   f"{plural(migrated['deviceless_sessions'], 'device-less token session')}, "
                   f"{plural(migrated['access_tokens'], 'access token')} and "
                   f"{plural(migrated['refresh_tokens'], 'refresh token')}", "Synapse database",
                   "Device-less tokens (admin API, scripts) are kept as sessions without a device (the old TypeScript "
                   "advisor flagged them as ERROR because it dropped them)")


def counts_summary(f) -> dict:
    """What the import would carry over, for the result's summary ({} when Synapse's data was not read)."""
    db = f.synapse_db
    if db is None or not db.snapshot:
        return {}
    migrated = {name: entry["migrated"] for name, entry in db.counts.items()}
    appservice = db.counts["users"]["skipped_reasons"].get(SKIP_APPSERVICE)
    return {"users": migrated["users"], "passwords": migrated["passwords"], "devices": migrated["device_sessions"],
            "access_tokens": migrated["access_tokens"], "refresh_tokens": migrated["refresh_tokens"],
            "guests": db.guests, "appservice_users": appservice["count"] if appservice else 0, "counts": db.counts}
