"""Reading homeserver.yaml and MAS's config.yaml: merging, database connections, clear errors."""

from __future__ import annotations

import uuid

import pytest

from _syn2mas.config import (
    format_ulid, load_mas_config, load_synapse_config, parse_provider_id, provider_mapping,
    synapse_auth_provider,
)
from _syn2mas.db import describe, parsed, redact, secrets_of
from _syn2mas.errors import ConfigError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_synapse_files_merge_top_level_keys_like_synapse(tmp_path):
    main = write(tmp_path, "homeserver.yaml", """
server_name: example.com
database:
  name: psycopg2
  args: {user: synapse, password: s3cret, database: synapse, host: db.internal, port: 5433, cp_min: 5, sslmode: verify-full}
""")
    override = write(tmp_path, "db.yaml", """
database:
  name: psycopg2
  args: {user: other, dbname: synapse2, host: /run/postgresql}
""")
    cfg = load_synapse_config([main, override])
    # the later file replaces the whole `database` key (Synapse does not merge deeper)
    assert cfg.database_conninfo() == {"user": "other", "dbname": "synapse2", "host": "/run/postgresql"}
    assert cfg.where("database") == f"{override}: database"
    cfg = load_synapse_config([main])
    assert cfg.database_conninfo() == {"user": "synapse", "password": "s3cret", "dbname": "synapse",
                                       "host": "db.internal", "port": "5433", "sslmode": "verify-full"}
    assert cfg.server_name == "example.com"


def test_synapse_databases_form_uses_the_main_data_store(tmp_path):
    path = write(tmp_path, "hs.yaml", """
server_name: example.com
databases:
  state_db: {name: psycopg2, data_stores: [state], args: {dbname: state}}
  main_db: {name: psycopg2, data_stores: [main], args: {dbname: main}}
""")
    assert load_synapse_config(path).database_conninfo() == {"dbname": "main"}


@pytest.mark.parametrize("text, message", [
    ("server_name: x\ndatabase: {name: sqlite3, args: {database: /data/homeserver.db}}",
     r"hs.yaml: database.name: Synapse uses SQLite .*synapse_port_db"),
    ("server_name: x\n", r"no `database` section, so Synapse uses SQLite"),
    ("server_name: x\ndatabase: {name: psycopg2, args: {database: a, dbname: b}}",
     r"database.args: both `database` and `dbname`"),
    ("server_name: x\ndatabase: {name: mysql}", r"unknown database driver 'mysql'"),
    ("server_name: x\ndatabase: {name: psycopg2}\ndatabases: {a: {}}", r"both `database` and `databases`"),
    ("database: {name: psycopg2}\n", r"server_name is missing"),
])
def test_synapse_database_problems_are_named_with_file_and_key(tmp_path, text, message):
    cfg = load_synapse_config(write(tmp_path, "hs.yaml", text))
    with pytest.raises(ConfigError, match=message):
        cfg.server_name and cfg.database_conninfo()


def test_bad_yaml_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "hs.yaml", "server_name: x\ndatabase:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"hs.yaml: invalid YAML at line \d+, column \d+"):
        load_synapse_config(path)
    with pytest.raises(ConfigError, match=r"missing.yaml: file not found"):
        load_synapse_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"expected a mapping of settings"):
        load_synapse_config(write(tmp_path, "list.yaml", "- a\n- b\n"))


def test_empty_sections_count_as_absent(tmp_path):
    cfg = load_synapse_config(write(tmp_path, "hs.yaml", "server_name: x\noidc_config:\noidc_providers:\n"))
    assert cfg.oidc_providers() == []


def test_oidc_providers_carry_synapse_auth_provider_names(tmp_path):
    cfg = load_synapse_config(write(tmp_path, "hs.yaml", """
server_name: x
oidc_config: {issuer: https://legacy/, client_id: a}
oidc_providers:
  - {idp_id: google, idp_name: Google}
  - {idp_id: oidc, idp_name: Plain}
  - {idp_id: old, idp_name: Old, enabled: false}
"""))
    providers = cfg.oidc_providers()
    # As Synapse runs them: a legacy oidc_config without `enabled` is off; listed providers have no
    # switch, so `enabled: false` there leaves the provider on (tests/integration/test_synapse_settings.py).
    assert [(p.idp_id, p.auth_provider, p.enabled) for p in providers] == [
        ("oidc", "oidc", False), ("google", "oidc-google", True), ("oidc", "oidc", True), ("old", "oidc-old", True)]
    assert synapse_auth_provider("github") == "oidc-github"


def test_mas_files_merge_deeply_and_read_split_database_fields(tmp_path):
    secret = write(tmp_path, "db-password", "p4ssw0rd\n")
    base = write(tmp_path, "config.yaml", f"""
matrix: {{homeserver: example.com, secret: abc}}
database: {{host: db, port: 5432, username: mas, password_file: {secret}, database: mas, ssl_mode: require}}
""")
    local = write(tmp_path, "local.yaml", "database: {socket: /run/postgresql}\n")
    cfg = load_mas_config([base, local])
    assert cfg.homeserver == "example.com"
    assert cfg.database_conninfo() == {"host": "/run/postgresql", "port": "5432", "user": "mas", "dbname": "mas",
                                       "password": "p4ssw0rd", "sslmode": "require"}


MAS_HOST_CONFIG = """
matrix: {homeserver: example.com, secret: abc}
database: {host: db, username: mas, password_file: /etc/mas/db-password, database: mas,
           ssl_mode: verify-full, ssl_ca_file: /etc/mas/ca.pem}
passwords: {schemes: [{version: 1, algorithm: bcrypt, secret_file: /etc/mas/pepper}, {version: 2, algorithm: argon2id}]}
"""


def test_the_files_mas_s_config_names_are_read_where_the_config_was_read(tmp_path):
    """MAS's config read on MAS's own host: its database password and CA file are the ones read there,
    never a file of the same path on the host the import runs on."""
    from _syn2mas.config.files import FilesRead

    here = tmp_path / "etc" / "mas"
    here.mkdir(parents=True)
    (here / "db-password").write_text("the Synapse host's file\n")
    on_mas_host = FilesRead("mas.example.org", {
        "/etc/mas/config.yaml": MAS_HOST_CONFIG, "/etc/mas/db-password": "pw-on-the-mas-host\n",
        "/etc/mas/ca.pem": "-----BEGIN CERTIFICATE-----\nMAS host CA\n-----END CERTIFICATE-----\n"})
    cfg = load_mas_config(["/etc/mas/config.yaml"], on_mas_host)
    assert cfg.secret_files() == ["/etc/mas/db-password", "/etc/mas/ca.pem", "/etc/mas/pepper"]
    info = cfg.database_conninfo()
    assert info["password"] == "pw-on-the-mas-host"
    import os
    import stat
    assert info["sslrootcert"] != "/etc/mas/ca.pem"  # libpq reads a private copy of the file read there
    with open(info["sslrootcert"]) as handle:
        assert "MAS host CA" in handle.read()
    assert stat.S_IMODE(os.stat(info["sslrootcert"]).st_mode) == 0o600
    assert "pw-on-the-mas-host" not in redact("connecting with password pw-on-the-mas-host")


def test_a_file_mas_s_config_names_that_its_host_lacks_is_an_error_naming_the_path_and_the_host():
    from _syn2mas.config.files import FilesRead

    missing = FilesRead("mas.example.org", {"/etc/mas/config.yaml": MAS_HOST_CONFIG},
                        errors={"/etc/mas/db-password": "file not found"})
    with pytest.raises(ConfigError) as err:
        load_mas_config(["/etc/mas/config.yaml"], missing).database_conninfo()
    assert str(err.value) == ("/etc/mas/config.yaml: database.password_file: /etc/mas/db-password: file not found "
                              "on mas.example.org")
    unread = FilesRead("mas.example.org", {"/etc/mas/config.yaml": MAS_HOST_CONFIG})
    with pytest.raises(ConfigError, match=r"^/etc/mas/config.yaml: database.password_file: /etc/mas/db-password: "
                                          r"cannot read it on mas.example.org: it was not read there$"):
        load_mas_config(["/etc/mas/config.yaml"], unread).database_conninfo()


def test_mas_uri_and_inline_certificates(tmp_path):
    cfg = load_mas_config(write(tmp_path, "c.yaml", """
database:
  uri: postgresql://mas:pw@db/mas
  ssl_ca: |
    -----BEGIN CERTIFICATE-----
    MIIB
    -----END CERTIFICATE-----
"""))
    info = cfg.database_conninfo()
    assert info["dsn"] == "postgresql://mas:pw@db/mas"
    with open(info["sslrootcert"]) as handle:
        assert "BEGIN CERTIFICATE" in handle.read()
    import os
    import stat
    assert stat.S_IMODE(os.stat(info["sslrootcert"]).st_mode) == 0o600
    # no database section: libpq's environment defaults, like MAS
    assert load_mas_config(write(tmp_path, "empty.yaml", "")).database_conninfo() == {"dsn": "postgresql://"}


def test_mas_uri_with_split_fields_is_refused(tmp_path):
    cfg = load_mas_config(write(tmp_path, "c.yaml", "database: {uri: 'postgresql://', host: db}\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: database.uri: uri must not be set together with host"):
        cfg.database_conninfo()


def test_provider_ids_as_ulid_uuid_or_hex_and_mapping_precedence(tmp_path):
    ulid = "01H8PKNWKKRPCBW4YGH1RWV279"
    as_uuid = parse_provider_id(ulid)
    assert format_ulid(as_uuid) == ulid
    assert parse_provider_id(str(as_uuid)) == as_uuid
    assert parse_provider_id(as_uuid.hex) == as_uuid
    with pytest.raises(ValueError):
        parse_provider_id("not-an-id")
    cfg = load_mas_config(write(tmp_path, "c.yaml", f"""
upstream_oauth2:
  providers:
    - {{id: {ulid}, synapse_idp_id: oidc-google}}
    - {{id: 01H8PKNWKKRPCBW4YGH1RWV27A}}
"""))
    other = uuid.uuid4()
    mapping = provider_mapping(cfg, [f"oidc-google:{other}", f"saml:{ulid}"])
    assert mapping["oidc-google"].provider_id == other  # explicit wins
    assert mapping["saml"].provider_id == as_uuid
    assert set(mapping) == {"oidc-google", "saml"}
    with pytest.raises(ConfigError, match=r"expected SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID"):
        provider_mapping(None, ["oidc-google"])
    with pytest.raises(ConfigError, match=r"'oidc:nope': 'nope' is not a ULID or a UUID"):
        provider_mapping(None, ["oidc:nope"])


def test_connection_descriptions_never_show_passwords():
    info = {"dsn": "postgresql://mas:hunter22@db.internal:5433/mas?sslmode=require"}
    text = describe(info)
    assert "hunter22" not in text
    assert text == "host=db.internal port=5433 dbname=mas user=mas"
    assert parsed({"host": "h", "password": "pw"}) == {"host": "h", "password": "pw"}
    assert redact("could not connect: password hunter22 rejected", secrets_of(info)) == \
        "could not connect: password ******** rejected"


# -- configuration files read on another host (MAS on a host of its own) -----------------------

def test_files_read_on_another_host_are_loaded_as_there_and_errors_name_that_host(tmp_path):
    from _syn2mas.config.files import FilesRead, read_files

    confd = tmp_path / "conf.d"
    confd.mkdir()
    main = write(tmp_path, "homeserver.yaml", "server_name: example.com\n")
    (confd / "10-db.yaml").write_text("database: {name: psycopg2, args: {dbname: synapse}}\n")
    (confd / "README").write_text("not read\n")
    mas = write(tmp_path, "config.yaml", "database: {uri: 'postgresql://mas@db/mas'}\n")
    read = read_files([main, str(confd), mas, str(tmp_path / "absent.yaml")])
    assert read["dirs"] == {str(confd): ["10-db.yaml"]}
    assert sorted(read["files"]) == sorted([main, str(confd / "10-db.yaml"), mas])
    assert read["errors"] == {str(tmp_path / "absent.yaml"): "file not found"}

    # Once read, the files are gone from this machine: the reader still serves them.
    for path in (main, mas, str(confd / "10-db.yaml")):
        (tmp_path / path).unlink()
    there = FilesRead("synapse-vm", read["files"], read["dirs"], read["errors"])
    synapse = load_synapse_config([main, str(confd)], there)
    assert synapse.server_name == "example.com" and synapse.database_conninfo() == {"dbname": "synapse"}
    assert synapse.where("database") == f"{confd}/10-db.yaml: database"
    assert load_mas_config([mas], there).database_conninfo() == {"dsn": "postgresql://mas@db/mas"}

    with pytest.raises(ConfigError, match=f"^{tmp_path}/absent.yaml: file not found on synapse-vm$"):
        load_mas_config([str(tmp_path / "absent.yaml")], there)
    with pytest.raises(ConfigError, match=f"^{tmp_path}/other.yaml: cannot read it on synapse-vm: it was not read there"):
        load_mas_config([str(tmp_path / "other.yaml")], there)
    denied = FilesRead("mas-vm", {}, errors={"/etc/mas/config.yaml": "permission denied (run as a user that can read it)"})
    with pytest.raises(ConfigError, match="^/etc/mas/config.yaml: cannot read it on mas-vm: permission denied"):
        load_mas_config(["/etc/mas/config.yaml"], denied)


def test_files_read_elsewhere_come_first_and_other_paths_go_to_the_host(tmp_path):
    from _syn2mas.config.files import LOCAL_FILES, FilesRead

    local = write(tmp_path, "pepper", "on this host\n")
    there = FilesRead("synapse-vm", {"/etc/matrix-synapse/homeserver.yaml": "server_name: example.org\n"},
                      fallback=LOCAL_FILES)
    assert there.read_text(local) == "on this host\n" and there.is_file(local)
    assert load_synapse_config(["/etc/matrix-synapse/homeserver.yaml"], there).server_name == "example.org"
    assert not there.same_file("/etc/matrix-synapse/homeserver.yaml", local)
