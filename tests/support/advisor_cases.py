"""The advisor's cases: a clean, well-configured pair of configs over a small real homeserver, and the
changes that make one check fire or stay quiet (the FIRES and QUIET tables of test_advisor_checks.py;
test_refusals_agree.py and test_advisor_interfaces.py start from the same pair)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import uuid

from _syn2mas.advisor import AdvisorOptions, run_advisor
from _syn2mas.config import format_ulid
from _syn2mas.migration.mas_writer import ADVISORY_LOCK_KEY, MARKER_PREFIX
from tests.support import homeservers, mas_schema
from tests.support.mas_stand_in import MasStandIn
from tests.support.pgcluster import new_db_name
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

    def __init__(self, env, shared: bool = False, copy_on_write: bool = False):
        self.env = env
        self.shared = shared  # the databases are shared with other cases: they must not change
        # The databases are shared with other cases, and the first write to one of them makes this case a copy
        # of it (copies of the clean pair, as a fresh pair would be after clean_data): drop_copies drops them.
        self.copy_on_write = copy_on_write
        self._copies: list = []
        self.synapse = copy.deepcopy(CLEAN_SYNAPSE)
        self.mas = copy.deepcopy(CLEAN_MAS)
        self.options: dict = {}
        self._open: list = []
        self._stand_ins: list = []

    # Shortcuts for the cases.
    def _writable(self, side: str):
        """Before a write to `side`'s database ("synapse" or "mas")."""
        if self.copy_on_write:
            self._own(side)
            return
        assert not self.shared, "this case changes a database: mark its change function @fresh"

    def _own(self, side: str) -> None:
        if any(made_for == side for made_for, _name in self._copies):
            return
        name = new_db_name(side)
        self.env.pg.create_database(name, template=getattr(self.env, f"{side}_db"))
        self._copies.append((side, name))
        workdir = os.path.join(self.env.workdir, f"copy-{name}")
        os.makedirs(workdir)
        self.env = dataclasses.replace(self.env, workdir=workdir, insert_providers=False, **{f"{side}_db": name})

    def drop_copies(self) -> None:
        for _side, name in self._copies:
            self.env.pg.drop_database(name)

    def sql_synapse(self, sql, params=None):
        self._writable("synapse")
        return self.env.pg.execute(sql, self.env.synapse_db, params)

    def sql_mas(self, sql, params=None):
        self._writable("mas")
        return self.env.mas(sql, params)

    def data(self):
        self._writable("synapse")
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

    def mas_unreachable(self) -> None:
        """MAS's URL given, but nothing answers there."""
        self.options["mas_url"] = f"http://127.0.0.1:{homeservers.free_port()}/"

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
    """Marks a change that writes to a database: its case gets a copy of each database it writes to."""
    change.fresh = True
    return change


def nothing(c):
    pass


def missing_file(c):
    c.options["synapse_config"] = [c.env.homeserver_yaml + ".missing"]


def no_server_name(c):
    c.synapse["server_name"] = None


def sqlite(c):
    c.synapse["database"] = {"name": "sqlite3", "args": {"database": "/var/lib/synapse/homeserver.db"}}


def sqlite_with_uri(c):
    sqlite(c)
    c.options["synapse_database_uri"] = c.env.pg.uri(c.env.synapse_db)


def consent(c):
    c.synapse["user_consent"] = {"version": "1.0", "template_dir": "/srv/consent"}


def consent_and_tos(c):
    consent(c)
    c.mas["branding"] = {"tos_uri": "https://example.test/tos"}


def delegated(c):
    c.synapse["matrix_authentication_service"] = {"enabled": True, "endpoint": "http://mas:8080/", "secret": "x"}


def delegated_clean(c):
    delegated(c)
    c.synapse.update({"oidc_providers": None, "oidc_config": None,
                      "password_config": {"enabled": False, "pepper": PEPPER}})


def delegated_with_registration(c):
    delegated_clean(c)
    c.synapse["enable_registration"] = True


def synapse_uri(name):
    def change(c):
        c.options["synapse_database_uri"] = c.env.pg.uri(name)
    return change


def synapse_running(real_import):
    def change(c):
        c.hold_connection(c.env.synapse_db, "synapse_main")
        c.options["for_real_import"] = real_import
    return change


def mas_running(real_import):
    def change(c):
        c.hold_connection(c.env.mas_db, "matrix-authentication-service")
        c.options["for_real_import"] = real_import
    return change


def mas_import_running(c):
    # Another syn2mas import holds its lock: an ERROR even for a dry run's advice.
    c.hold_connection(c.env.mas_db, "syn2mas", f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")


@fresh
def schema_version(c):
    c.sql_synapse("UPDATE schema_version SET version = 91")


@fresh
def foreign_user(c):
    with c.data() as s:
        s.user("mallory", server_name="other.example")


@fresh
def foreign_appservice_user(c):
    with c.data() as s:
        s.user("bridge_bot", server_name="other.example", appservice_id="bridge")


@fresh
def orphan_threepid(c):
    with c.data() as s:
        s.threepid("@ghost:example.test", "email", "ghost@example.test")


@fresh
def device_gone(c):
    with c.data() as s:
        s.access_token("@alice:example.test", "GONEDEVICE")


@fresh
def deviceless_token(c):
    with c.data() as s:
        s.access_token("@alice:example.test", None)


@fresh
def appservice(c):
    with c.data() as s:
        bot = s.user("_telegram_bot", appservice_id="telegram", password_hash=None)
        s.login(bot, "BRIDGEDEV")


@fresh
def guest(c):
    with c.data() as s:
        guest = s.user("1234", guest=True, password_hash=None)
        s.login(guest, "GUESTDEV")


@fresh
def msisdn(c):
    with c.data() as s:
        s.threepid("@bob:example.test", "msisdn", "447700900123")


@fresh
def oauth_delegated(c):
    with c.data() as s:
        s.external_id("@bob:example.test", "oauth-delegated", "01HXYZ")


@fresh
def cas_links(c):
    with c.data() as s:
        s.external_id("@bob:example.test", "cas", "bob")


@fresh
def cas_links_mapped(c):
    cas_links(c)
    c.mas_providers(*c.default_providers(), ("cas", CAS_ID, "https://dex.example.test/"))
    c._writable("mas")
    conn = c.env.pg.connect(c.env.mas_db)
    mas_schema.insert_upstream_provider(conn, CAS_ID)
    conn.close()


@fresh
def long_email(c):
    with c.data() as s:
        s.threepid("@bob:example.test", "email", "x" * 2100 + "@example.test")


@fresh
def user_without_email(c):
    with c.data() as s:
        s.user("noemail")


@fresh
def deactivated_with_device(c):
    with c.data() as s:
        gone = s.user("gone", deactivated=True)
        s.threepid(gone, "email", "gone@example.test")
        s.login(gone, "OLDPHONE")


@fresh
def bad_ip(c):
    with c.data() as s:
        s.device("@bob:example.test", "WEIRDIP", ip="not-an-ip")


def missing_mas_file(c):
    c.options["mas_config"] = [c.env.mas_yaml + ".missing"]


@fresh
def no_passwords(c):
    c.sql_synapse("UPDATE users SET password_hash = NULL")


def secret_file(content):
    def change(c):
        path = os.path.join(c.env.workdir, "pepper")
        with open(path, "w") as handle:
            handle.write(content)
        c.scheme(secret=None, secret_file=path)
    return change


def unused_gitlab(c):
    c.synapse["oidc_providers"] = [
        {"idp_id": "google", "idp_name": "Google", "issuer": "https://accounts.google.com/", "client_id": "c"},
        {"idp_id": "gitlab", "idp_name": "GitLab", "issuer": "https://gitlab.example.test/", "client_id": "c"}]


def unused_gitlab_in_mas(c):
    unused_gitlab(c)
    c.mas_providers(*c.default_providers(), (None, uuid.uuid4(), "https://gitlab.example.test/"))


def google_unmapped(c):
    c.mas_providers(*[(None if idp == "oidc-google" else idp, pid, iss) for idp, pid, iss in c.default_providers()])


def google_mapped_explicitly(c):
    google_unmapped(c)
    c.options["upstream_provider_mapping"] = [f"oidc-google:{format_ulid(c.env.providers['oidc-google'])}"]


def mas_uri_and_host(c):
    c.mas["database"] = {"uri": c.env.pg.uri(c.env.mas_db), "host": "db.example.test"}


def mas_uri_and_host_overridden(c):
    mas_uri_and_host(c)
    c.options["mas_database_uri"] = c.env.pg.uri(c.env.mas_db)


def mas_missing_db(c):
    c.mas["database"] = {"host": c.env.pg.sockdir, "port": c.env.pg.port, "username": "postgres",
                         "database": "no_such_mas_db"}


@fresh
def mas_not_migrated(c):
    c.sql_mas("DELETE FROM _sqlx_migrations")


@fresh
def mas_newer_schema(c):
    c.sql_mas("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
              "VALUES (29990101000000, 'from the future', true, '\\x00', 1)")


@fresh
def mas_user(c):
    c.sql_mas("INSERT INTO users (user_id, username, created_at) VALUES (gen_random_uuid(), 'someone', now())")


def _flip_admin_trigger(c):
    c.sql_mas("CREATE FUNCTION flip_admin() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN NEW.can_request_admin := NOT NEW.can_request_admin; RETURN NEW; END $$")
    c.sql_mas("CREATE TRIGGER flip_admin BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION flip_admin()")


@fresh
def mas_trigger(c):
    """A trigger on a table the import writes, changing every user's admin flag on the way in."""
    _flip_admin_trigger(c)


@fresh
def mas_trigger_disabled(c):
    """The same trigger, disabled (as the remedy says), and one on a table the import does not write."""
    _flip_admin_trigger(c)
    c.sql_mas("ALTER TABLE users DISABLE TRIGGER flip_admin")
    c.sql_mas("CREATE TRIGGER flip_job BEFORE INSERT ON _sqlx_migrations FOR EACH ROW EXECUTE FUNCTION flip_admin()")


@fresh
def mas_marker(c):
    payload = {"server_name": c.env.server_name, "imported_at": "2026-01-01T00:00:00+00:00", "migrated": {"users": 3}}
    c.sql_mas("COMMENT ON TABLE users IS %s", (MARKER_PREFIX + json.dumps(payload),))


@fresh
def mas_providers_not_synced(c):
    c.sql_mas("DELETE FROM upstream_oauth_providers")


# MAS's compatibility layer: the listener resource, and the operator's nginx file.
def listeners(*resources):
    return lambda c: c.mas["http"].update(listeners=[
        {"name": "web", "resources": [{"name": r} for r in resources], "binds": [{"host": "localhost", "port": 8080}]},
        {"name": "internal", "resources": [{"name": "health"}], "binds": [{"host": "localhost", "port": 8081}]}])


def nginx_site(with_routes):
    def change(c):
        site = """server {
    listen 443 ssl;
    server_name matrix.example.test;
    location ~ ^(/_matrix|/_synapse/client) { proxy_pass http://localhost:8008; }
}
"""
        if with_routes:
            from _syn2mas.host.reverse_proxy import nginx_add_routes
            site = nginx_add_routes(site, "http://localhost:8080")
        path = os.path.join(c.env.workdir, "matrix.example.test.conf")
        with open(path, "w") as handle:
            handle.write(site)
        c.options["reverse_proxy_config"] = path
    return change
