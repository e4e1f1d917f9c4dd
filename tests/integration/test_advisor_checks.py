"""Every advisor check, made to fire and kept quiet, against real PostgreSQL with the real Synapse schema.

Each case starts from a clean, well-configured pair of configs over a small homeserver (which
produces no ERROR and no WARN), changes one thing, and looks for that one check. The FIRES table
and the QUIET table must cover every check in advisor.CHECKS (see the coverage test at the end).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import uuid

import pytest

from _syn2mas import advisor
from _syn2mas.advisor import ERROR, INFO, WARN, AdvisorOptions, run_advisor
from _syn2mas.config import format_ulid
from _syn2mas.importer import ImportOptions, run_import
from _syn2mas.mas_writer import ADVISORY_LOCK_KEY, MARKER_PREFIX
from tests.support import homeservers, mas_schema, migration_env, synapse_schema
from tests.support.mas_stand_in import MasStandIn
from tests.support.synapse_data import SynapseData

PEPPER = "s3cr3t-pepper"
CLEAN_SYNAPSE = {"password_config": {"pepper": PEPPER}}
CLEAN_MAS = {
    "passwords": {"enabled": True, "schemes": [
        {"version": 1, "algorithm": "bcrypt", "unicode_normalization": True, "secret": PEPPER},
        {"version": 2, "algorithm": "argon2id"}]},
    "http": {"public_base": "https://auth.example.test/", "issuer": "https://auth.example.test/"},
}
CAS_ID = uuid.UUID("018e3f0a-7b2c-7d4e-9f00-0000000000c3")


@contextlib.contextmanager
def synapse_data(env):
    """A SynapseData builder (random tokens: cases add rows to a populated database) whose
    connection is closed afterwards (an open one would look like a running Synapse)."""
    conn = env.pg.connect(env.synapse_db)
    try:
        yield SynapseData(conn, env.server_name)
    finally:
        conn.close()


def clean_data(env) -> None:
    """A small homeserver that nothing is wrong with: every user has an email, every token a device."""
    with synapse_data(env) as s:
        alice = s.user("alice", admin=True)
        s.threepid(alice, "email", "alice@example.test")
        s.login(alice, "PHONE", ip="192.0.2.1")
        s.login(alice, "LAPTOP", with_refresh=True)
        bob = s.user("bob")
        s.threepid(bob, "email", "bob@example.test")
        s.login(bob, "BOBDEV", ip="2001:db8::1")
        sso = s.user("sso", password_hash=None)
        s.threepid(sso, "email", "sso@example.test")
        s.external_id(sso, "oidc-google", "sub-1")


class Case:
    """A clean environment to change one thing in, then advise on."""

    def __init__(self, env, shared: bool = False):
        self.env = env
        self.shared = shared  # the databases are shared with other cases: they must not change
        self.synapse = copy.deepcopy(CLEAN_SYNAPSE)
        self.mas = copy.deepcopy(CLEAN_MAS)
        self.options: dict = {}
        self._open: list = []
        self._stand_ins: list = []

    # Shortcuts for the cases.
    def _writable(self):
        assert not self.shared, "this case changes a database: mark its change function @fresh"

    def sql_synapse(self, sql, params=None):
        self._writable()
        return self.env.pg.execute(sql, self.env.synapse_db, params)

    def sql_mas(self, sql, params=None):
        self._writable()
        return self.env.mas(sql, params)

    def data(self):
        self._writable()
        return synapse_data(self.env)

    def hold_connection(self, dbname: str, name: str, sql: str | None = None):
        conn = self.env.pg.connect(dbname, application_name=name)
        self._open.append(conn)
        if sql:
            conn.cursor().execute(sql)

    def mas_answering(self, issuer: str | None = None) -> MasStandIn:
        """MAS (a stand-in) answering at the URL the advisor is given, as the MAS of `issuer`."""
        mas = MasStandIn(issuer=issuer or CLEAN_MAS["http"]["issuer"]).start()
        self._stand_ins.append(mas)
        self.options["mas_url"] = mas.url
        return mas

    def mas_matrix(self, **changes) -> None:
        self.mas["matrix"] = {"homeserver": self.env.server_name, "secret": "shared-secret",
                              "endpoint": "http://localhost:8008/", **changes}

    def mas_providers(self, *entries) -> None:
        """Replaces MAS's upstream providers: (synapse_idp_id or None, provider uuid, issuer)."""
        self.mas["upstream_oauth2"] = {"providers": [
            {"id": format_ulid(pid), **({"synapse_idp_id": idp} if idp else {}), "issuer": issuer,
             "client_id": "c", "client_secret": "s", "token_endpoint_auth_method": "client_secret_basic"}
            for idp, pid, issuer in entries]}

    def default_providers(self):
        return [(idp, pid, "https://idp.example.test/") for idp, pid in self.env.providers.items()]

    def scheme(self, **changes) -> dict:
        scheme = self.mas["passwords"]["schemes"][0]
        for key, value in changes.items():
            if value is None:
                scheme.pop(key, None)
            else:
                scheme[key] = value
        return scheme

    def run(self) -> dict:
        self.env.write_configs(self.synapse, self.mas)
        options = {"synapse_config": [self.env.homeserver_yaml], "mas_config": [self.env.mas_yaml], **self.options}
        try:
            return run_advisor(AdvisorOptions(**options))
        finally:
            for conn in self._open:
                conn.close()
            for mas in self._stand_ins:
                mas.stop()


def found(result: dict, check: str) -> list:
    return [f for f in result["findings"] if f["check"] == check]


def severities(result: dict) -> dict:
    return {f["check"]: f["severity"] for f in result["findings"]}


# -- the cases ------------------------------------------------------------------------------
# FIRES: (check, expected severity, change). QUIET: (check, change) - a near miss, or the clean pair.

def fresh(change):
    """Marks a change that writes to a database: its case gets databases of its own."""
    change.fresh = True
    return change


def _nothing(c):
    pass


def _missing_file(c):
    c.options["synapse_config"] = [c.env.homeserver_yaml + ".missing"]


def _no_server_name(c):
    c.synapse["server_name"] = None


def _sqlite(c):
    c.synapse["database"] = {"name": "sqlite3", "args": {"database": "/var/lib/synapse/homeserver.db"}}


def _sqlite_with_uri(c):
    _sqlite(c)
    c.options["synapse_database_uri"] = c.env.pg.uri(c.env.synapse_db)


def _consent(c):
    c.synapse["user_consent"] = {"version": "1.0", "template_dir": "/srv/consent"}


def _consent_and_tos(c):
    _consent(c)
    c.mas["branding"] = {"tos_uri": "https://example.test/tos"}


def _delegated(c):
    c.synapse["matrix_authentication_service"] = {"enabled": True, "endpoint": "http://mas:8080/", "secret": "x"}


def _delegated_clean(c):
    _delegated(c)
    c.synapse.update({"oidc_providers": None, "oidc_config": None,
                      "password_config": {"enabled": False, "pepper": PEPPER}})


def _delegated_with_registration(c):
    _delegated_clean(c)
    c.synapse["enable_registration"] = True


def _synapse_uri(name):
    def change(c):
        c.options["synapse_database_uri"] = c.env.pg.uri(name)
    return change


def _synapse_running(real_import):
    def change(c):
        c.hold_connection(c.env.synapse_db, "synapse_main")
        c.options["for_real_import"] = real_import
    return change


def _mas_running(real_import):
    def change(c):
        c.hold_connection(c.env.mas_db, "matrix-authentication-service")
        c.options["for_real_import"] = real_import
    return change


def _mas_import_running(c):
    # Another syn2mas import holds its lock: an ERROR even for a dry run's advice.
    c.hold_connection(c.env.mas_db, "syn2mas", f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")


@fresh
def _schema_version(c):
    c.sql_synapse("UPDATE schema_version SET version = 91")


@fresh
def _foreign_user(c):
    with c.data() as s:
        s.user("mallory", server_name="other.example")


@fresh
def _foreign_appservice_user(c):
    with c.data() as s:
        s.user("bridge_bot", server_name="other.example", appservice_id="bridge")


@fresh
def _orphan_threepid(c):
    with c.data() as s:
        s.threepid("@ghost:example.test", "email", "ghost@example.test")


@fresh
def _device_gone(c):
    with c.data() as s:
        s.access_token("@alice:example.test", "GONEDEVICE")


@fresh
def _deviceless_token(c):
    with c.data() as s:
        s.access_token("@alice:example.test", None)


@fresh
def _appservice(c):
    with c.data() as s:
        bot = s.user("_telegram_bot", appservice_id="telegram", password_hash=None)
        s.login(bot, "BRIDGEDEV")


@fresh
def _guest(c):
    with c.data() as s:
        guest = s.user("1234", guest=True, password_hash=None)
        s.login(guest, "GUESTDEV")


@fresh
def _msisdn(c):
    with c.data() as s:
        s.threepid("@bob:example.test", "msisdn", "447700900123")


@fresh
def _oauth_delegated(c):
    with c.data() as s:
        s.external_id("@bob:example.test", "oauth-delegated", "01HXYZ")


@fresh
def _cas_links(c):
    with c.data() as s:
        s.external_id("@bob:example.test", "cas", "bob")


@fresh
def _cas_links_mapped(c):
    _cas_links(c)
    c.mas_providers(*c.default_providers(), ("cas", CAS_ID, "https://dex.example.test/"))
    c._writable()
    conn = c.env.pg.connect(c.env.mas_db)
    mas_schema.insert_upstream_provider(conn, CAS_ID)
    conn.close()


@fresh
def _long_email(c):
    with c.data() as s:
        s.threepid("@bob:example.test", "email", "x" * 2100 + "@example.test")


@fresh
def _user_without_email(c):
    with c.data() as s:
        s.user("noemail")


@fresh
def _deactivated_with_device(c):
    with c.data() as s:
        gone = s.user("gone", deactivated=True)
        s.threepid(gone, "email", "gone@example.test")
        s.login(gone, "OLDPHONE")


@fresh
def _bad_ip(c):
    with c.data() as s:
        s.device("@bob:example.test", "WEIRDIP", ip="not-an-ip")


def _missing_mas_file(c):
    c.options["mas_config"] = [c.env.mas_yaml + ".missing"]


@fresh
def _no_passwords(c):
    c.sql_synapse("UPDATE users SET password_hash = NULL")


def _secret_file(content):
    def change(c):
        path = os.path.join(c.env.workdir, "pepper")
        with open(path, "w") as handle:
            handle.write(content)
        c.scheme(secret=None, secret_file=path)
    return change


def _unused_gitlab(c):
    c.synapse["oidc_providers"] = [
        {"idp_id": "google", "idp_name": "Google", "issuer": "https://accounts.google.com/", "client_id": "c"},
        {"idp_id": "gitlab", "idp_name": "GitLab", "issuer": "https://gitlab.example.test/", "client_id": "c"}]


def _unused_gitlab_in_mas(c):
    _unused_gitlab(c)
    c.mas_providers(*c.default_providers(), (None, uuid.uuid4(), "https://gitlab.example.test/"))


def _google_unmapped(c):
    c.mas_providers(*[(None if idp == "oidc-google" else idp, pid, iss) for idp, pid, iss in c.default_providers()])


def _google_mapped_explicitly(c):
    _google_unmapped(c)
    c.options["upstream_provider_mapping"] = [f"oidc-google:{format_ulid(c.env.providers['oidc-google'])}"]


def _mas_uri_and_host(c):
    c.mas["database"] = {"uri": c.env.pg.uri(c.env.mas_db), "host": "db.example.test"}


def _mas_uri_and_host_overridden(c):
    _mas_uri_and_host(c)
    c.options["mas_database_uri"] = c.env.pg.uri(c.env.mas_db)


def _mas_missing_db(c):
    c.mas["database"] = {"host": c.env.pg.sockdir, "port": c.env.pg.port, "username": "postgres",
                         "database": "no_such_mas_db"}


@fresh
def _mas_not_migrated(c):
    c.sql_mas("DELETE FROM _sqlx_migrations")


@fresh
def _mas_newer_schema(c):
    c.sql_mas("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
              "VALUES (29990101000000, 'from the future', true, '\\x00', 1)")


@fresh
def _mas_user(c):
    c.sql_mas("INSERT INTO users (user_id, username, created_at) VALUES (gen_random_uuid(), 'someone', now())")


@fresh
def _mas_marker(c):
    payload = {"server_name": c.env.server_name, "imported_at": "2026-01-01T00:00:00+00:00", "migrated": {"users": 3}}
    c.sql_mas("COMMENT ON TABLE users IS %s", (MARKER_PREFIX + json.dumps(payload),))


@fresh
def _mas_providers_not_synced(c):
    c.sql_mas("DELETE FROM upstream_oauth_providers")


# MAS's compatibility layer: the listener resource, and the operator's nginx file.
def _listeners(*resources):
    return lambda c: c.mas["http"].update(listeners=[
        {"name": "web", "resources": [{"name": r} for r in resources], "binds": [{"host": "localhost", "port": 8080}]},
        {"name": "internal", "resources": [{"name": "health"}], "binds": [{"host": "localhost", "port": 8081}]}])


def _nginx_site(with_routes):
    def change(c):
        site = """server {
    listen 443 ssl;
    server_name matrix.example.test;
    location ~ ^(/_matrix|/_synapse/client) { proxy_pass http://localhost:8008; }
}
"""
        if with_routes:
            from _syn2mas.reverse_proxy import nginx_add_routes
            site = nginx_add_routes(site, "http://localhost:8080")
        path = os.path.join(c.env.workdir, "matrix.example.test.conf")
        with open(path, "w") as handle:
            handle.write(site)
        c.options["reverse_proxy_config"] = path
    return change


FIRES = [
    ("synapse_config_invalid", ERROR, _missing_file),
    ("synapse_config_invalid", ERROR, _no_server_name),
    ("synapse_database_config", ERROR, _sqlite),
    ("synapse_database_config", ERROR, lambda c: c.synapse.update(database={
        "name": "psycopg2", "args": {"database": c.env.synapse_db, "dbname": c.env.synapse_db}})),
    ("synapse_database_config", ERROR, lambda c: c.synapse.update(database=None, databases={
        "state": {"name": "psycopg2", "data_stores": ["state"], "args": {"dbname": "x"}}})),
    ("registration_enabled", WARN, lambda c: c.synapse.update(enable_registration=True)),
    ("registration_captcha", WARN, lambda c: c.synapse.update(enable_registration_captcha=True)),
    ("user_consent", WARN, _consent),
    ("mas_tos_uri_missing", WARN, _consent),
    ("cas_enabled", WARN, lambda c: c.synapse.update(cas_config={"server_url": "https://cas.example.test/"})),
    ("saml2_enabled", WARN, lambda c: c.synapse.update(saml2_config={"sp_config": {"metadata": {}}})),
    ("jwt_enabled", WARN, lambda c: c.synapse.update(jwt_config={"enabled": True, "secret": "x", "algorithm": "HS256"})),
    ("password_localdb_disabled", WARN,
     lambda c: c.synapse.update(password_config={"pepper": PEPPER, "localdb_enabled": False})),
    ("password_providers", WARN, lambda c: c.synapse.update(
        password_providers=[{"module": "ldap_auth_provider.LdapAuthProvider", "config": {}}])),
    ("threepid_changes_enabled", ERROR, lambda c: c.synapse.update(enable_3pid_changes=True)),
    ("login_via_existing_session", ERROR, lambda c: c.synapse.update(login_via_existing_session={"enabled": True})),
    ("guest_access_enabled", ERROR, lambda c: c.synapse.update(allow_guest_access=True)),
    ("token_lifetimes_set", WARN, lambda c: c.synapse.update(refresh_token_lifetime="24h")),
    ("msc3861_present", ERROR, lambda c: c.synapse.update(
        experimental_features={"msc3861": {"enabled": True, "issuer": "https://auth.example.test/"}})),
    ("pepper_empty", INFO, lambda c: (c.synapse.update(password_config={"pepper": ""}), c.scheme(secret=None))),
    ("synapse_auth_delegated", INFO, _delegated_clean),
    ("synapse_mas_conflicts", ERROR, _delegated_with_registration),
    ("synapse_database_unreachable", ERROR, _synapse_uri("no_such_synapse_db")),
    ("synapse_tables_missing", ERROR, _synapse_uri("postgres")),
    ("synapse_running", INFO, _synapse_running(False)),
    ("synapse_running", ERROR, _synapse_running(True)),
    ("synapse_schema_too_old", ERROR, _schema_version),
    ("wrong_server_name_users", ERROR, _foreign_user),
    ("orphan_rows", WARN, _orphan_threepid),
    ("tokens_device_gone", WARN, _device_gone),
    ("appservice_users", WARN, _appservice),
    ("guest_users", WARN, _guest),
    ("non_email_threepids", WARN, _msisdn),
    ("oauth_delegated_links", ERROR, _oauth_delegated),
    ("sso_links_unknown_provider", ERROR, _cas_links),
    ("values_too_long", WARN, _long_email),
    ("users_without_email", INFO, _user_without_email),
    ("skipped_rows", INFO, _deactivated_with_device),
    ("invalid_ip_addresses", INFO, _bad_ip),
    ("migration_counts", INFO, _nothing),
    ("mas_config_invalid", ERROR, _missing_mas_file),
    ("provider_mapping_invalid", ERROR, lambda c: c.options.update(upstream_provider_mapping=["oidc-google"])),
    ("mas_homeserver_mismatch", ERROR, lambda c: c.mas_matrix(homeserver="matrix.example.test")),
    ("mas_public_base", ERROR, lambda c: c.mas.update(http={"listeners": []})),
    ("mas_public_base", WARN, lambda c: c.mas.update(http={"public_base": "http://[::]:8080/"})),
    ("mas_passwords_disabled", ERROR, lambda c: c.mas.update(passwords={"enabled": False})),
    ("mas_password_scheme_missing", ERROR,
     lambda c: c.mas.update(passwords={"schemes": [{"version": 2, "algorithm": "argon2id"}]})),
    ("mas_password_scheme_missing", ERROR, lambda c: c.mas.update(passwords=None)),
    ("mas_password_scheme_not_bcrypt", ERROR, lambda c: c.scheme(algorithm="argon2id")),
    ("mas_password_unicode_normalization", ERROR, lambda c: c.scheme(unicode_normalization=None)),
    ("mas_password_pepper_mismatch", ERROR, lambda c: c.scheme(secret="not-the-pepper")),
    ("mas_password_pepper_mismatch", ERROR, lambda c: c.scheme(secret=None)),
    ("mas_password_secret_file_newline", ERROR, _secret_file(PEPPER + "\n")),
    ("oidc_provider_not_in_mas", WARN, _unused_gitlab),
    ("sso_provider_unmapped", ERROR, _google_unmapped),
    ("mas_compat_resource", ERROR, _listeners("discovery", "human", "oauth", "graphql", "assets")),
    ("compat_routes_reach_mas", WARN, _nginx_site(with_routes=False)),
    ("mas_database_config", ERROR, _mas_uri_and_host),
    ("mas_database_unreachable", ERROR, _mas_missing_db),
    ("mas_running", INFO, _mas_running(False)),
    ("mas_running", ERROR, _mas_running(True)),
    ("mas_running", ERROR, _mas_import_running),
    ("mas_schema", ERROR, _mas_not_migrated),
    ("mas_schema", WARN, _mas_newer_schema),
    ("mas_not_empty", ERROR, _mas_user),
    ("mas_already_imported", WARN, _mas_marker),
    ("sso_provider_not_in_mas_database", ERROR, _mas_providers_not_synced),
    ("mas_answers", ERROR, lambda c: c.options.update(mas_url=f"http://127.0.0.1:{homeservers.free_port()}/")),
    ("mas_answers", ERROR, lambda c: c.mas_answering(issuer="https://other-mas.example.test/")),
]

QUIET = [
    ("synapse_config_invalid", _nothing),
    ("synapse_database_config", _sqlite_with_uri),
    ("registration_enabled", lambda c: c.synapse.update(enable_registration="false")),
    ("registration_captcha", lambda c: c.synapse.update(enable_registration_captcha=False)),
    ("user_consent", lambda c: c.synapse.update(user_consent=None)),
    ("mas_tos_uri_missing", _consent_and_tos),
    ("cas_enabled", lambda c: c.synapse.update(cas_config={"enabled": False, "server_url": "https://cas.example.test/"})),
    ("cas_enabled", lambda c: c.synapse.update(cas_config=None)),
    ("saml2_enabled", lambda c: c.synapse.update(saml2_config={"enabled": False, "sp_config": {"metadata": {}}})),
    ("jwt_enabled", lambda c: c.synapse.update(jwt_config={"secret": "x", "algorithm": "HS256"})),
    ("password_localdb_disabled", lambda c: c.synapse.update(password_config={"pepper": PEPPER, "localdb_enabled": True})),
    ("password_providers", lambda c: c.synapse.update(
        modules=[{"module": "synapse_auto_accept_invite.InviteAutoAccepter", "config": {}}], password_providers=None)),
    ("threepid_changes_enabled", lambda c: c.synapse.update(enable_3pid_changes=False)),
    ("login_via_existing_session", lambda c: c.synapse.update(login_via_existing_session={"enabled": False})),
    ("guest_access_enabled", lambda c: c.synapse.update(allow_guest_access=False)),
    ("token_lifetimes_set", lambda c: c.synapse.update(refresh_token_lifetime=None)),
    ("msc3861_present", lambda c: c.synapse.update(experimental_features={"msc3861": {}, "msc4108_enabled": True})),
    ("pepper_empty", _nothing),
    ("synapse_auth_delegated", lambda c: c.synapse.update(matrix_authentication_service={"enabled": False})),
    ("synapse_mas_conflicts", _delegated_clean),
    ("synapse_database_unreachable", _nothing),
    ("synapse_tables_missing", _nothing),
    ("synapse_running", _nothing),
    ("synapse_schema_too_old", _nothing),
    ("wrong_server_name_users", _foreign_appservice_user),
    ("orphan_rows", _nothing),
    ("tokens_device_gone", _deviceless_token),
    ("appservice_users", _nothing),
    ("guest_users", _nothing),
    ("non_email_threepids", _nothing),
    ("oauth_delegated_links", _nothing),
    ("sso_links_unknown_provider", _cas_links_mapped),
    ("values_too_long", _nothing),
    ("users_without_email", _nothing),
    ("skipped_rows", _nothing),
    ("invalid_ip_addresses", _nothing),
    ("migration_counts", _synapse_uri("no_such_synapse_db")),
    ("mas_config_invalid", _nothing),
    ("provider_mapping_invalid", _google_mapped_explicitly),
    ("mas_homeserver_mismatch", _nothing),
    ("mas_public_base", _nothing),
    ("mas_passwords_disabled", fresh(lambda c: (_no_passwords(c), c.mas.update(passwords={"enabled": False})))),
    ("mas_password_scheme_missing", fresh(lambda c: (_no_passwords(c), c.mas.update(passwords=None)))),
    ("mas_password_scheme_not_bcrypt", _nothing),
    ("mas_password_unicode_normalization", _nothing),
    ("mas_password_pepper_mismatch", _secret_file(PEPPER)),
    ("mas_password_pepper_mismatch", lambda c: (c.synapse.update(password_config={"pepper": ""}),
                                                c.scheme(secret=None))),
    ("mas_password_secret_file_newline", _secret_file(PEPPER)),
    ("oidc_provider_not_in_mas", _unused_gitlab_in_mas),
    ("sso_provider_unmapped", _google_mapped_explicitly),
    ("mas_compat_resource", _listeners("discovery", "human", "oauth", "compat", "graphql", "assets")),
    ("compat_routes_reach_mas", _nginx_site(with_routes=True)),
    ("mas_database_config", _mas_uri_and_host_overridden),
    ("mas_database_unreachable", _nothing),
    ("mas_running", _nothing),
    ("mas_schema", _nothing),
    ("mas_not_empty", _nothing),
    ("mas_already_imported", _nothing),
    ("sso_provider_not_in_mas_database", _nothing),
    ("mas_answers", lambda c: c.mas_answering()),
    ("mas_answers", _nothing),  # no MAS URL given: not asked (reported as not run)
]


def _id(case) -> str:
    return f"{case[0]}-{case[1]}" if len(case) == 3 else case[0]


@pytest.fixture
def case(env):
    clean_data(env)
    return Case(env)


@pytest.fixture(scope="module")
def shared_env(pg, tmp_path_factory):
    """One clean environment for the cases that only change config files (creating the real
    Synapse schema's database takes a second or two)."""
    tag = uuid.uuid4().hex[:8]
    synapse_db, mas_db = f"synapse_advisor_{tag}", f"mas_advisor_{tag}"
    pg.create_database(synapse_db, template=synapse_schema.create_template(pg, synapse_schema.LATEST))
    pg.create_database(mas_db, template=mas_schema.create_template(pg, "own-1.22"))
    env = migration_env.MigrationEnv(pg, synapse_db, mas_db, str(tmp_path_factory.mktemp("advisor")))
    clean_data(env)
    yield env
    pg.drop_database(synapse_db)
    pg.drop_database(mas_db)


def case_for(change, request) -> Case:
    if getattr(change, "fresh", False):
        env = request.getfixturevalue("env")
        clean_data(env)
        return Case(env)
    return Case(request.getfixturevalue("shared_env"), shared=True)


@pytest.mark.parametrize("check, severity, change", FIRES, ids=[
    f"{c}-{s}-{i}" for i, (c, s, _change) in enumerate(FIRES)])
def test_check_fires(request, check, severity, change):
    case = case_for(change, request)
    change(case)
    result = case.run()
    hits = found(result, check)
    assert hits, f"{check} did not fire: {json.dumps(result['findings'], indent=1)}"
    assert severity in {h["severity"] for h in hits}, hits
    for hit in hits:
        assert hit["message"] and hit["where"] and hit["remedy"], hit
    # A finding is counted where it belongs, and the exit code follows.
    assert result["summary"]["errors"] == sum(1 for f in result["findings"] if f["severity"] == ERROR)
    if severity == ERROR:
        assert advisor.exit_code(result) == 10


def test_a_mas_that_does_not_answer_is_named_with_the_url_tried(request):
    case = case_for(_nothing, request)
    url = f"http://127.0.0.1:{homeservers.free_port()}"
    case.options["mas_url"] = url + "/"
    result = case.run()
    hits = found(result, "mas_answers")
    assert [h["severity"] for h in hits] == [ERROR]
    assert hits[0]["message"].startswith(f"MAS does not answer at {url}/health ("), hits
    assert hits[0]["where"] == f"{url}/health"
    assert "Synapse is not stopped while MAS does not answer" in hits[0]["remedy"]
    # Another MAS answers there: the issuer it names is not the one this MAS config declares.
    with MasStandIn(issuer="https://other-mas.example.test/", port=int(url.rsplit(":", 1)[1])):
        hits = found(case.run(), "mas_answers")
    assert [h["where"] for h in hits] == [f"{url}/.well-known/openid-configuration"]
    assert "'https://other-mas.example.test/'" in hits[0]["message"] and url in hits[0]["message"]


def test_mas_running_says_that_an_import_is_running_and_to_wait_for_it(request):
    case = case_for(_mas_import_running, request)
    _mas_import_running(case)
    hits = found(case.run(), "mas_running")
    assert [h["severity"] for h in hits] == [ERROR]
    assert hits[0]["message"].endswith("(one of them is a syn2mas import running right now)"), hits
    assert hits[0]["remedy"] == "Wait for the running import to finish, then run the advisor again"


@pytest.mark.parametrize("check, change", QUIET, ids=[f"{c}-{i}" for i, (c, _change) in enumerate(QUIET)])
def test_check_stays_quiet(request, check, change):
    case = case_for(change, request)
    change(case)
    result = case.run()
    assert not found(result, check), json.dumps(found(result, check), indent=1)


def test_every_check_has_a_firing_and_a_quiet_test():
    assert {c for c, _severity, _change in FIRES} == set(advisor.CHECKS)
    assert {c for c, _change in QUIET} == set(advisor.CHECKS)


# -- the clean pair, across the supported Synapse and MAS schemas ----------------------------

@pytest.mark.parametrize("synapse_version", synapse_schema.VERSIONS)
@pytest.mark.parametrize("mas_variant", list(mas_schema.VARIANTS))
def test_a_clean_well_configured_pair_has_no_error_and_no_warning(make_env, synapse_version, mas_variant):
    env = make_env(synapse_version=synapse_version, mas_variant=mas_variant)
    clean_data(env)
    case = Case(env)
    case.mas_answering()  # MAS, answering as the MAS of this config: every check runs
    result = case.run()
    assert [f for f in result["findings"] if f["severity"] != INFO] == []
    assert advisor.exit_code(result) == 0
    summary = result["summary"]
    assert summary["not_run"] == []
    assert (summary["users"], summary["passwords"], summary["devices"], summary["access_tokens"],
            summary["refresh_tokens"]) == (3, 2, 3, 3, 1)
    assert summary["mas_schema"]["release"] in ("1.0.0", "1.22.0")
    assert {f["check"] for f in result["findings"]} == {"migration_counts"}


# -- details that the tables above do not show -------------------------------------------------

@pytest.mark.parametrize("synapse_version", synapse_schema.VERSIONS)
def test_schema_92_without_a_delta_of_synapse_1_136_is_too_old(make_env, synapse_version):
    env = make_env(synapse_version=synapse_version)
    clean_data(env)
    env.pg.execute("DELETE FROM applied_schema_deltas WHERE file = '92/09_thread_subscriptions_update.sql'",
                   env.synapse_db)
    result = Case(env).run()
    hits = found(result, "synapse_schema_too_old")
    if synapse_version == synapse_schema.OLDEST:  # schema version 92: the deltas decide
        assert hits and "92/09_thread_subscriptions_update.sql" in hits[0]["message"]
    else:  # schema version 94: newer than 1.136 whatever its deltas
        assert not hits


def test_empty_sections_are_absent_and_never_crash(case):
    for key in ("cas_config", "saml2_config", "jwt_config", "password_config", "login_via_existing_session",
                "user_consent", "experimental_features", "matrix_authentication_service", "oidc_providers",
                "oidc_config", "password_providers", "modules", "ldap_config"):
        case.synapse[key] = None
    case.scheme(secret=None)  # no pepper once password_config is empty
    case.mas.update(captcha=None, branding=None, upstream_oauth2=None)
    case.options["upstream_provider_mapping"] = [
        f"{idp}:{format_ulid(pid)}" for idp, pid in case.env.providers.items()]
    result = case.run()
    assert [f for f in result["findings"] if f["severity"] != INFO] == []


def test_a_section_of_the_wrong_type_is_an_error_naming_the_key(case):
    case.synapse["cas_config"] = "yes"
    hit = found(case.run(), "synapse_config_invalid")
    assert hit and hit[0]["where"].endswith("homeserver.yaml: cas_config")


def test_messages_carry_the_numbers_and_a_few_examples(case):
    with case.data() as s:
        for name in ("ghost1", "ghost2", "ghost3"):
            s.threepid(f"@{name}:example.test", "email", f"{name}@example.test")
        s.user("mallory", server_name="other.example")
        s.user("trudy", server_name="evil.example")
    result = case.run()
    orphan = found(result, "orphan_rows")[0]
    assert "3 rows of user_threepids" in orphan["message"]
    assert "@ghost1:example.test" in orphan["message"] and "@ghost3:example.test" in orphan["message"]
    assert orphan["where"] == "Synapse database, table user_threepids"
    wrong = found(result, "wrong_server_name_users")[0]
    assert "2 users" in wrong["message"] and "@mallory:other.example" in wrong["message"]


def test_sso_links_of_saml_and_of_a_removed_oidc_provider_say_the_way_out(case):
    with case.data() as s:
        s.external_id("@alice:example.test", "saml", "alice")
        s.external_id("@bob:example.test", "oidc-oldcorp", "bob-sub")
    hits = {h["message"].split("'")[1]: h for h in found(case.run(), "sso_links_unknown_provider")}
    assert set(hits) == {"saml", "oidc-oldcorp"}
    assert "SAML" in hits["saml"]["message"]
    assert "no longer in Synapse's config" in hits["oidc-oldcorp"]["message"]
    for hit in hits.values():
        assert "synapse_idp_id" in hit["remedy"] and "skipUnmappedProviders" in hit["remedy"]


def test_without_a_mas_config_the_mas_side_is_reported_as_not_run(case):
    case.options["mas_config"] = []
    result = case.run()
    not_run = {item["check"]: item["reason"] for item in result["summary"]["not_run"]}
    for check, (group, _description) in advisor.CHECKS.items():
        mas_side = group in (advisor.MAS_CONFIG, advisor.MAS_DB)
        if mas_side and check not in ("mas_config_invalid", "provider_mapping_invalid"):
            assert "no MAS config given" in not_run.get(check, ""), check
    assert [f for f in result["findings"] if f["severity"] != INFO] == []
    assert "checks not run (no MAS config given" in advisor.format_human(result)


def test_a_mas_database_uri_alone_runs_the_mas_database_checks(case):
    case.options.update(mas_config=[], mas_database_uri=case.env.pg.uri(case.env.mas_db))
    case.sql_mas("INSERT INTO users (user_id, username, created_at) VALUES (gen_random_uuid(), 'x', now())")
    result = case.run()
    assert found(result, "mas_not_empty")
    assert "mas_homeserver_mismatch" in {i["check"] for i in result["summary"]["not_run"]}


def test_the_counts_are_exactly_those_of_the_import(case):
    _deactivated_with_device(case)
    _orphan_threepid(case)
    _device_gone(case)
    _appservice(case)
    _guest(case)
    _msisdn(case)
    _bad_ip(case)
    with case.data() as s:
        s.cross_signing_devices("@alice:example.test")
    result = case.run()
    imported = run_import(ImportOptions(synapse_config=[case.env.homeserver_yaml], mas_config=[case.env.mas_yaml],
                                        dry_run=True))
    assert set(imported["counts"]) == set(result["summary"]["counts"])
    for stage, counts in imported["counts"].items():
        mine = result["summary"]["counts"][stage]
        assert mine["migrated"] == counts["migrated"], stage
        assert mine["fixed"] == counts["fixed"], stage  # one shape: what was repaired -> count
        if stage != "deviceless_sessions":  # the import reports its skips under access_tokens
            assert {r: v["count"] for r, v in mine["skipped_reasons"].items()} == \
                   {r: v["count"] for r, v in counts["skipped_reasons"].items()}, stage
    # the orphan's email, and the deactivated user's (left behind like its phone numbers)
    assert imported["counts"]["emails"]["skipped"] == 2 and imported["counts"]["access_tokens"]["skipped"] >= 3


def test_the_advisor_writes_nothing_to_either_database(case):
    """Byte-for-byte identical dumps of both databases after runs that go through every path."""
    for change in (_orphan_threepid, _device_gone, _appservice, _guest, _msisdn, _cas_links, _bad_ip,
                   _deactivated_with_device, _mas_marker):
        change(case)
    case.synapse.update(enable_registration=True, allow_guest_access=True)
    env = case.env
    before = env.synapse_dump(), env.mas_dump()
    result = case.run()
    assert result["summary"]["errors"] and result["summary"]["warnings"]
    case.options["for_real_import"] = True
    case.hold_connection(env.synapse_db, "synapse_main")
    case.run()
    assert (env.synapse_dump(), env.mas_dump()) == before
