"""Real Synapse homeservers for the runbook tests: each with its own config dir, loopback port and
databases (Synapse's and a fresh MAS one) in a shared test cluster, started as a daemon with a pid
file (the runbook's "operator-given" start and stop commands), populated through Synapse's HTTP API;
and a real nginx serving each homeserver's .well-known on its own loopback port."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import yaml

from _syn2mas.config import format_ulid

from . import mas_schema, synapse_schema
from .net import free_port
from .pgcluster import PgCluster

# Fake secrets, unique enough to scan ansible's output for.
DB_PASSWORD = "dbpw-Zq7sP4kX9"
MAS_SHARED_SECRET = "massecret-Hd83Lw0QmVn"
PEPPER = "pepper-Xk29Ds8Pqa"
OIDC_CLIENT_SECRET = "oidcsecret-Ty61Bv2Rre"
PASSWORDS = {"alice": "alice-pw-Qm3", "bob": "bob-pw-Wr8", "admin": "admin-pw-Lk5", "carol": "carol-pw-Nv2"}


# Rate limits out of the way of tests that log in many times in a row.
RATE_LIMITS_OFF = {
    "rc_login": {"address": {"per_second": 1000, "burst_count": 1000},
                 "account": {"per_second": 1000, "burst_count": 1000},
                 "failed_attempts": {"per_second": 1000, "burst_count": 1000}},
    "rc_registration": {"per_second": 1000, "burst_count": 1000},
}


def file_log_config(path: str) -> dict:
    """Synapse's logging config: warnings and worse into `path`."""
    return {
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise", "filename": path}},
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def google_oidc_provider(client_id: str) -> dict:
    """Synapse's `oidc_providers` entry for a Google-like IdP (`oidc-google`), without network."""
    return {
        "idp_id": "google", "idp_name": "Google", "issuer": "https://accounts.google.invalid/",
        "client_id": client_id, "client_secret": OIDC_CLIENT_SECRET, "discover": False,
        "authorization_endpoint": "https://accounts.google.invalid/auth",
        "token_endpoint": "https://accounts.google.invalid/token",
        "userinfo_endpoint": "https://accounts.google.invalid/userinfo",
        # Plain OAuth 2.0 (no `openid` scope): Synapse then needs no JWKS, which it would
        # otherwise fetch at start-up (fatal on 1.136 without network).
        "scopes": ["profile", "email"], "user_profile_method": "userinfo_endpoint",
        "user_mapping_provider": {"config": {"localpart_template": "{{ user.preferred_username }}"}},
    }


def http(method: str, url: str, body=None, token: str | None = None, timeout: float = 30.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw.strip().startswith(b"{") else raw.decode())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class SynapseClient:
    """Synapse's HTTP API, for a homeserver object with `base_url`, `server_name`,
    `registration_secret`, `tokens` (localpart -> access token) and `log_tail()`."""

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name}: Synapse did not answer /health within {timeout}s; log:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def register(self, localpart: str, password: str, admin: bool = False) -> str:
        url = self.base_url + "/_synapse/admin/v1/register"
        status, body = http("GET", url)
        assert status == 200, body
        nonce = body["nonce"]
        mac_hex = hmac.new(self.registration_secret.encode(), digestmod=hashlib.sha1)
        fields = (nonce, localpart, password, "admin" if admin else "notadmin")
        mac_hex.update(b"\x00".join(p.encode() for p in fields))
        status, body = http("POST", url, {"nonce": nonce, "username": localpart, "password": password,
                                          "admin": admin, "mac": mac_hex.hexdigest()})
        assert status == 200, body
        self.tokens[localpart] = body["access_token"]
        return body["user_id"]

    def login(self, localpart: str, password: str, device_id: str | None = None):
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
                "password": password}
        if device_id:
            body["device_id"] = device_id
        return http("POST", self.base_url + "/_matrix/client/v3/login", body)

    def admin(self, method: str, path: str, body=None):
        return http(method, self.base_url + path, body, token=self.tokens["admin"])

    def whoami(self, token: str):
        return http("GET", self.base_url + "/_matrix/client/v3/account/whoami", token=token)

    def populate(self, sso: bool = True) -> dict:
        """Users through the real API: an admin, two password users with several devices, an
        SSO-linked user (when `sso`: its provider must be configured), and a deactivated one.
        Returns what MAS should hold after the import."""
        self.register("admin", PASSWORDS["admin"], admin=True)
        for who in ("alice", "bob", "carol"):
            self.register(who, PASSWORDS[who])
        devices = {"admin": 1, "alice": 1, "bob": 1, "carol": 1}  # registration logs in once
        for who, extra in (("alice", ["ALICEPHONE", "ALICELAPTOP"]), ("bob", ["BOBPHONE"])):
            for device in extra:
                status, body = self.login(who, PASSWORDS[who], device)
                assert status == 200, body
                devices[who] += 1
        if sso:
            # An SSO-linked user (no password): created and linked through the admin API.
            status, body = self.admin("PUT", f"/_synapse/admin/v2/users/@dave:{self.server_name}", {
                "displayname": "Dave",
                "external_ids": [{"auth_provider": "oidc-google", "external_id": "google-sub-dave"}]})
            assert status in (200, 201), body
        # A deactivated user.
        status, body = self.admin("POST", f"/_synapse/admin/v1/deactivate/@carol:{self.server_name}", {"erase": False})
        assert status == 200, body
        devices["carol"] = 0  # deactivation deletes the devices and tokens
        return {"users": 5 if sso else 4, "passwords": 3, "sso_links": 1 if sso else 0,
                "devices": sum(devices.values()),
                "devices_by_user": devices}


@dataclass
class Homeserver(SynapseClient):
    pg: PgCluster
    name: str  # inventory hostname, e.g. hs1
    basedir: str
    synapse_version: str = synapse_schema.LATEST
    port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    google_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # Where MAS's stand-in answers (tests/support/fleet.py): its config's public_base, which clients (and the
    # runbook's controller) reach; the issuer stays the https one .well-known publishes.
    mas_port: int = field(default_factory=free_port)
    # The databases, when given (the runbook bench's generated one); else synapse_<name> and mas_<name>, which
    # create() makes.
    synapse_db: str = ""
    mas_db: str = ""
    # MAS's http.public_base when given (the demo's HTTPS URL, nginx in front of the stand-in); else where the
    # stand-in answers, plain HTTP on loopback (which the advisor's mas_public_base check warns about).
    mas_public_base: str = ""

    def __post_init__(self):
        self.server_name = f"{self.name}.test"
        self.dir = os.path.join(self.basedir, self.name)
        self.confdir = os.path.join(self.dir, "etc")
        self.webroot = os.path.join(self.dir, "www")
        self.homeserver_yaml = os.path.join(self.confdir, "homeserver.yaml")
        self.mas_yaml = os.path.join(self.confdir, "mas.yaml")
        self.pid_file = os.path.join(self.dir, "homeserver.pid")
        self.log_file = os.path.join(self.dir, "homeserver.log")
        self.well_known = os.path.join(self.webroot, ".well-known", "matrix", "client")
        self.synapse_db = self.synapse_db or f"synapse_{self.name}"
        self.mas_db = self.mas_db or f"mas_{self.name}"
        self.python = synapse_schema.synapse_python(self.synapse_version)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.well_known_url = f"http://127.0.0.1:{self.web_port}/.well-known/matrix/client"
        self.tokens: dict = {}
        self.registration_secret = f"regsecret-{self.name}-Pp91"

    # -- set-up -----------------------------------------------------------------------------------

    def create(self) -> None:
        for d in (self.confdir, self.webroot, os.path.dirname(self.well_known), os.path.join(self.dir, "media")):
            os.makedirs(d, exist_ok=True)
        self.pg.create_database(self.synapse_db, template=synapse_schema.create_template(self.pg, self.synapse_version))
        self.pg.create_database(self.mas_db, template=mas_schema.create_template(self.pg, "own-1.22"))
        conn = self.pg.connect(self.mas_db)
        mas_schema.insert_upstream_provider(conn, self.google_id)  # what `mas-cli config sync` does
        conn.close()
        self.write_configs()
        with open(self.well_known, "w") as handle:
            json.dump({"m.homeserver": {"base_url": f"https://matrix.{self.server_name}"},
                       "m.identity_server": {"base_url": "https://vector.im"},
                       "io.element.e2ee": {"default": True}}, handle, indent=2)
        self.generate_keys()

    def generate_keys(self) -> None:
        """Synapse's signing key, at the path homeserver.yaml names."""
        subprocess.run([self.python, "-m", "synapse.app.homeserver", "-c", self.homeserver_yaml, "--generate-keys"],
                       check=True, capture_output=True, cwd=self.dir)

    def runnable_settings(self) -> dict:
        """What homeserver.yaml needs for Synapse to run here as this homeserver: its pid file, its loopback
        listener, its log (the log config written beside it), media store, signing key and secrets. The rest
        (server name, database, authentication) is the config's own."""
        for d in (self.confdir, os.path.join(self.dir, "media")):
            os.makedirs(d, exist_ok=True)
        log_config = os.path.join(self.confdir, "log.yaml")
        with open(log_config, "w") as handle:
            yaml.safe_dump(file_log_config(self.log_file), handle)
        return {
            "pid_file": self.pid_file,
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                           "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
            "log_config": log_config,
            "media_store_path": os.path.join(self.dir, "media"),
            "signing_key_path": os.path.join(self.confdir, "signing.key"),
            "macaroon_secret_key": f"macaroon-{self.name}-Jj42",
            "form_secret": f"form-{self.name}-Uu17",
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
        }

    def write_configs(self) -> None:
        homeserver = {
            "server_name": self.server_name,
            "public_baseurl": f"https://matrix.{self.server_name}/",
            **self.runnable_settings(),
            "database": {"name": "psycopg2", "args": {
                "user": "postgres", "password": DB_PASSWORD, "dbname": self.synapse_db, "host": self.pg.sockdir,
                "port": self.pg.port, "cp_min": 1, "cp_max": 3}},
            "registration_shared_secret": self.registration_secret,
            "enable_registration": False,
            "password_config": {"enabled": True, "pepper": PEPPER},
            **RATE_LIMITS_OFF,
            "oidc_providers": [google_oidc_provider(f"synapse-{self.name}")],
        }
        mas = {
            "http": {"public_base": self.mas_public_base or f"http://127.0.0.1:{self.mas_port}/",
                     "issuer": f"https://auth.{self.server_name}/"},
            "database": {"host": self.pg.sockdir, "port": self.pg.port, "username": "postgres",
                         "password": DB_PASSWORD, "database": self.mas_db},
            "matrix": {"homeserver": self.server_name, "endpoint": "http://localhost:8008/"},
            "passwords": {"enabled": True, "schemes": [{"version": 1, "algorithm": "argon2id"}]},
            "upstream_oauth2": {"providers": [{
                "id": format_ulid(self.google_id), "synapse_idp_id": "oidc-google",
                "issuer": "https://accounts.google.invalid/", "client_id": f"mas-{self.name}",
                "client_secret": OIDC_CLIENT_SECRET, "token_endpoint_auth_method": "client_secret_basic"}]},
        }
        with open(self.homeserver_yaml, "w") as handle:
            yaml.safe_dump(homeserver, handle, sort_keys=False)
        with open(self.mas_yaml, "w") as handle:
            yaml.safe_dump(mas, handle, sort_keys=False)
        os.chmod(self.mas_yaml, 0o600)

    # -- running ----------------------------------------------------------------------------------

    @property
    def start_command(self) -> str:
        return (f"cd {self.dir} && {self.python} -m synapse.app.homeserver -c {self.homeserver_yaml} --daemonize")

    @property
    def stop_command(self) -> str:
        return (f"test -f {self.pid_file} && kill $(cat {self.pid_file}) && "
                f"while kill -0 $(cat {self.pid_file} 2>/dev/null) 2>/dev/null; do sleep 0.2; done; "
                f"rm -f {self.pid_file}")

    def pid(self) -> int | None:
        try:
            with open(self.pid_file) as handle:
                pid = int(handle.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, timeout: float = 90.0) -> None:
        proc = subprocess.run(self.start_command, shell=True, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: start failed: {proc.stdout}{proc.stderr}")
        self.wait_healthy(timeout)

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_file) as handle:
                return "".join(handle.readlines()[-n:])
        except OSError:
            return "(no log)"


class Nginx:
    """Debian's nginx on loopback, one server block per homeserver serving its web root; and, when given, TLS
    servers in front of other local servers (`tls_fronts`: each a dict of address, port, certificate, key and
    the upstream URL it passes every request to)."""

    def __init__(self, basedir: str, homeservers: list, tls_fronts: tuple = ()):
        self.prefix = os.path.join(basedir, "nginx")
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        servers = "\n".join(
            f"""  server {{
    listen 127.0.0.1:{hs.web_port};
    root {hs.webroot};
    location /.well-known/matrix/ {{ default_type application/json; add_header Access-Control-Allow-Origin *; }}
  }}""" for hs in homeservers)
        servers += "".join(
            f"""
  server {{
    listen {front['address']}:{front['port']} ssl;
    ssl_certificate {front['certificate']};
    ssl_certificate_key {front['key']};
    location / {{ proxy_pass {front['upstream']}; }}
  }}""" for front in tls_fronts)
        with open(self.conf, "w") as handle:
            # Under root, the workers would run as nobody and not read the private test directories.
            user = "user root;\n" if os.geteuid() == 0 else ""
            handle.write(f"""daemon off;
{user}worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {self.prefix}/logs/access.log;
  client_body_temp_path {self.prefix}/tmp;
  proxy_temp_path {self.prefix}/tmp;
  fastcgi_temp_path {self.prefix}/tmp;
  uwsgi_temp_path {self.prefix}/tmp;
  scgi_temp_path {self.prefix}/tmp;
{servers}
}}
""")
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.proc = None
        self.homeservers = homeservers

    @staticmethod
    def binary() -> str:
        found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if not found:
            raise RuntimeError("nginx is not installed: run scripts/setup.sh (it installs Debian's nginx)")
        return found

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary(), "-c", self.conf, "-p", self.prefix],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        for hs in self.homeservers:
            while True:
                try:
                    urllib.request.urlopen(hs.well_known_url, timeout=2).read()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode()}")
                    time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
