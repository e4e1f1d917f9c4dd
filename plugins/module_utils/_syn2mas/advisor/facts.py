# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the advisor reads, read once: both configs and both databases, before any check judges.

`gather` never raises for what it meets: a config that cannot be read, or a database that cannot
be reached, becomes a finding of the check declared for it here, and the facts that depend on it
are recorded as missing, with the reason (the checks that need them are then reported as not
run). It never writes: Synapse is read in a READ ONLY snapshot, MAS in READ ONLY transactions,
and neither session waits long behind another's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import synapse_settings
from ..migration import live_checks, mas_schema
from ..config import ConfigSources, load_mas_config, load_synapse_config, provider_mapping
from ..db import OTHER_CLIENTS, InvalidUriError, connect, database_conninfo, describe, first_line
from ..errors import ConfigError, RefusedError, Syn2masError
from ..migration.mas_writer import IMPORT_LOCK_HELD, existing_providers, read_marker, row_rewriters, tables_with_data
from ..migration.stages import STAGES, stage_params
from ..migration.synapse_reader import OLDEST_SCHEMA_VERSION, SynapseReader
from .registry import (
    ERROR, MAPPING, MAS_CONFIG, MAS_DB, MAS_HTTP, SERVER_NAME, SYNAPSE_CONFIG, SYNAPSE_DB, SYNAPSE_SNAPSHOT, finding,
    gathered,
)

try:  # only to recognise database errors; db.connect reports a missing psycopg2 itself
    import psycopg2
    _PG_ERRORS: tuple = (psycopg2.Error,)
except ImportError:  # pragma: no cover
    _PG_ERRORS = ()

APPLICATION_NAME = "syn2mas-advisor"
# A live homeserver: never wait long behind another session's lock (a running import holds
# ACCESS EXCLUSIVE locks on MAS's tables, a Synapse upgrade on Synapse's).
LOCK_TIMEOUT = "5s"
NO_MAS_CONFIG = "no MAS config given (--masConfigFile / mas_config)"
NO_MAS_URL = "no MAS URL given (--masUrl / mas_url), so MAS was not asked whether it answers"
MAS_HTTP_TIMEOUT = 10.0

# The mapping sections of homeserver.yaml the checks read: one of another type is reported once.
SYNAPSE_SECTIONS = ("matrix_authentication_service", "password_config", "user_consent", "cas_config",
                    "saml2_config", "jwt_config", "ldap_config", "login_via_existing_session",
                    "experimental_features")

SYNAPSE_CONFIG_INVALID = gathered("synapse_config_invalid", SYNAPSE_CONFIG,
                                  "Synapse's config files can be read and hold server_name")
SYNAPSE_DATABASE_UNREACHABLE = gathered("synapse_database_unreachable", SYNAPSE_DB, "connecting to Synapse's database")
SYNAPSE_TABLES_MISSING = gathered("synapse_tables_missing", SYNAPSE_DB, "the tables the import reads")
MAS_CONFIG_INVALID = gathered("mas_config_invalid", MAS_CONFIG, "MAS's config files can be read")
PROVIDER_MAPPING_INVALID = gathered("provider_mapping_invalid", MAS_CONFIG, "the upstream provider mapping")
MAS_DATABASE_CONFIG = gathered("mas_database_config", MAS_DB, "MAS's database section")
MAS_DATABASE_UNREACHABLE = gathered("mas_database_unreachable", MAS_DB, "connecting to MAS's database")


@dataclass
class AdvisorOptions(ConfigSources):
    upstream_provider_mapping: list = field(default_factory=list)
    # True right before the real import: a running Synapse (or MAS) is then an ERROR.
    for_real_import: bool = False
    # The reverse proxy, when given: its file, and/or the homeserver's public URL to probe
    # (MAS reached directly, to compare answers with).
    reverse_proxy_config: str = ""
    reverse_proxy_kind: str = "nginx"  # a kind of reverse_proxy.KINDS: whether and how its file is read
    public_url: str = ""
    mas_url: str = ""


@dataclass
class SynapseDbFacts:
    """Synapse's database: its sessions and schema, then (`snapshot`) what the import would read."""

    clients: list                 # db.Client of the other sessions
    schema_version: int | None
    deltas: set                   # the applied deltas of schema version OLDEST_SCHEMA_VERSION
    snapshot: bool = False        # the fields below were read
    wrong_server_name: tuple = (0, [])  # (count, examples)
    in_use: dict = field(default_factory=dict)  # auth_provider -> SSO links of migrated users
    counts: dict = field(default_factory=dict)  # stage -> {migrated, skipped, skipped_reasons, fixed: {label: n}}
    guests: int = 0
    active_guests: int = 0
    guest_example: str | None = None
    without_email: int = 0
    appservices: list = field(default_factory=list)  # (appservice_id, users)


@dataclass
class MasDbFacts:
    clients: list                 # (pid, application_name, address, holds the import lock)
    schema: object = None         # mas_schema.MasSchema, or None with schema_error
    schema_error: str | None = None
    marker: dict | None = None    # a previous import's marker
    filled: list = field(default_factory=list)  # tables holding rows (read when there is no marker)
    rewriters: list = field(default_factory=list)  # (table, kind, name): triggers and rules on written tables
    providers_table: bool = False
    providers_present: set = field(default_factory=set)  # str(provider id) of the mapped providers found


@dataclass
class Facts:
    options: AdvisorOptions
    synapse: object = None        # config.SynapseConfig
    settings: dict = field(default_factory=dict)  # Synapse's settings, the unreadable ones left out
    server_name: str | None = None
    mas: object = None            # config.MasConfig
    mapping: dict = field(default_factory=dict)
    synapse_db: SynapseDbFacts | None = None
    mas_db: MasDbFacts | None = None
    missing: dict = field(default_factory=dict)  # need -> why it is missing
    summary: dict = field(default_factory=dict)
    mas_live: list = field(default_factory=list)  # live_checks.LiveCheck of MAS's answers (MAS_HTTP)

    def synapse_where(self, key: str) -> str:
        if self.synapse is not None:
            return self.synapse.where(key)
        return f"{', '.join(self.options.synapse_config)}: {key}"

    def mas_where(self, key: str) -> str:
        return self.mas.where(key) if self.mas is not None else key

    @property
    def password_users(self) -> int | None:
        """Users with a password the import carries over (None: Synapse's data was not read)."""
        if self.synapse_db is None or not self.synapse_db.snapshot:
            return None
        return self.synapse_db.counts["passwords"]["migrated"]

    def lacks(self, needs) -> str | None:
        """Why one of `needs` is missing, or None."""
        for need in needs:
            if need in self.missing:
                return self.missing[need]
        return None


def gather(options: AdvisorOptions) -> tuple:
    """(Facts, [(check id, finding)] met while reading)."""
    facts = Facts(options)
    found: list = []
    _load_synapse(facts, found)
    _load_mas(facts, found)
    _read_synapse_database(facts, found)
    _read_mas_database(facts, found)
    _ask_mas(facts)
    return facts, found


def _ask_mas(facts: Facts) -> None:
    """MAS's answers at the URL given (read only: GETs of /health, its OpenID configuration and its
    compatibility login's flows), the issuer compared with the one its config declares."""
    if not facts.options.mas_url:
        facts.missing[MAS_HTTP] = NO_MAS_URL
        return
    issuer = live_checks.mas_issuer(facts.mas.raw) if facts.mas is not None else None
    options = live_checks.LiveOptions(synapse_url="", mas_url=facts.options.mas_url, issuer=issuer,
                                      timeout=MAS_HTTP_TIMEOUT)
    facts.mas_live = live_checks.check_mas(options, required=True)


# -- the configs --------------------------------------------------------------------------------

def _load_synapse(facts: Facts, found: list) -> None:
    options = facts.options
    try:
        facts.synapse = load_synapse_config(options.synapse_config)
    except ConfigError as exc:
        found.append((SYNAPSE_CONFIG_INVALID, finding(
            ERROR, str(exc), ", ".join(options.synapse_config or []) or "synapse_config",
            "Pass Synapse's homeserver.yaml (and its split files, in the order Synapse reads them) and fix what "
            "the message names")))
        facts.missing[SYNAPSE_CONFIG] = facts.missing[SERVER_NAME] = "Synapse's config could not be read"
        return
    facts.settings = _readable_settings(facts, found)
    try:
        facts.server_name = facts.synapse.server_name
    except ConfigError as exc:
        found.append((SYNAPSE_CONFIG_INVALID, finding(
            ERROR, str(exc), facts.synapse_where("server_name"),
            "Pass the config files that hold server_name (the homeserver's domain)")))
        facts.missing[SERVER_NAME] = "Synapse's server_name is unknown"


def _readable_settings(facts: Facts, found: list) -> dict:
    """Synapse's merged settings without the ones Synapse would refuse to read (each reported once)."""
    settings = dict(facts.synapse.raw)
    for key in SYNAPSE_SECTIONS:
        value = settings.get(key)
        if value is not None and not isinstance(value, dict):
            found.append((SYNAPSE_CONFIG_INVALID, finding(
                ERROR, f"{key} is a {type(value).__name__}, Synapse expects a mapping there",
                facts.synapse_where(key),
                f"Write {key} as a mapping of settings (or delete it), as Synapse's documentation shows")))
            del settings[key]
    try:
        synapse_settings.flag(settings, "enable_registration")
    except ConfigError as exc:
        key = "disable_registration" if "disable_registration" in settings else "enable_registration"
        found.append((SYNAPSE_CONFIG_INVALID, finding(ERROR, str(exc), facts.synapse_where(key),
                                                      f"Write {key}: true or {key}: false")))
        settings.pop("disable_registration", None)
        settings.pop("enable_registration", None)
    try:
        facts.synapse.oidc_providers()
    except ConfigError as exc:
        found.append((SYNAPSE_CONFIG_INVALID, finding(ERROR, str(exc), facts.synapse_where("oidc_providers"),
                                                      "Fix the OIDC provider entry as Synapse's documentation shows")))
    return settings


def _load_mas(facts: Facts, found: list) -> None:
    options = facts.options
    if options.mas_config:
        try:
            facts.mas = load_mas_config(options.mas_config, options.mas_reader)
        except ConfigError as exc:
            found.append((MAS_CONFIG_INVALID, finding(
                ERROR, str(exc), ", ".join(options.mas_config),
                "Pass MAS's config.yaml (and its other files) and fix what the message names")))
    if facts.mas is None:
        facts.missing[MAS_CONFIG] = "MAS's config could not be read" if options.mas_config else NO_MAS_CONFIG
    try:
        facts.mapping = provider_mapping(facts.mas, options.upstream_provider_mapping)
    except ConfigError as exc:
        explicit = "upstream provider mapping" in str(exc)
        found.append((PROVIDER_MAPPING_INVALID if explicit else MAS_CONFIG_INVALID, finding(
            ERROR, str(exc),
            "upstream_provider_mapping" if explicit else facts.mas_where("upstream_oauth2.providers"),
            "Give each mapping as SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID (a ULID or UUID), and each MAS upstream "
            "provider an id that is a ULID")))
        try:  # keep what can still be read: the MAS config's part, or the explicit part
            facts.mapping = (provider_mapping(facts.mas, []) if explicit
                             else provider_mapping(None, options.upstream_provider_mapping))
        except ConfigError:
            facts.mapping = {}
    if facts.mas is None and not options.upstream_provider_mapping:
        facts.missing[MAPPING] = facts.missing[MAS_CONFIG]


# -- Synapse's database -------------------------------------------------------------------------

def _synapse_db_missing(facts: Facts, reason: str, snapshot_only: bool = False) -> None:
    if not snapshot_only:
        facts.missing[SYNAPSE_DB] = reason
    facts.missing[SYNAPSE_SNAPSHOT] = reason


def _read_synapse_database(facts: Facts, found: list) -> None:
    options = facts.options
    if facts.synapse is None and not options.synapse_database_uri:
        return _synapse_db_missing(facts, "Synapse's config could not be read")
    if facts.server_name is None:
        return _synapse_db_missing(facts, "Synapse's server_name is unknown")
    try:
        conninfo = database_conninfo(facts.synapse, options.synapse_database_uri, "the given Synapse database URI")
    except ConfigError:  # reported by the synapse_database_config check
        return _synapse_db_missing(facts, "Synapse's database section is unusable")
    except InvalidUriError as exc:  # a URI that does not parse: no connection is tried
        found.append((SYNAPSE_DATABASE_UNREACHABLE, finding(
            ERROR, str(exc), facts.synapse_where("database"),
            "Fix the URI (database.args in homeserver.yaml, or --synapseDatabaseUri / synapse_database_uri); "
            "percent-encode special characters of the password")))
        return _synapse_db_missing(facts, "Synapse's database URI does not parse")
    facts.summary["synapse_database"] = _describe(conninfo)
    try:
        conn = connect(conninfo, APPLICATION_NAME, "Synapse")
    except Syn2masError as exc:
        found.append((SYNAPSE_DATABASE_UNREACHABLE, finding(
            ERROR, str(exc), facts.synapse_where("database"),
            "Run the advisor where Synapse's database is reachable with Synapse's credentials (as Synapse's user, on "
            "its host), or pass --synapseDatabaseUri / synapse_database_uri")))
        return _synapse_db_missing(facts, "Synapse's database is unreachable")
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = %s", (LOCK_TIMEOUT,))
        conn.commit()
        reader = SynapseReader(conn, facts.server_name)
        facts.synapse_db = synapse_session_facts(reader)
        facts.summary["synapse_schema_version"] = facts.synapse_db.schema_version
        _read_synapse_snapshot(reader, facts.synapse_db, stage_params(facts.server_name, facts.mapping))
    except RefusedError as exc:
        found.append((SYNAPSE_TABLES_MISSING, finding(ERROR, str(exc), "Synapse database",
                                                      "Point the advisor at the main database of a Synapse 1.136 "
                                                      "or newer")))
        _synapse_db_missing(facts, "Synapse's database lacks the tables the import reads",
                            snapshot_only=facts.synapse_db is not None)
    except (Syn2masError,) + _PG_ERRORS as exc:
        message = str(exc) if isinstance(exc, Syn2masError) else f"reading Synapse's database failed: {first_line(exc)}"
        found.append((SYNAPSE_DATABASE_UNREACHABLE, finding(ERROR, message, "Synapse database",
                                                            "Fix the database error, then run the advisor again")))
        _synapse_db_missing(facts, "reading Synapse's database failed", snapshot_only=facts.synapse_db is not None)
    finally:
        _close(conn)


def synapse_session_facts(reader: SynapseReader) -> SynapseDbFacts:
    """Who else uses Synapse's database, and its schema (read before any snapshot; the import reads them too)."""
    clients = reader.other_clients()
    version = reader.schema_version()
    with reader.cursor() as cur:
        cur.execute("SELECT to_regclass('applied_schema_deltas') IS NOT NULL")
        deltas = set()
        if cur.fetchone()[0]:
            cur.execute("SELECT file FROM applied_schema_deltas WHERE version = %s", (OLDEST_SCHEMA_VERSION,))
            deltas = {row[0] for row in cur.fetchall()}
    reader.conn.rollback()
    return SynapseDbFacts(clients=clients, schema_version=version, deltas=deltas)


def _read_synapse_snapshot(reader: SynapseReader, db: SynapseDbFacts, params: dict) -> None:
    reader.begin_snapshot(lock=False)
    db.wrong_server_name = reader.users_with_wrong_server_name()
    db.in_use = reader.auth_providers_in_use()
    for stage in STAGES:
        # The import's shape (importer.StageReport): "fixed" is what was repaired -> count.
        entry = db.counts.setdefault(stage.name, {"migrated": 0, "skipped": 0, "skipped_reasons": {}, "fixed": {}})
        for reason, n, first, last, fixed in reader.stage_counts(stage, params):
            if reason is None:
                entry["migrated"] += n
                if fixed:
                    entry["fixed"][stage.fixed_label] = entry["fixed"].get(stage.fixed_label, 0) + fixed
            else:
                entry["skipped"] += n
                entry["skipped_reasons"][reason] = {"count": n, "examples": sorted({e for e in (first, last) if e})}
    with reader.cursor() as cur:
        cur.execute("""
            SELECT
              (SELECT count(*) FROM users WHERE is_guest <> 0 AND appservice_id IS NULL),
              (SELECT count(*) FROM users WHERE is_guest <> 0 AND appservice_id IS NULL AND deactivated = 0),
              (SELECT min(name) FROM users WHERE is_guest <> 0 AND appservice_id IS NULL),
              (SELECT count(*) FROM users u WHERE appservice_id IS NULL AND deactivated = 0 AND is_guest = 0
                 AND NOT EXISTS (SELECT 1 FROM user_threepids t WHERE t.user_id = u.name AND t.medium = 'email'))
        """)
        db.guests, db.active_guests, db.guest_example, db.without_email = cur.fetchone()
        cur.execute("SELECT appservice_id, count(*) FROM users WHERE appservice_id IS NOT NULL "
                    "GROUP BY appservice_id ORDER BY appservice_id")
        db.appservices = cur.fetchall()
    reader.end_snapshot()
    db.snapshot = True


# -- MAS's database ----------------------------------------------------------------------------

def _read_mas_database(facts: Facts, found: list) -> None:
    options = facts.options
    if facts.mas is None and not options.mas_database_uri:
        facts.missing[MAS_DB] = facts.missing[MAS_CONFIG]
        return
    try:
        conninfo = database_conninfo(facts.mas, options.mas_database_uri, "the given MAS database URI")
    except (ConfigError, InvalidUriError) as exc:
        found.append((MAS_DATABASE_CONFIG, finding(
            ERROR, str(exc), facts.mas_where("database"),
            "Fix MAS's database section (uri, or host/port/socket/username/password/database)")))
        facts.missing[MAS_DB] = "MAS's database section is unusable"
        return
    facts.summary["mas_database"] = _describe(conninfo)
    try:
        conn = connect(conninfo, APPLICATION_NAME, "MAS")
    except Syn2masError as exc:
        found.append((MAS_DATABASE_UNREACHABLE, finding(
            ERROR, str(exc), facts.mas_where("database"),
            "Run the advisor where MAS's database is reachable with MAS's credentials, or pass --masDatabaseUri / "
            "mas_database_uri. A `database` section left out means the PG* environment variables and defaults "
            "(matrix-authentication-service#4605)")))
        facts.missing[MAS_DB] = "MAS's database is unreachable"
        return
    try:
        # Every transaction of this session is READ ONLY, so nothing here can write to MAS (the
        # settings themselves are made outside any transaction).
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.execute("SET lock_timeout = %s", (LOCK_TIMEOUT,))
        conn.autocommit = False
        facts.mas_db = _mas_facts(conn, facts.mapping)
        if facts.mas_db.schema is not None:
            schema = facts.mas_db.schema
            facts.summary["mas_schema"] = {"release": schema.release, "latest_migration": schema.latest_migration}
    except _PG_ERRORS as exc:
        facts.mas_db = None
        found.append((MAS_DATABASE_UNREACHABLE, finding(
            ERROR, f"reading MAS's database failed: {first_line(exc)}", "MAS database",
            "If an import is running right now, wait for it; otherwise fix the error")))
        facts.missing[MAS_DB] = "reading MAS's database failed"
    finally:
        _close(conn)


def mas_session_clients(conn) -> list:
    """The other client sessions on MAS's database (a running MAS, another import), as `mas_running`
    judges them: (pid, application_name, address, holds the import lock). The import reads them too."""
    with conn.cursor() as cur:
        cur.execute(f"""
            SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), 'local socket'),
                   EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND {IMPORT_LOCK_HELD})
            FROM pg_stat_activity a WHERE {OTHER_CLIENTS} ORDER BY a.pid""")
        clients = cur.fetchall()
    conn.rollback()
    return clients


def _mas_facts(conn, mapping: dict) -> MasDbFacts:
    db = MasDbFacts(clients=mas_session_clients(conn))
    try:
        db.schema = mas_schema.detect(conn)
    except Syn2masError as exc:
        conn.rollback()
        db.schema_error = str(exc)
    db.marker = read_marker(conn)
    if db.marker is None:
        db.filled = tables_with_data(conn)
    conn.rollback()
    db.rewriters = row_rewriters(conn)
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('upstream_oauth_providers') IS NOT NULL")
        db.providers_table = cur.fetchone()[0]
    conn.rollback()
    if mapping and db.providers_table:
        ids = [link.provider_id for link in mapping.values()]
        db.providers_present = {str(p) for p in existing_providers(conn, ids)}
        conn.rollback()
    return db


def _describe(conninfo: dict) -> str:
    try:
        return describe(conninfo)
    except Syn2masError:
        return "?"


def _close(conn) -> None:
    try:
        conn.rollback()
        conn.close()
    except Exception:  # pragma: no cover - the connection may be gone
        pass
