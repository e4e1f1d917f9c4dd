"""Bad inputs to `syn2mas --command migrate`, each with its exact message (issue 9).

One table: what is wrong (a config file, a key, a URI, a provider mapping, a flag) -> the exact line
the command ends with on stderr, and its exit code. Neither database may change. `{hs}`, `{mas}`,
`{dir}` stand for the test's homeserver.yaml, MAS config.yaml and their directory.
"""

from __future__ import annotations

import io
import os

import pytest

from _syn2mas import cli

SECRET = "Bad-Input-Secret-55"
HS_DB = {"name": "psycopg2", "args": {"user": "postgres", "dbname": "x"}}


def write(path, text):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def synapse(**extra):
    return lambda env: env.write_configs(synapse_extra=extra)


def mas(**extra):
    return lambda env: env.write_configs(mas_extra=extra)


def mas_database(**fields):
    """MAS's `database` section with the test's socket, port and database, then `fields` over them."""
    def setup(env):
        db = {"host": env.pg.sockdir, "port": env.pg.port, "username": "postgres", "database": env.mas_db}
        db.update(fields)
        env.write_configs(mas_extra={"database": {k: v for k, v in db.items() if v is not None}})
    return setup


def hs_text(text):
    return lambda env: write(env.homeserver_yaml, text)


def mas_text(text):
    return lambda env: write(env.mas_yaml, text)


def drop_key(which, key):
    import yaml

    def setup(env):
        path = env.homeserver_yaml if which == "synapse" else env.mas_yaml
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        data.pop(key)
        write(path, yaml.safe_dump(data))
    return setup


def fifo(name):
    def setup(env):
        path = os.path.join(os.path.dirname(env.mas_yaml), name)
        os.mkfifo(path)
    return setup


def nothing(_env):
    pass


def saml_link(env):
    with env.populate() as s:
        s.external_id(s.user("bob", password_hash=None), "saml", "bob-saml")


# (id, setup(env), command line after the program name, expected last stderr line, exit code)
CASES = [
    # -- the command line --------------------------------------------------------------------
    ("no-command", nothing, ["RAW", "--synapseConfigFile", "{hs}"],
     "--command advisor|migrate|verify is required", 2),
    ("unknown-command", nothing, ["--command", "import"],
     "argument --command: invalid choice: 'import' (choose from 'advisor', 'migrate', 'verify')", 2),
    ("unknown-flag", nothing, ["--command", "migrate", "--colour", "blue"], "unrecognized arguments: --colour", 2),
    ("bad-output", nothing, ["--command", "migrate", "--output", "xml"],
     "argument --output: invalid choice: 'xml' (choose from 'text', 'json')", 2),
    ("bad-dry-run-value", nothing, ["--command", "migrate", "--dryRun", "maybe"],
     "argument --dryRun: expected true or false, got 'maybe'", 2),
    ("bad-skip-value", nothing, ["--command", "migrate", "--skipUnmappedProviders", "2"],
     "argument --skipUnmappedProviders: expected true or false, got '2'", 2),
    ("no-synapse-config", nothing, ["--command", "migrate", "--masConfigFile", "{mas}"],
     "--synapseConfigFile is required", 2),
    ("no-mas-config", nothing, ["--command", "migrate", "--synapseConfigFile", "{hs}"],
     "--masConfigFile is required for migrate", 2),
    ("mapping-without-colon", nothing, ["--upstreamProviderMapping", "oidc-google"],
     "upstream provider mapping 'oidc-google': expected SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID, "
     "e.g. oidc-google:01H8PKNWKKRPCBW4YGH1RWV279", 1),
    ("mapping-bad-id", nothing, ["--upstreamProviderMapping", "oidc-google:not-an-id"],
     "upstream provider mapping 'oidc-google:not-an-id': 'not-an-id' is not a ULID or a UUID", 1),
    ("mapping-to-missing-provider", saml_link, ["--upstreamProviderMapping", "saml:01H8PKNWKKRPCBW4YGH1RWV279"],
     "sso_provider_not_in_mas_database: MAS's database has no upstream provider row for saml -> "
     "018a2d3a-f273-c598-be13-d08871cd88e9: the import refuses to run [MAS database, table upstream_oauth_providers "
     "(upstream provider mapping 'saml:01H8PKNWKKRPCBW4YGH1RWV279')] -> Run `mas-cli config sync` (or start MAS "
     "once) with the config that defines these providers", 1),
    ("mas-uri-flag-malformed", nothing, ["--masDatabaseUri", f"postgresql://u:{SECRET}@[::1"],
     'the given MAS database URI: invalid database URI: end of string reached when looking for matching "]" in '
     'IPv6 host address', 1),
    ("mas-uri-flag-not-a-uri", nothing, ["--masDatabaseUri", "this is not a uri"],
     'the given MAS database URI: invalid database URI: missing "=" after "this" in connection info string', 1),
    ("mas-uri-flag-bad-port", nothing, ["--masDatabaseUri", "postgresql://localhost:notaport/mas"],
     'cannot connect to the MAS database (host=localhost port=notaport dbname=mas): invalid integer value '
     '"notaport" for connection option "port"', 1),
    ("mas-uri-flag-bad-parameter", nothing, ["--masDatabaseUri", "postgresql:///mas?colour=blue"],
     'the given MAS database URI: invalid database URI: invalid URI query parameter: "colour"', 1),
    ("synapse-uri-flag-malformed", nothing, ["--synapseDatabaseUri", f"postgresql://u:{SECRET}@[::1"],
     'the given Synapse database URI: invalid database URI: end of string reached when looking for matching "]" '
     'in IPv6 host address', 1),
    ("synapse-uri-flag-no-such-database", nothing,
     ["--synapseDatabaseUri", "postgresql:///no_such_db?host={sock}&port={port}&user=postgres"],
     'cannot connect to the Synapse database (host={sock} port={port} dbname=no_such_db user=postgres): '
     'connection to server on socket "{sock}/.s.PGSQL.{port}" failed: FATAL:  database "no_such_db" does not exist',
     1),
    ("synapse-uri-flag-is-mas", nothing,
     ["--synapseDatabaseUri", "postgresql:///{masdb}?host={sock}&port={port}&user=postgres"],
     "Synapse's and MAS's database are the same database (host={sock} port={port} dbname={masdb} user=postgres): "
     "the import reads one and fills the other; check which URI or config points at the wrong one", 1),
    ("mas-uri-flag-is-synapse", nothing,
     ["--masDatabaseUri", "postgresql:///{synapsedb}?host={sock}&port={port}&user=postgres"],
     "the MAS database has no _sqlx_migrations table: it is empty or not a MAS database. Run `mas-cli database "
     "migrate` (or start MAS once) so it creates its schema", 1),
    # -- Synapse's config files ----------------------------------------------------------------
    ("hs-missing-file", lambda env: os.remove(env.homeserver_yaml), [], "{hs}: file not found", 1),
    ("second-synapse-config-missing", nothing, ["--synapseConfigFile", "{hs}", "--synapseConfigFile",
                                                "{dir}/extra.yaml"], "{dir}/extra.yaml: file not found", 1),
    ("hs-directory-without-yaml", lambda env: os.mkdir(os.path.join(os.path.dirname(env.mas_yaml), "conf.d")),
     ["--synapseConfigFile", "{dir}/conf.d"], "{dir}/conf.d: no Synapse configuration file found there", 1),
    ("hs-fifo", fifo("pipe.yaml"), ["--synapseConfigFile", "{dir}/pipe.yaml"],
     "{dir}/pipe.yaml: is a named pipe (FIFO), not a regular file; give the path of the file itself", 1),
    ("hs-bad-yaml", hs_text("server_name: [example.test\n"), [],
     "{hs}: invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'", 1),
    ("hs-bad-yaml-tab", hs_text("server_name: example.test\n\tdatabase: {}\n"), [],
     "{hs}: invalid YAML at line 2, column 1: found character '\\t' that cannot start any token", 1),
    ("hs-top-level-list", hs_text("- server_name\n"), [],
     "{hs}: expected a mapping of settings at the top level, found list", 1),
    ("hs-empty", hs_text(""), [],
     "{hs}: server_name is missing or empty (it is the homeserver's domain, e.g. `server_name: example.com`)", 1),
    ("hs-no-server-name", drop_key("synapse", "server_name"), [],
     "{hs}: server_name is missing or empty (it is the homeserver's domain, e.g. `server_name: example.com`)", 1),
    ("hs-empty-server-name", synapse(server_name=""), [],
     "{hs}: server_name is missing or empty (it is the homeserver's domain, e.g. `server_name: example.com`)", 1),
    ("hs-server-name-not-a-string", synapse(server_name=["example.test"]), [],
     "{hs}: server_name: expected the homeserver's domain as a string (e.g. `server_name: example.com`), "
     "found list", 1),
    ("hs-sqlite", drop_key("synapse", "database"), [],
     "{hs}: no `database` section, so Synapse uses SQLite; the migration needs Synapse on PostgreSQL (port it "
     "with synapse_port_db first)", 1),
    ("hs-sqlite-named", synapse(database={"name": "sqlite3", "args": {"database": "/data/homeserver.db"}}), [],
     "{hs}: database.name: Synapse uses SQLite (`sqlite3`); the migration only reads PostgreSQL. Port the "
     "database with synapse_port_db first, or pass a PostgreSQL URI override", 1),
    ("hs-unknown-driver", synapse(database={"name": "mysql", "args": {}}), [],
     "{hs}: database.name: unknown database driver 'mysql' (expected psycopg2)", 1),
    ("hs-database-and-databases", synapse(databases={"main": HS_DB}), [],
     "{hs}: database: both `database` and `databases` are set; Synapse refuses that, keep one", 1),
    ("hs-databases-without-main", synapse(database=None, databases={"state": {**HS_DB, "data_stores": ["state"]}}),
     [], "{hs}: databases: no database lists `main` in its data_stores; the migration reads the main data store", 1),
    ("hs-database-a-string", synapse(database="postgres"), [], "{hs}: database: expected a mapping, found str", 1),
    ("hs-database-args-a-list", synapse(database={"name": "psycopg2", "args": ["dbname=x"]}), [],
     "{hs}: database.args: expected a mapping, found list", 1),
    ("hs-database-and-dbname", synapse(database={"name": "psycopg2", "args": {"database": "a", "dbname": "b"}}),
     [], "{hs}: database.args: both `database` and `dbname` are set; keep one", 1),
    ("hs-dsn-malformed", synapse(database={"name": "psycopg2", "args": {"dsn": f"postgresql://s:{SECRET}@[::1"}}),
     [], '{hs}: database: invalid database URI: end of string reached when looking for matching "]" in IPv6 host '
     'address', 1),
    ("hs-unknown-libpq-keyword", synapse(database={"name": "psycopg2", "args": {"dbname": "x", "colour": "blue"}}),
     [], '{hs}: database: invalid connection settings: invalid connection option "colour"', 1),
    ("hs-no-such-database", lambda env: env.write_configs(synapse_extra={"database": {"name": "psycopg2", "args": {
        "user": "postgres", "dbname": "no_such_db", "host": env.pg.sockdir, "port": env.pg.port}}}), [],
     'cannot connect to the Synapse database (host={sock} port={port} dbname=no_such_db user=postgres): '
     'connection to server on socket "{sock}/.s.PGSQL.{port}" failed: FATAL:  database "no_such_db" does not exist',
     1),
    ("hs-port-not-a-number", lambda env: env.write_configs(synapse_extra={"database": {"name": "psycopg2", "args": {
        "user": "postgres", "dbname": env.synapse_db, "host": env.pg.sockdir, "port": "fivefour"}}}), [],
     'cannot connect to the Synapse database (host={sock} port=fivefour dbname={synapsedb} user=postgres): '
     'invalid integer value "fivefour" for connection option "port"', 1),
    # -- MAS's config files --------------------------------------------------------------------
    ("mas-missing-file", lambda env: os.remove(env.mas_yaml), [], "{mas}: file not found", 1),
    ("mas-config-a-directory", nothing, ["--masConfigFile", "{dir}"], "{dir}: is a directory, expected a file", 1),
    ("mas-fifo", fifo("mas-pipe.yaml"), ["--masConfigFile", "{dir}/mas-pipe.yaml"],
     "{dir}/mas-pipe.yaml: is a named pipe (FIFO), not a regular file; give the path of the file itself", 1),
    ("mas-bad-yaml", mas_text("matrix: {homeserver: example.test\n"), [],
     "{mas}: invalid YAML at line 2, column 1: expected ',' or '}}', but got '<stream end>'", 1),
    ("mas-top-level-scalar", mas_text("just a string\n"), [],
     "{mas}: expected a mapping of settings at the top level, found str", 1),
    ("mas-wrong-homeserver", mas(matrix={"homeserver": "other.example", "secret": "x"}), [],
     "mas_homeserver_mismatch: MAS's matrix.homeserver is 'other.example' but Synapse's server_name is "
     "'example.test' [{mas}: matrix.homeserver] -> Set matrix.homeserver: example.test in MAS's config; MAS only "
     "holds users of its homeserver, and the import refuses a mismatch", 1),
    ("mas-matrix-a-list", mas(matrix=["example.test"]), [],
     "mas_config_invalid: {mas}: matrix: expected a mapping, found list [{mas}: matrix] -> Fix MAS's matrix section",
     1),
    ("mas-database-a-string", mas(database="postgresql:///mas"), [], "{mas}: database: expected a mapping, found str",
     1),
    ("mas-uri-and-host", mas_database(uri="postgresql:///mas"), [],
     "{mas}: database.uri: uri must not be set together with host, port, socket, username, password, "
     "password_file or database; keep one form", 1),
    ("mas-password-and-password-file", mas_database(password="p", password_file="/nonexistent"), [],
     "{mas}: database.password_file: set password or password_file, not both", 1),
    ("mas-password-file-missing", mas_database(password_file="/nonexistent/password"), [],
     "{mas}: database.password_file: cannot read /nonexistent/password: No such file or directory", 1),
    ("mas-password-file-a-directory", mas_database(password_file="/tmp"), [],
     "{mas}: database.password_file: cannot read /tmp: Is a directory", 1),
    ("mas-ssl-ca-twice", mas_database(ssl_ca="PEM", ssl_ca_file="/etc/ssl/ca.pem"), [],
     "{mas}: database.ssl_ca: set ssl_ca or ssl_ca_file, not both", 1),
    ("mas-uri-malformed", mas(database={"uri": f"postgresql://m:{SECRET}@[::1"}), [],
     '{mas}: database: invalid database URI: end of string reached when looking for matching "]" in IPv6 host '
     'address', 1),
    ("mas-no-such-database", mas_database(database="no_such_db"), [],
     'cannot connect to the MAS database (host={sock} port={port} dbname=no_such_db user=postgres): connection '
     'to server on socket "{sock}/.s.PGSQL.{port}" failed: FATAL:  database "no_such_db" does not exist', 1),
    ("mas-no-such-port", mas_database(port=1), [],
     'cannot connect to the MAS database (host={sock} port=1 dbname={masdb} user=postgres): connection to server '
     'on socket "{sock}/.s.PGSQL.1" failed: No such file or directory', 1),
    ("mas-ssl-mode-bogus", mas_database(ssl_mode="sometimes"), [],
     'cannot connect to the MAS database (host={sock} port={port} dbname={masdb} user=postgres): '
     'invalid sslmode value: "sometimes"', 1),
    ("mas-providers-not-a-list", mas(upstream_oauth2={"providers": {"id": "x"}}), [],
     "{mas}: upstream_oauth2.providers: expected a list", 1),
    ("mas-provider-without-id", mas(upstream_oauth2={"providers": [{"synapse_idp_id": "oidc-google"}]}), [],
     "{mas}: upstream_oauth2.providers[0]: id is missing (a ULID)", 1),
    ("mas-provider-bad-id", mas(upstream_oauth2={"providers": [{"id": "123", "synapse_idp_id": "oidc-google"}]}),
     [], "{mas}: upstream_oauth2.providers[0].id: '123' is not a ULID or a UUID", 1),
]


def names(env):
    return {"hs": env.homeserver_yaml, "mas": env.mas_yaml, "dir": os.path.dirname(env.mas_yaml),
            "sock": env.pg.sockdir, "port": env.pg.port, "masdb": env.mas_db, "synapsedb": env.synapse_db}


def command_line(env, args):
    args = [a.format(**names(env)) for a in args]
    if args[:1] == ["RAW"]:
        return args[1:]
    if "--command" in args:
        return args
    base = ["--command", "migrate"]
    if "--synapseConfigFile" not in args:
        base += ["--synapseConfigFile", env.homeserver_yaml]
    if "--masConfigFile" not in args:
        base += ["--masConfigFile", env.mas_yaml]
    return base + args


# The setups that write to a database: their cases get fresh databases. Every other case writes config files
# only and runs over the file's shared databases, which it proves it left as they were.
WRITES_TO_A_DATABASE = (saml_link,)


@pytest.mark.parametrize("setup, args, expected, code", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_a_bad_input_gets_its_exact_message_and_changes_nothing(request, setup, args, expected, code):
    env = request.getfixturevalue("env" if setup in WRITES_TO_A_DATABASE else "env_on_shared_databases")
    setup(env)
    synapse_before, mas_before = env.dumps_before()
    out, err = io.StringIO(), io.StringIO()
    returned = cli.main(command_line(env, args), out=out, err=err)
    last = err.getvalue().splitlines()[-1]
    assert SECRET not in err.getvalue() + out.getvalue()
    assert returned == code
    assert last == "syn2mas: error: " + expected.format(**names(env))
    assert env.mas_dump() == mas_before
    assert env.synapse_dump() == synapse_before
