# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loading Synapse's homeserver.yaml and MAS's config.yaml: what the migration needs of them.

Both may be split over several files. Synapse merges its files shallowly (a later file replaces a
whole top-level key); MAS merges deeply (mappings merged key by key, later scalars win, lists
appended), so each loader follows its program's rules. Plain reads use PyYAML's safe loader.

The loaders are the config room's own module; beside them are where the files are read from (files.py),
Synapse's settings as Synapse reads them (synapse_settings.py), and the edits of both files (yaml_edit.py and
the three modules' edits named after them).
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, remember_secret
from .files import LOCAL_FILES, decode_text, refuse_special_file
from .synapse_settings import section_enabled

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by the adapters with missing_required_lib
    import traceback

    yaml = None
    HAS_YAML = False
    YAML_IMPORT_ERROR = traceback.format_exc()


def parse_yaml_mapping(path: str, text: str) -> dict:
    """A YAML text's top-level mapping ({} for an empty file); errors name `path`."""
    if yaml is None:
        raise ConfigError("PyYAML is required to read configuration files")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, found {type(data).__name__}")
    return data


def read_yaml_file(path: str, reader=LOCAL_FILES) -> dict:
    """A YAML file's top-level mapping ({} for an empty file), or a ConfigError naming the file."""
    return parse_yaml_mapping(path, reader.read_text(path))


def _as_paths(paths) -> list[str]:
    if isinstance(paths, str):
        paths = [paths]
    paths = [p for p in (paths or []) if p]
    if not paths:
        raise ConfigError("no configuration file given")
    return list(paths)


def _section(value: Any, where: str) -> dict:
    """A mapping section; an empty section (`key:` with no value) is treated as absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------
# Synapse


@dataclass
class OidcProvider:
    """One OIDC provider of Synapse, with the `auth_provider` its users' SSO links carry."""

    idp_id: str
    auth_provider: str
    config: dict
    source: str
    enabled: bool = True  # as Synapse reads it: on, unless a legacy `oidc_config` is not enabled


@dataclass
class SynapseConfig:
    files: list
    raw: dict
    origin: dict  # top-level key -> file it came from (Synapse merges top-level keys only)

    def where(self, key: str) -> str:
        """'file: key' for messages; the key's top-level part (before `.` or `[`) decides the file."""
        top = re.split(r"[.\[]", key, maxsplit=1)[0]
        return f"{self.origin.get(top, ', '.join(self.files))}: {key}"

    @property
    def server_name(self) -> str:
        value = self.raw.get("server_name")
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"{self.where('server_name')}: expected the homeserver's domain as a string (e.g. "
                f"`server_name: example.com`), found {type(value).__name__}"
            )
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"{', '.join(self.files)}: server_name is missing or empty (it is the homeserver's "
                "domain, e.g. `server_name: example.com`)"
            )
        return value.strip()

    def database_section(self) -> tuple[dict, str]:
        """The database config holding Synapse's main data store, and its key for messages."""
        raw = self.raw
        if raw.get("database") is not None and raw.get("databases") is not None:
            raise ConfigError(
                f"{self.where('database')}: both `database` and `databases` are set; Synapse refuses "
                "that, keep one"
            )
        if raw.get("databases") is not None:
            databases = _section(raw["databases"], self.where("databases"))
            for label, db in databases.items():
                db = _section(db, self.where(f"databases.{label}"))
                stores = db.get("data_stores", ["main", "state"])
                if "main" in (stores or []):
                    return db, f"databases.{label}"
            raise ConfigError(
                f"{self.where('databases')}: no database lists `main` in its data_stores; the "
                "migration reads the main data store"
            )
        if raw.get("database") is None:
            raise ConfigError(
                f"{', '.join(self.files)}: no `database` section, so Synapse uses SQLite; the migration "
                "needs Synapse on PostgreSQL (port it with synapse_port_db first)"
            )
        return _section(raw["database"], self.where("database")), "database"

    def database_conninfo(self) -> dict:
        """libpq connection keywords for Synapse's database (psycopg2 `args` semantics)."""
        db, key = self.database_section()
        name = db.get("name", "sqlite3")
        if name == "sqlite3":
            raise ConfigError(
                f"{self.where(key + '.name')}: Synapse uses SQLite (`sqlite3`); the migration only "
                "reads PostgreSQL. Port the database with synapse_port_db first, or pass a PostgreSQL "
                "URI override"
            )
        if name not in ("psycopg2", "psycopg"):
            raise ConfigError(
                f"{self.where(key + '.name')}: unknown database driver {name!r} (expected psycopg2)"
            )
        args = dict(_section(db.get("args"), self.where(key + ".args")))
        if "database" in args and "dbname" in args:
            raise ConfigError(
                f"{self.where(key + '.args')}: both `database` and `dbname` are set; keep one"
            )
        if "database" in args:
            args["dbname"] = args.pop("database")
        # Pool sizes are Synapse's own, not libpq keywords.
        for pool_key in ("cp_min", "cp_max", "cp_reconnect", "cp_noisy", "cp_openfun"):
            args.pop(pool_key, None)
        conninfo = {}
        for k, v in args.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = int(v)
            conninfo[str(k)] = str(v)
        return conninfo

    def oidc_providers(self) -> list[OidcProvider]:
        """Synapse's OIDC providers (`oidc_providers` and the legacy `oidc_config`)."""
        providers = []
        legacy = self.raw.get("oidc_config")
        if legacy is not None:
            legacy = _section(legacy, self.where("oidc_config"))
            if legacy:
                idp_id = str(legacy.get("idp_id", "oidc"))
                providers.append(OidcProvider(
                    idp_id=idp_id, auth_provider=synapse_auth_provider(idp_id), config=legacy,
                    source=self.where("oidc_config"), enabled=section_enabled(self.raw, "oidc_config"),
                ))
        entries = self.raw.get("oidc_providers")
        if entries is not None:
            if not isinstance(entries, list):
                raise ConfigError(f"{self.where('oidc_providers')}: expected a list of providers")
            for index, entry in enumerate(entries):
                where = self.where(f"oidc_providers[{index}]")
                entry = _section(entry, where)
                if "idp_id" not in entry:
                    raise ConfigError(f"{where}: idp_id is missing (Synapse requires it)")
                idp_id = str(entry["idp_id"])
                providers.append(OidcProvider(
                    idp_id=idp_id, auth_provider=synapse_auth_provider(idp_id), config=entry,
                    source=where,  # Synapse has no per-provider switch: every listed provider is on
                ))
        return providers


@dataclass
class ConfigSources:
    """Where a run finds Synapse and MAS: their configuration files, and the database URIs that
    replace the databases those name. The import's, the advisor's and verify's options start so."""

    synapse_config: list
    mas_config: list = field(default_factory=list)
    synapse_database_uri: str | None = None
    mas_database_uri: str | None = None
    # Where MAS's config files are read: this machine, or a files.FilesRead of MAS's own host.
    mas_reader: Any = field(default=LOCAL_FILES, repr=False)


def synapse_auth_provider(idp_id: str) -> str:
    """The `user_external_ids.auth_provider` Synapse stores for an OIDC idp_id.

    Synapse prefixes `oidc-` to avoid clashes with CAS and SAML, except for the plain `oidc`
    that the legacy `oidc_config` always used.
    """
    return idp_id if idp_id == "oidc" else "oidc-" + idp_id


def synapse_config_files(paths, reader=LOCAL_FILES) -> list[str]:
    """The files Synapse reads for these `--config-path`s, in its order.

    As Synapse's find_config_files: a directory stands for the entries in it whose names end in
    `.yaml` and that are files (or links to files), sorted; anything else is read as a file.
    """
    files = []
    for path in _as_paths(paths):
        if reader.is_dir(path):
            entries = [os.path.join(path, name) for name in reader.list_dir(path) if name.endswith(".yaml")]
            files.extend(sorted(entry for entry in entries if reader.is_file(entry)))
        else:
            files.append(path)
    return files


def load_synapse_config(paths, reader=LOCAL_FILES, exclude=()) -> SynapseConfig:
    """Reads homeserver.yaml (and more files or config directories), merged the way Synapse merges them.

    `exclude`: files not to read even when listed or inside a listed directory (an override file
    that is about to be rewritten).
    """
    files = [f for f in synapse_config_files(paths, reader)
             if not any(reader.same_file(f, other) for other in exclude if other)]
    if not files:
        raise ConfigError(f"{', '.join(_as_paths(paths))}: no Synapse configuration file found there")
    merged: dict = {}
    origin: dict = {}
    for path in files:
        data = read_yaml_file(path, reader)
        for key, value in data.items():
            merged[key] = value
            origin[key] = path
    return SynapseConfig(files=files, raw=merged, origin=origin)


# --------------------------------------------------------------------------------------------
# MAS


@dataclass
class MasProvider:
    id: uuid.UUID
    synapse_idp_id: str | None
    source: str


# Files MAS's config may name that the library reads (besides the config itself): the database password
# and TLS files, and the version-1 password scheme's secret (the advisor compares it with Synapse's pepper).
# The files of upstream providers (client_secret_file), keys and encryption are MAS's business only.
DATABASE_FILE_KEYS = ("password_file", "ssl_ca_file", "ssl_certificate_file", "ssl_key_file")


@dataclass
class MasConfig:
    files: list
    raw: dict
    _tempdir: Any = field(default=None, repr=False)
    # Where the config was read, and so where the files it names are: this host, or MAS's own host
    # (a files.FilesRead of what was read there).
    reader: Any = field(default=LOCAL_FILES, repr=False)

    def secret_files(self) -> list:
        """The paths of the files this config names that the library reads, as MAS's host knows them."""
        paths = []
        db = self.raw.get("database")
        if isinstance(db, dict):
            paths.extend(str(db[key]) for key in DATABASE_FILE_KEYS if db.get(key) is not None)
        passwords = self.raw.get("passwords")
        schemes = passwords.get("schemes") if isinstance(passwords, dict) else None
        for scheme in schemes if isinstance(schemes, list) else []:
            if isinstance(scheme, dict) and scheme.get("secret_file") is not None:
                paths.append(str(scheme["secret_file"]))
        return list(dict.fromkeys(paths))

    def read_named_file(self, path: str, where: str) -> str:
        """A file this config names, read where the config was read; a ConfigError starting with `where`."""
        if self.reader is LOCAL_FILES:
            try:
                refuse_special_file(path)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
        else:
            try:
                return self.reader.read_text(path)
            except ConfigError as exc:  # names the path and MAS's host
                raise ConfigError(f"{where}: {exc}") from None
        try:
            return decode_text(path, data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def where(self, key: str) -> str:
        return f"{', '.join(self.files)}: {key}"

    @property
    def homeserver(self) -> str:
        matrix = _section(self.raw.get("matrix"), self.where("matrix"))
        value = matrix.get("homeserver", "localhost:8008")
        return str(value)

    def password_schemes(self) -> list[dict]:
        passwords = _section(self.raw.get("passwords"), self.where("passwords"))
        schemes = passwords.get("schemes")
        if schemes is None:
            return []
        if not isinstance(schemes, list):
            raise ConfigError(f"{self.where('passwords.schemes')}: expected a list")
        return [_section(s, self.where(f"passwords.schemes[{i}]")) for i, s in enumerate(schemes)]

    def upstream_providers(self) -> list[MasProvider]:
        section = _section(self.raw.get("upstream_oauth2"), self.where("upstream_oauth2"))
        entries = section.get("providers")
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise ConfigError(f"{self.where('upstream_oauth2.providers')}: expected a list")
        providers = []
        for index, entry in enumerate(entries):
            where = self.where(f"upstream_oauth2.providers[{index}]")
            entry = _section(entry, where)
            if "id" not in entry:
                raise ConfigError(f"{where}: id is missing (a ULID)")
            try:
                provider_id = parse_provider_id(str(entry["id"]))
            except ValueError as exc:
                raise ConfigError(f"{where}.id: {exc}") from None
            idp = entry.get("synapse_idp_id")
            providers.append(MasProvider(id=provider_id, synapse_idp_id=str(idp) if idp is not None else None,
                                         source=where))
        return providers

    def database_conninfo(self) -> dict:
        """libpq connection keywords for MAS's database (`uri` or the split fields)."""
        db = _section(self.raw.get("database"), self.where("database"))
        split_keys = ("host", "port", "socket", "username", "password", "password_file", "database")
        if db.get("uri") is not None and any(db.get(k) is not None for k in split_keys):
            raise ConfigError(
                f"{self.where('database.uri')}: uri must not be set together with host, port, socket, "
                "username, password, password_file or database; keep one form"
            )
        if db.get("password") is not None and db.get("password_file") is not None:
            raise ConfigError(f"{self.where('database.password_file')}: set password or password_file, not both")
        conninfo: dict = {}
        if db.get("uri") is not None or not any(db.get(k) is not None for k in split_keys):
            conninfo["dsn"] = str(db.get("uri") or "postgresql://")
        else:
            if db.get("socket") is not None:
                conninfo["host"] = str(db["socket"])
            elif db.get("host") is not None:
                conninfo["host"] = str(db["host"])
            if db.get("port") is not None:
                conninfo["port"] = str(db["port"])
            if db.get("username") is not None:
                conninfo["user"] = str(db["username"])
            if db.get("database") is not None:
                conninfo["dbname"] = str(db["database"])
            if db.get("password") is not None:
                conninfo["password"] = str(db["password"])
            elif db.get("password_file") is not None:
                secret = self.read_named_file(str(db["password_file"]), self.where("database.password_file")).strip()
                remember_secret(secret)
                conninfo["password"] = secret
        if db.get("ssl_mode") is not None:
            conninfo["sslmode"] = str(db["ssl_mode"])
        for inline, path_key, libpq in (("ssl_ca", "ssl_ca_file", "sslrootcert"),
                                        ("ssl_certificate", "ssl_certificate_file", "sslcert"),
                                        ("ssl_key", "ssl_key_file", "sslkey")):
            if db.get(inline) is not None and db.get(path_key) is not None:
                raise ConfigError(f"{self.where('database.' + inline)}: set {inline} or {path_key}, not both")
            if db.get(path_key) is not None and self.reader is not LOCAL_FILES:
                # libpq only takes paths of this host: the file as read on MAS's host, in a private copy.
                conninfo[libpq] = self._pem_file(inline, self.read_named_file(str(db[path_key]),
                                                                              self.where("database." + path_key)))
            elif db.get(path_key) is not None:
                conninfo[libpq] = str(db[path_key])
            elif db.get(inline) is not None:
                conninfo[libpq] = self._pem_file(inline, str(db[inline]))
        return conninfo

    def _pem_file(self, name: str, content: str) -> str:
        # libpq only takes file paths: inline PEM goes into a private (0600) temporary file.
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="syn2mas-tls-")
        path = os.path.join(self._tempdir.name, name + ".pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        return path


def _deep_merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + value
        else:
            merged[key] = value
    return merged


def load_mas_config(paths, reader=LOCAL_FILES) -> MasConfig:
    """Reads MAS's config.yaml (and more files), merged the way MAS merges them."""
    files = _as_paths(paths)
    merged: dict = {}
    for path in files:
        merged = _deep_merge(merged, read_yaml_file(path, reader))
    return MasConfig(files=files, raw=merged, reader=reader)


# --------------------------------------------------------------------------------------------
# Provider ids and the auth_provider -> MAS provider mapping

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", re.IGNORECASE)


def parse_provider_id(text: str) -> uuid.UUID:
    """A MAS provider id given as a ULID, a canonical UUID or 32 hex digits."""
    text = text.strip()
    if _ULID_RE.match(text):
        value = 0
        for char in text.upper():
            value = value * 32 + _CROCKFORD.index(char)
        return uuid.UUID(int=value)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a ULID or a UUID") from None


def format_ulid(value: uuid.UUID) -> str:
    number = value.int
    chars = []
    for _position in range(26):
        chars.append(_CROCKFORD[number & 31])
        number >>= 5
    return "".join(reversed(chars))


@dataclass
class ProviderLink:
    auth_provider: str
    provider_id: uuid.UUID
    source: str


def provider_mapping(mas: MasConfig | None, explicit=None, planned=None) -> dict:
    """auth_provider -> ProviderLink, from MAS's `synapse_idp_id`s and explicit `PROVIDER:ID` items.

    `planned` items (same form) are the providers a run is about to add to MAS's config; they win
    over the config as it is now. An explicit mapping wins over both for the same auth_provider.
    """
    mapping: dict = {}
    if mas is not None:
        for provider in mas.upstream_providers():
            if provider.synapse_idp_id:
                mapping[provider.synapse_idp_id] = ProviderLink(provider.synapse_idp_id, provider.id,
                                                                provider.source + ".synapse_idp_id")
    for items, source in ((planned, "planned by this run {!r}"), (explicit, "upstream provider mapping {!r}")):
        for item in items or []:
            if ":" not in item:
                raise ConfigError(
                    f"upstream provider mapping {item!r}: expected SYNAPSE_AUTH_PROVIDER:MAS_PROVIDER_ID, "
                    "e.g. oidc-google:01H8PKNWKKRPCBW4YGH1RWV279"
                )
            auth_provider, provider_id = item.rsplit(":", 1)
            try:
                parsed = parse_provider_id(provider_id)
            except ValueError as exc:
                raise ConfigError(f"upstream provider mapping {item!r}: {exc}") from None
            mapping[auth_provider] = ProviderLink(auth_provider, parsed, source.format(item))
    return mapping
