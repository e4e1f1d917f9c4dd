"""A fleet of Synapse hosts on this machine in the shape real users run, each reached over real SSH.

Per host:
- its own `sshd` (Debian's /usr/sbin/sshd, own config, host key and loopback port), started by the
  tests as root; the controller logs in with a generated key as an admin user (`syn2mas-admin`) who
  becomes root through passwordless `sudo`, and checks the host key against a known_hosts file;
- Debian's own /usr/bin/python3 as the host Python, with nothing added (no psycopg2, no ruamel.yaml);
- a real Synapse from a virtualenv on Debian's Python (scripts/setup.sh builds it), run as the host's
  own unprivileged system user (`syn2mas-<host>`), started and stopped by the operator commands the
  inventory gives (runuser; no systemd here);
- the Debian package's layout under the host's directory: etc/matrix-synapse/homeserver.yaml and
  conf.d/*.yaml (server_name, report_stats, database), owned root:<synapse group> 0640, data, media,
  logs and pid files owned by Synapse's user;
- Synapse's and MAS's databases in the test cluster, over TCP on 127.0.0.1, each owned by its own
  role that must give its password;
- MAS's config as `mas-cli config generate` writes it, with the database URI and public URL an operator
  sets; MAS's binary cannot be had here, so a MAS STAND-IN (tests/support/mas_stand_in.py) answers where
  the inventory says MAS is (syn2mas_mas_endpoint), as MAS of that config, from before the first run;
- the .well-known document, served by a real nginx.

Deployment shapes a host can take (HostSpec): an SSO provider (MAS's config then as
`mas-cli config generate --synapse-config` writes it, its provider synced into MAS's database), a
Synapse worker (a real synapse.app.generic_worker, replicating through a real Redis), databases
reached only by URI override (the configs name hosts that resolve only inside the deployment's own
network, as in a compose file; here only Synapse's process is given their address, through libpq's
PGHOSTADDR), homeserver.yaml rewritten in place instead of a conf.d override, and no Python with
psycopg2 named for the database work (a host missing a requirement), and MAS on a host of its own (MasHost).

The collection is built with `ansible-galaxy collection build` from the checkout's files and installed
with `ansible-galaxy collection install` into the fleet's directory; playbooks run from the controller
venv (.venv-controller: only requirements-controller.txt) in a working directory of their own, so the
repository's ansible.cfg plays no part.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import yaml

from _syn2mas.config import format_ulid

from . import accounts, homeservers, mas_schema, synapse_schema
from .mas_stand_in import MasStandIn
from .pgcluster import PgCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTROLLER_VENV = os.path.join(ROOT, ".venv-controller")
SYNAPSE_VERSION = synapse_schema.LATEST
# Outside the checkout (scripts/setup.sh builds it there): Synapse's unprivileged users must be able to
# enter it, which a checkout in a 0700 directory would not let them.
SYNAPSE_VENV = os.environ.get("SYN2MAS_SYNAPSE_DEBIAN_VENV", f"/opt/syn2mas-tests/synapse-{SYNAPSE_VERSION}")
DEBIAN_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
ADMIN_USER = "syn2mas-admin"
SUDOERS_FILE = "/etc/sudoers.d/syn2mas-test-admin"
# Run through tests/support/accounts.py (one at a time across the workers).
ACCOUNT_COMMANDS = frozenset({"useradd", "usermod", "userdel", "groupadd", "groupdel"})
# The file the runbook writes Synapse's changes to, on hosts that use a conf.d override. Synapse reads
# conf.d in name order; the override must come last.
OVERRIDE_NAME = "zz-syn2mas-mas.yaml"
WORKER_NAME = "generic_worker1"
# What heal() restores on a host: its configs and web root.
PRISTINE = ("etc", "var/www")
# The MAS schema the fleet's MAS databases get: the real dump of MAS 1.22 where present.
MAS_VARIANT = "real-1.22" if "real-1.22" in mas_schema.VARIANTS else "own-1.22"


def missing_prerequisites(with_worker: bool = True) -> list[str]:
    """What this machine lacks for the fleet (scripts/setup.sh provides all of it)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (sshd per host, system users, runuser)")
    for path, what in ((SSHD, "Debian's openssh-server"), ("/usr/bin/sudo", "sudo"),
                       (DEBIAN_PYTHON, "Debian's python3"),
                       (os.path.join(CONTROLLER_VENV, "bin", "ansible-playbook"), "the controller venv"),
                       (os.path.join(SYNAPSE_VENV, "bin", "python"), "Synapse's venv on Debian's python3")):
        if not os.path.exists(path):
            missing.append(f"{what} ({path})")
    if with_worker and not shutil.which("redis-server"):
        missing.append("redis-server (Synapse workers replicate through Redis)")
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        missing.append("nginx")
    return missing


def _run(cmd, check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        if cmd[0] in ACCOUNT_COMMANDS:
            return accounts.run(cmd, check=check, **kw)
        return subprocess.run(cmd, check=check, **kw)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{cmd!r} failed ({exc.returncode}):\n{exc.stdout}\n{exc.stderr}") from exc


def _children(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid`."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def _write(path: str, content: str, mode: int = 0o644, owner: str = "root", group: str = "root") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(content)
    shutil.chown(path, owner, group)
    os.chmod(path, mode)


def _mkdir(path: str, mode: int = 0o755, owner: str = "root", group: str = "root") -> str:
    os.makedirs(path, exist_ok=True)
    shutil.chown(path, owner, group)
    os.chmod(path, mode)
    return path


class _Dumper(yaml.SafeDumper):
    """YAML as the config generators write it: block style, multi-line strings as literal blocks."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def to_yaml(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _private_key(*genpkey_args: str) -> str:
    return _run(["openssl", "genpkey", *genpkey_args]).stdout


def _kid() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _position in range(10))


@dataclass(frozen=True)
class HostSpec:
    name: str
    sso: bool = False            # a Google-like OIDC provider in Synapse, an SSO-linked user
    worker: bool = False         # one synapse.app.generic_worker
    uri_override: bool = False   # database hosts that resolve only inside the deployment
    in_place: bool = False       # homeserver.yaml rewritten in place (no conf.d override file)
    bare_python: bool = False    # the database work is pointed at Debian's Python (no psycopg2)
    mas_host: bool = False       # MAS's config (and mas-cli) on an inventory host of its own (MasHost)


class Sshd:
    """One test host's own sshd (Debian's /usr/sbin/sshd, own config, host key and loopback port).

    With `private_mount` (source, target), sshd runs in a mount namespace of its own where `source` is
    mounted on `target`: what is under `target` exists for that host's sessions only (the hosts share this
    machine's filesystem otherwise), as a file that is on another machine."""

    def __init__(self, fleet: "SshFleet", name: str, sshdir: str, private_mount: tuple | None = None):
        self.fleet = fleet
        self.name = name
        self.sshdir = sshdir
        self.private_mount = private_mount
        self.port = homeservers.free_port()
        self.proc: subprocess.Popen | None = None
        self.host_key = ""

    def create(self) -> None:
        _mkdir(self.sshdir, 0o755)
        key = os.path.join(self.sshdir, "ssh_host_ed25519_key")
        if not os.path.exists(key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-host", "-f", key])
        _write(os.path.join(self.sshdir, "sshd_config"), f"""# sshd of test host {self.name}
Port {self.port}
ListenAddress 127.0.0.1
HostKey {key}
PidFile {os.path.join(self.sshdir, "sshd.pid")}
AuthorizedKeysFile {self.fleet.authorized_keys}
AllowUsers {ADMIN_USER}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The authorized_keys file lives under a temporary directory, not in the user's home.
StrictModes no
MaxSessions 50
MaxStartups 50:30:100
Subsystem sftp internal-sftp
""")
        with open(key + ".pub") as handle:
            self.host_key = " ".join(handle.read().split()[:2])

    def start(self) -> None:
        config = os.path.join(self.sshdir, "sshd_config")
        _run([SSHD, "-t", "-f", config])
        argv = [SSHD, "-D", "-f", config, "-E", os.path.join(self.sshdir, "sshd.log")]
        if self.private_mount:
            source, target = self.private_mount
            argv = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                    'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", source, target, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait(self, timeout: float = 15.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    if conn.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: sshd did not start: "
                                   f"{SshHost.read(os.path.join(self.sshdir, 'sshd.log'))}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Ends the open sessions (the listener's children: they outlive it), then the listener."""
        if self.proc is None:
            return
        for pid in _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class MasHost:
    """MAS's host of a homeserver (HostSpec.mas_host): an inventory host of its own, reached over its own sshd,
    whose directory holds MAS's config.yaml (and the backups of it the runbook makes there). That directory
    exists only in its sshd's mount namespace: on the Synapse host (and on this machine) the path is an empty
    directory, so a task that reads MAS's config on the Synapse host fails as on two machines. The tests read
    and write the files through `store`, what is mounted there. MAS itself does not run (no binary can be had
    here); its `mas-cli` is a stand-in (tests/support/mas_cli_stand_in.py) run by Synapse's virtualenv Python
    (the stand-in needs psycopg2; the host's bare Python has none)."""

    def __init__(self, fleet: "SshFleet", synapse: "SshHost"):
        self.name = f"{synapse.name}-mas"
        self.dir = os.path.join(fleet.base, self.name)
        self.store = os.path.join(fleet.base, f".{self.name}-store")
        self.sshd = Sshd(fleet, self.name, os.path.join(fleet.base, f"{self.name}-sshd"), (self.store, self.dir))
        self.config_dir = os.path.join(self.dir, "etc", "matrix-authentication-service")
        self.mas_yaml = os.path.join(self.config_dir, "config.yaml")
        self.backup_dir = os.path.join(self.dir, "var", "backups", "syn2mas-mas")
        self.cli = [os.path.join(SYNAPSE_VENV, "bin", "python"),
                    os.path.join(ROOT, "tests", "support", "mas_cli_stand_in.py")]

    def seen(self, path: str) -> str:
        """Where the test finds a path of MAS's host (under `dir` there)."""
        return os.path.join(self.store, os.path.relpath(path, self.dir))

    def create(self) -> None:
        _mkdir(self.dir)  # the mount point: empty but for MAS's host
        _mkdir(self.store, 0o700)
        _mkdir(self.seen(self.config_dir))
        self.sshd.create()

    def cli_calls(self) -> list:
        """The stand-in mas-cli's calls on MAS's host, in order (each its argv)."""
        import json

        path = os.path.join(self.seen(self.config_dir), "calls.log")
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle]


class SshHost(homeservers.SynapseClient):
    """One host: its sshd, its Synapse user, layout, databases, Synapse (and worker) processes."""

    def __init__(self, fleet: "SshFleet", spec: HostSpec):
        self.fleet = fleet
        self.spec = spec
        self.name = spec.name
        self.server_name = f"{self.name}.test"
        self.user = f"syn2mas-{self.name}"
        self.dir = os.path.join(fleet.base, self.name)
        self.etc = os.path.join(self.dir, "etc")
        self.synapse_etc = os.path.join(self.etc, "matrix-synapse")
        self.confd = os.path.join(self.synapse_etc, "conf.d")
        self.homeserver_yaml = os.path.join(self.synapse_etc, "homeserver.yaml")
        self.override_path = os.path.join(self.confd, OVERRIDE_NAME)
        self.worker_yaml = os.path.join(self.synapse_etc, "workers", f"{WORKER_NAME}.yaml")
        self.secrets_dir = os.path.join(self.synapse_etc, "secrets")
        # MAS's config as the runbook names it: on MAS's own host (MasHost) or on this one.
        self.mas = MasHost(fleet, self) if spec.mas_host else None
        self.mas_yaml = (self.mas.mas_yaml if self.mas
                         else os.path.join(self.etc, "matrix-authentication-service", "config.yaml"))
        self.data = os.path.join(self.dir, "var", "lib", "matrix-synapse")
        self.logdir = os.path.join(self.dir, "var", "log", "matrix-synapse")
        self.rundir = os.path.join(self.dir, "run", "matrix-synapse")
        self.pid_file = os.path.join(self.rundir, "homeserver.pid")
        self.worker_pid_file = os.path.join(self.rundir, f"{WORKER_NAME}.pid")
        self.log_file = os.path.join(self.logdir, "homeserver.log")
        self.worker_log_file = os.path.join(self.logdir, f"{WORKER_NAME}.log")
        self.webroot = os.path.join(self.dir, "var", "www", "html")
        self.well_known = os.path.join(self.webroot, ".well-known", "matrix", "client")
        self.backup_dir = os.path.join(self.dir, "var", "backups", "syn2mas")
        self.state_file = os.path.join(self.dir, "var", "lib", "syn2mas", "state.json")
        self.sshdir = os.path.join(self.dir, "sshd")
        self.sshd = Sshd(fleet, self.name, self.sshdir)
        self.python = os.path.join(SYNAPSE_VENV, "bin", "python")
        self.port = homeservers.free_port()
        self.replication_port = homeservers.free_port()
        self.worker_port = homeservers.free_port()
        self.web_port = homeservers.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.worker_url = f"http://127.0.0.1:{self.worker_port}"
        self.well_known_url = f"http://127.0.0.1:{self.web_port}/.well-known/matrix/client"
        self.synapse_db = self.synapse_role = f"ssh_synapse_{self.name}"
        self.mas_db = self.mas_role = f"ssh_mas_{self.name}"
        self.synapse_db_password = f"dbpw-syn-{self.name}-{secrets.token_hex(6)}"
        self.mas_db_password = f"dbpw-mas-{self.name}-{secrets.token_hex(6)}"
        self.registration_secret = f"regsecret-{self.name}-{secrets.token_hex(6)}"
        self.macaroon_secret = f"macaroon-{self.name}-{secrets.token_hex(6)}"
        self.form_secret = f"form-{self.name}-{secrets.token_hex(6)}"
        # mas-cli generates these; the operator gives the shared one to the runbook as syn2mas_mas_secret.
        self.mas_shared_secret = secrets.token_urlsafe(24)
        self.mas_encryption = secrets.token_hex(32)
        self.mas_key_markers: list[str] = []
        self.google_id = uuid.uuid4()
        self.tokens: dict = {}
        self.expected: dict = {}
        self.user_created = False
        # MAS's service (a stand-in: no MAS binary can be had here), started once its config exists (SshFleet.setup):
        # on MAS's own host, in that host's mount namespace, where the config's path exists. With uri_override,
        # MAS's config names a database host only MAS's network resolves: the stand-in takes the URI the runbook gets.
        self.mas_service = MasStandIn(self.mas_yaml,
                                      database_uri=self.mas_database_uri() if spec.uri_override else None)

    @property
    def ssh_port(self) -> int:
        return self.sshd.port

    @property
    def host_key(self) -> str:
        return self.sshd.host_key

    @property
    def mas_db_password_file(self) -> str:
        """MAS's database password file, on MAS's own host (HostSpec.mas_host)."""
        return os.path.join(self.mas.config_dir, "database-password")

    @property
    def mas_yaml_seen(self) -> str:
        """Where the test reads MAS's config (through MAS's host's store when MAS has a host of its own)."""
        return self.mas.seen(self.mas_yaml) if self.mas else self.mas_yaml

    # -- secrets and the database URIs ------------------------------------------------------------

    def secrets(self) -> list[str]:
        """Every secret of this host that must never appear in the runbook's output."""
        return [self.synapse_db_password, self.mas_db_password, self.registration_secret, self.macaroon_secret,
                self.form_secret, self.mas_shared_secret, self.mas_encryption, *self.mas_key_markers]

    @property
    def synapse_db_host(self) -> str:
        return "synapse-postgres" if self.spec.uri_override else "127.0.0.1"

    @property
    def mas_db_host(self) -> str:
        return "mas-postgres" if self.spec.uri_override else "127.0.0.1"

    def synapse_database_uri(self) -> str:
        return self.fleet.pg.tcp_uri(self.synapse_db, self.synapse_role, self.synapse_db_password)

    def mas_database_uri(self) -> str:
        return self.fleet.pg.tcp_uri(self.mas_db, self.mas_role, self.mas_db_password)

    # -- set-up -----------------------------------------------------------------------------------

    def create_accounts(self) -> None:
        """Synapse's system user, the database roles and databases (one host at a time: useradd and
        pg_hba.conf are shared)."""
        self._create_user()
        pg = self.fleet.pg
        for role, password in ((self.synapse_role, self.synapse_db_password), (self.mas_role, self.mas_db_password)):
            pg.create_login_role(role, password)
        pg.drop_database(self.synapse_db)
        pg.drop_database(self.mas_db)
        pg.create_database(self.synapse_db, template=synapse_schema.create_template(pg, SYNAPSE_VERSION))
        pg.give_database(self.synapse_db, self.synapse_role)
        # MAS's schema created by MAS's own role, as `mas-cli database migrate` does.
        pg.create_database(self.mas_db, owner=self.mas_role)
        mas_schema.load(pg, self.mas_db, MAS_VARIANT, user=self.mas_role)
        if self.spec.sso and not self.spec.mas_host:  # with MAS on its own host, the run provisions it
            conn = pg.connect(self.mas_db)
            try:
                mas_schema.insert_upstream_provider(conn, self.google_id,  # what `mas-cli config sync` did
                                                    issuer="https://accounts.google.invalid/")
            finally:
                conn.close()

    def create(self) -> None:
        """The host's files: layout, configs, signing key, sshd (hosts in parallel)."""
        self._create_layout()
        self._write_synapse_configs()
        if self.mas:
            self.mas.create()
        self._write_mas_config()
        self._write_well_known()
        self.sshd.create()

    def _create_user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", self.data,
                  "--shell", "/usr/sbin/nologin", self.user])
        self.user_created = True

    def _create_layout(self) -> None:
        u = self.user
        _mkdir(self.dir)
        for d in (self.etc, self.synapse_etc, self.confd, os.path.dirname(self.worker_yaml),
                  os.path.dirname(self.mas_yaml_seen), os.path.join(self.dir, "var"), os.path.join(self.dir, "var", "lib"),
                  os.path.join(self.dir, "var", "log"), os.path.join(self.dir, "run"), self.webroot,
                  os.path.dirname(self.well_known)):
            _mkdir(d)
        _mkdir(self.data, 0o750, u, u)
        _mkdir(os.path.join(self.data, "media"), 0o750, u, u)
        _mkdir(self.logdir, 0o750, u, u)
        _mkdir(self.rundir, 0o755, u, u)
        # A root-only directory (fault injection: a secret file Synapse's user cannot read).
        _mkdir(self.secrets_dir, 0o700)
        _write(os.path.join(self.secrets_dir, "mas_shared_secret"), self.mas_shared_secret + "\n", 0o600)

    def _synapse_file(self, path: str, data) -> None:
        """A config file as the package installs them: root:<synapse group> 0640."""
        _write(path, data if isinstance(data, str) else to_yaml(data), 0o640, "root", self.user)

    def _write_synapse_configs(self) -> None:
        listeners = [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                      "x_forwarded": True, "resources": [{"names": ["client", "federation"], "compress": False}]}]
        homeserver = {
            "pid_file": self.pid_file,
            "public_baseurl": f"https://matrix.{self.server_name}/",
            "listeners": listeners,
            "log_config": os.path.join(self.synapse_etc, "log.yaml"),
            "media_store_path": os.path.join(self.data, "media"),
            "signing_key_path": os.path.join(self.synapse_etc, "homeserver.signing.key"),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "registration_shared_secret": self.registration_secret,
            "macaroon_secret_key": self.macaroon_secret,
            "form_secret": self.form_secret,
            "enable_registration": False,
            "password_config": {"enabled": True, "pepper": homeservers.PEPPER},
            **homeservers.RATE_LIMITS_OFF,
        }
        if self.spec.sso:
            homeserver["oidc_providers"] = [homeservers.google_oidc_provider(f"synapse-{self.name}")]
        if self.spec.worker:
            listeners.append({"port": self.replication_port, "bind_addresses": ["127.0.0.1"], "type": "http",
                              "resources": [{"names": ["replication"]}]})
            homeserver["instance_map"] = {"main": {"host": "127.0.0.1", "port": self.replication_port}}
            homeserver["redis"] = {"enabled": True, "host": "127.0.0.1", "port": self.fleet.redis_port}
        self._synapse_file(self.homeserver_yaml, "# Synapse's main configuration (the Debian package's layout:\n"
                           "# server_name, report_stats and the database are in conf.d/).\n" + to_yaml(homeserver))
        self._synapse_file(os.path.join(self.synapse_etc, "log.yaml"), homeservers.file_log_config(self.log_file))
        self._synapse_file(os.path.join(self.confd, "server_name.yaml"),
                           "# This file is autogenerated by the package's configuration.\n"
                           f"server_name: {self.server_name}\n")
        self._synapse_file(os.path.join(self.confd, "report_stats.yaml"), "report_stats: false\n")
        self._synapse_file(os.path.join(self.confd, "database.yaml"), {"database": {"name": "psycopg2", "args": {
            "user": self.synapse_role, "password": self.synapse_db_password, "dbname": self.synapse_db,
            "host": self.synapse_db_host, "port": self.fleet.pg.port, "cp_min": 1, "cp_max": 5}}})
        if self.spec.worker:
            self._synapse_file(os.path.join(self.synapse_etc, f"{WORKER_NAME}.log.yaml"),
                               homeservers.file_log_config(self.worker_log_file))
            self._synapse_file(self.worker_yaml, {
                "worker_app": "synapse.app.generic_worker",
                "worker_name": WORKER_NAME,
                "worker_listeners": [{"type": "http", "port": self.worker_port, "bind_addresses": ["127.0.0.1"],
                                      "x_forwarded": True, "resources": [{"names": ["client"]}]}],
                "worker_daemonize": True,
                "worker_pid_file": self.worker_pid_file,
                "worker_log_config": os.path.join(self.synapse_etc, f"{WORKER_NAME}.log.yaml"),
            })

    def _write_mas_config(self) -> None:
        """MAS's config as `mas-cli config generate` writes it (with `--synapse-config homeserver.yaml`
        on the SSO host whose MAS is on the same host), then the two things an operator sets: the database
        and the public URL. On MAS's own host, it is written there only, without --synapse-config: the run
        links it and provisions Synapse's provider with no manual step."""
        keys = []
        for args in (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                     ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                     ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
                     ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"]):
            pem = _private_key(*args)
            keys.append({"kid": _kid(), "key": pem})
            self.mas_key_markers.append(pem.splitlines()[2])  # a line of the key's body
        public = f"https://auth.{self.server_name}/"
        config = {
            "http": {
                "listeners": [
                    {"name": "web", "resources": [{"name": n} for n in
                                                  ("discovery", "human", "oauth", "compat", "graphql", "assets")],
                     "binds": [{"address": "[::]:8080"}], "proxy_protocol": False},
                    {"name": "internal", "resources": [{"name": "health"}],
                     "binds": [{"host": "localhost", "port": 8081}], "proxy_protocol": False},
                ],
                "trusted_proxies": ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/10", "127.0.0.1/8",
                                    "fd00::/8", "::1/128"],
                # Where MAS's stand-in answers, which clients (and the runbook's controller) reach; the issuer
                # is the https one .well-known publishes.
                "public_base": f"{self.mas_service.url}/",
                "issuer": public,
            },
            "database": {
                "uri": self.fleet.pg.tcp_uri(self.mas_db, self.mas_role, self.mas_db_password, host=self.mas_db_host),
                "max_connections": 10, "min_connections": 0, "connect_timeout": 30,
                "idle_timeout": 600, "max_lifetime": 1800,
            },
            "email": {"from": '"Authentication Service" <root@localhost>',
                      "reply_to": '"Authentication Service" <root@localhost>', "transport": "blackhole"},
            "secrets": {"encryption": self.mas_encryption, "keys": keys},
            "passwords": {"enabled": True, "schemes": [{"version": 1, "algorithm": "argon2id"}],
                          "minimum_complexity": 3},
            "matrix": {"kind": "synapse", "homeserver": "localhost:8008", "secret": self.mas_shared_secret,
                       "endpoint": "http://localhost:8008/"},
        }
        if self.spec.sso and not self.spec.mas_host:
            # What --synapse-config adds: Synapse's server name and URL, its password hashes as
            # scheme 1, its OIDC provider (synced into MAS's database in create()).
            config["matrix"]["homeserver"] = self.server_name
            config["matrix"]["endpoint"] = f"https://matrix.{self.server_name}/"
            config["passwords"]["schemes"] = [
                {"version": 1, "algorithm": "bcrypt", "cost": 12, "secret": homeservers.PEPPER,
                 "unicode_normalization": True},
                {"version": 2, "algorithm": "argon2id"}]
            config["upstream_oauth2"] = {"providers": [{
                "id": format_ulid(self.google_id), "synapse_idp_id": "oidc-google",
                "issuer": "https://accounts.google.invalid/", "human_name": "Google",
                "client_id": f"synapse-{self.name}", "client_secret": homeservers.OIDC_CLIENT_SECRET,
                "token_endpoint_auth_method": "client_secret_basic", "scope": "profile email",
                "discovery_mode": "disabled", "fetch_userinfo": True,
                "authorization_endpoint": "https://accounts.google.invalid/auth",
                "token_endpoint": "https://accounts.google.invalid/token",
                "userinfo_endpoint": "https://accounts.google.invalid/userinfo",
                "claims_imports": {"localpart": {"action": "require", "template": "{{ user.preferred_username }}"}},
            }]}
        if self.mas:
            # On MAS's own host, its database password is a file only that host has (MAS's password_file): the
            # runbook reads it there, never on the Synapse host, where the path does not exist.
            config["database"] = {
                "host": self.mas_db_host, "port": self.fleet.pg.port, "username": self.mas_role,
                "password_file": self.mas_db_password_file, "database": self.mas_db,
                **{k: v for k, v in config["database"].items() if k != "uri"}}
            _write(self.mas.seen(self.mas_db_password_file), self.mas_db_password + "\n", 0o600)
        _write(self.mas_yaml_seen, to_yaml(config), 0o600)

    def _write_well_known(self) -> None:
        import json

        _write(self.well_known, json.dumps({"m.homeserver": {"base_url": f"https://matrix.{self.server_name}"},
                                            "m.identity_server": {"base_url": "https://vector.im"},
                                            "io.element.e2ee": {"default": True}}, indent=2) + "\n")

    def stale_well_known(self) -> str:
        """A copy of .well-known in a web root nginx does not serve (fault injection: a wrong path)."""
        path = os.path.join(self.dir, "var", "www", "html-old", ".well-known", "matrix", "client")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy2(self.well_known, path)
        return path

    # -- processes --------------------------------------------------------------------------------

    def start_sshd(self) -> None:
        self.sshd.start()
        if self.mas:
            self.mas.sshd.start()

    def wait_sshd(self, timeout: float = 15.0) -> None:
        self.sshd.wait(timeout)
        if self.mas:
            self.mas.sshd.wait(timeout)

    def _as_synapse(self, module: str, *config_paths: str, options: str = "") -> str:
        """The command line that runs a Synapse process as Synapse's user, as a service unit would."""
        env = "env PGHOSTADDR=127.0.0.1 " if self.spec.uri_override else ""
        paths = " ".join(f"--config-path {p}" for p in (self.homeserver_yaml, self.confd + "/", *config_paths))
        return f"cd {self.data} && runuser -u {self.user} -- {env}{self.python} -m {module} {paths}{options}"

    @property
    def start_command(self) -> str:
        return self._as_synapse("synapse.app.homeserver", options=" --daemonize")

    @property
    def worker_start_command(self) -> str:
        return self._as_synapse("synapse.app.generic_worker", self.worker_yaml)

    @staticmethod
    def _stop_by_pid_file(pid_file: str) -> str:
        return (f"if [ -s {pid_file} ]; then pid=$(cat {pid_file}); kill $pid 2>/dev/null; "
                f"for i in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; "
                f"kill -9 $pid 2>/dev/null; rm -f {pid_file}; fi; true")

    @property
    def stop_command(self) -> str:
        return self._stop_by_pid_file(self.pid_file)

    @property
    def worker_stop_command(self) -> str:
        return self._stop_by_pid_file(self.worker_pid_file)

    def _pid(self, pid_file: str) -> int | None:
        try:
            with open(pid_file) as handle:
                pid = int(handle.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        return self._pid(self.pid_file)

    def worker_pid(self) -> int | None:
        return self._pid(self.worker_pid_file)

    def worker_healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.worker_url + "/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> None:
        """Starts Synapse (and its worker) as the operator's commands do, and waits until healthy."""
        if not self.healthy():
            proc = subprocess.run(self.start_command, shell=True, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                last = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
                raise RuntimeError(f"{self.name}: Synapse does not start: " + " / ".join(last))
            self.wait_healthy(timeout)
        if self.spec.worker and not self.worker_healthy():
            proc = subprocess.run(self.worker_start_command, shell=True, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{self.name}: the worker did not start: {proc.stdout}{proc.stderr}")
            deadline = time.monotonic() + timeout
            while not self.worker_healthy():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: the worker is not healthy:\n{self.read(self.worker_log_file)}")
                time.sleep(0.3)

    def stop(self) -> None:
        for pid_file in (self.worker_pid_file, self.pid_file):
            subprocess.run(self._stop_by_pid_file(pid_file), shell=True, check=False, capture_output=True)

    def stop_sshd(self) -> None:
        self.sshd.stop()
        if self.mas:
            self.mas.sshd.stop()

    def teardown(self) -> None:
        self.stop()
        self.mas_service.stop()
        self.stop_sshd()
        if self.user_created:
            for _attempt in range(20):  # until its last process has gone
                if accounts.run(["userdel", self.user], check=False, capture_output=True).returncode in (0, 6):
                    self.user_created = False
                    break
                time.sleep(0.25)
            else:
                raise RuntimeError(f"userdel {self.user} failed")

    @staticmethod
    def read(path: str, n: int = 40) -> str:
        try:
            with open(path) as handle:
                return "".join(handle.readlines()[-n:])
        except OSError:
            return f"(no {path})"

    def log_tail(self, n: int = 40) -> str:
        return self.read(self.log_file, n)

    # -- what the operator and the user see --------------------------------------------------------

    def config_files(self) -> list[str]:
        """Synapse's configuration as Synapse reads it: homeserver.yaml, then conf.d/*.yaml in name order."""
        confd = [os.path.join(self.confd, entry) for entry in os.listdir(self.confd)]
        return [self.homeserver_yaml, *sorted(p for p in confd if os.path.isfile(p) and p.endswith(".yaml"))]

    def effective_config(self) -> dict:
        """Synapse's merged configuration (later files replace top-level keys, as Synapse merges)."""
        merged: dict = {}
        for path in self.config_files():
            with open(path) as handle:
                merged.update(yaml.safe_load(handle) or {})
        return merged

    def mas_config(self) -> dict:
        with open(self.mas_yaml_seen) as handle:
            return yaml.safe_load(handle)

    def files(self, under: tuple = ("etc", "var/www", "var/lib/syn2mas", "var/backups")) -> dict:
        """Every file the runbook may touch, by path relative to the host: content hash, mode, owner."""
        found = {}
        # MAS's own host's files too, named `<its name>:<path there>` (calls.log is the stand-in mas-cli's own).
        roots = [("", self.dir)] + ([(self.mas.name + ":", self.mas.store)] if self.mas else [])
        for prefix, root in roots:
            for top in under:
                for parent, _dirs, names in os.walk(os.path.join(root, top)):  # .well-known too
                    for name in names:
                        path = os.path.join(parent, name)
                        if prefix and name == "calls.log":
                            continue
                        st = os.stat(path)
                        with open(path, "rb") as handle:
                            digest = hashlib.sha256(handle.read()).hexdigest()
                        found[prefix + os.path.relpath(path, root)] = (digest, oct(st.st_mode & 0o7777), st.st_uid,
                                                                       st.st_gid)
        return dict(sorted(found.items()))

    def inventory_vars(self) -> dict:
        """This host in the inventory, with the role variables the README and argument_specs document
        (and, where the roles have none yet, the names this shape needs: see the test module)."""
        hostvars = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.ssh_port,
            "syn2mas_synapse_config": [self.homeserver_yaml, self.confd + "/"],
            "syn2mas_mas_config": [self.mas_yaml],
            "syn2mas_mas_secret": self.mas_shared_secret,
            "syn2mas_mas_endpoint": f"{self.mas_service.url}/",
            "syn2mas_synapse_endpoint": f"{self.base_url}/",
            "syn2mas_synapse_health_url": f"{self.base_url}/health",
            "syn2mas_well_known_path": self.well_known,
            "syn2mas_well_known_url": self.well_known_url,
            "syn2mas_backup_dir": self.backup_dir,
            "syn2mas_state_file": self.state_file,
            "synapse_service_manager": "command",
            "synapse_service_start_command": self.start_command,
            "synapse_service_stop_command": self.stop_command,
            "synapse_service_start_timeout": 60,
            "synapse_service_stop_timeout": 15,
            # MAS's service (its stand-in holds MAS's database while it runs): stopped for the import.
            "mas_service_manager": "command",
            "mas_service_start_command": self.mas_service.start_command,
            "mas_service_stop_command": self.mas_service.stop_command,
            "mas_service_restart_command": self.mas_service.restart_command,
        }
        if self.spec.bare_python:
            hostvars["syn2mas_python"] = DEBIAN_PYTHON
        else:
            hostvars["syn2mas_synapse_python"] = self.python
        if not self.spec.in_place:
            hostvars["auth_delegation_override_path"] = self.override_path
        if self.spec.worker:
            hostvars["synapse_service_worker_start_command"] = self.worker_start_command
            hostvars["synapse_service_worker_stop_command"] = self.worker_stop_command
        if self.mas:
            hostvars["syn2mas_mas_host"] = self.mas.name
            hostvars["syn2mas_mas_cli"] = self.mas.cli
            hostvars["syn2mas_mas_backup_dir"] = self.mas.backup_dir
        if self.spec.uri_override:
            hostvars["syn2mas_synapse_database_uri"] = self.synapse_database_uri()
            hostvars["syn2mas_mas_database_uri"] = self.mas_database_uri()
        return hostvars


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    log: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class SshFleet:
    """The hosts, their sshd, Redis and nginx, the built collection and the inventory."""

    def __init__(self, pg: PgCluster, specs: list[HostSpec]):
        self.pg = pg
        self.base = tempfile.mkdtemp(prefix="syn2mas-ssh-", dir="/tmp")
        os.chmod(self.base, 0o755)  # Synapse's users walk through it
        self.controller = os.path.join(self.base, "controller")
        self.workdir = os.path.join(self.controller, "work")
        self.collections = os.path.join(self.controller, "collections")
        self.client_key = os.path.join(self.controller, "id_ed25519")
        self.known_hosts = os.path.join(self.controller, "known_hosts")
        self.authorized_keys = os.path.join(self.base, "authorized_keys")
        self.inventory = os.path.join(self.workdir, "inventory.yml")
        self.report_dir = os.path.join(self.workdir, "syn2mas-reports")
        self.admin_home = os.path.join(self.base, "home", ADMIN_USER)
        self.redis_port = homeservers.free_port()
        self.hosts = {spec.name: SshHost(self, spec) for spec in specs}
        self.nginx = homeservers.Nginx(self.base, list(self.hosts.values()))
        self.redis_proc: subprocess.Popen | None = None
        self.admin_created = False
        self.runs = 0
        self.timings: dict = {}
        self.pristine: dict = {}

    def secrets(self) -> list[str]:
        found = [homeservers.PEPPER, homeservers.OIDC_CLIENT_SECRET, *homeservers.PASSWORDS.values()]
        for hs in self.hosts.values():
            found.extend(hs.secrets())
        return found

    # -- set-up -----------------------------------------------------------------------------------

    def _timed(self, what: str, func, *args):
        started = time.monotonic()
        result = func(*args)
        self.timings[what] = round(time.monotonic() - started, 1)
        return result

    def setup(self) -> "SshFleet":
        missing = missing_prerequisites(any(h.spec.worker for h in self.hosts.values()))
        if missing:
            raise RuntimeError("the SSH fleet needs: " + "; ".join(missing) + " (run scripts/setup.sh)")
        for d in (self.controller, self.workdir):
            _mkdir(d, 0o700)
        self._timed("collection build and install", self.install_collection)
        self._timed("admin user and keys", self._create_admin)
        if any(h.spec.worker for h in self.hosts.values()):
            self._start_redis()
        self._timed("accounts and databases", lambda: [hs.create_accounts() for hs in self.hosts.values()])
        with ThreadPoolExecutor(max_workers=4) as pool:
            self._timed("host files", lambda: list(pool.map(lambda hs: hs.create(), self.hosts.values())))
        self._timed("signing keys", self._signing_keys)
        for hs in self.hosts.values():
            hs.start_sshd()
        for hs in self.hosts.values():
            hs.wait_sshd()
        for hs in self.hosts.values():
            if hs.mas:  # MAS's host sees its config's path in its own mount namespace only
                hs.mas_service.command_prefix = ["nsenter", "-t", str(hs.mas.sshd.proc.pid), "-m", "--"]
            hs.mas_service.start()
        self._timed("Synapse started", self.start_all)
        with ThreadPoolExecutor(max_workers=3) as pool:
            self._timed("populated", lambda: list(pool.map(
                lambda hs: hs.expected.update(hs.populate(sso=hs.spec.sso)), self.hosts.values())))
        self.nginx.start()
        with open(self.known_hosts, "w") as handle:
            for hs in self.hosts.values():
                handle.write(f"[127.0.0.1]:{hs.ssh_port} {hs.host_key}\n")
                if hs.mas:
                    handle.write(f"[127.0.0.1]:{hs.mas.sshd.port} {hs.mas.sshd.host_key}\n")
        self.write_inventory()
        return self

    def install_collection(self) -> str:
        """`ansible-galaxy collection build` of this checkout's files (those git tracks or would track:
        not the ignored virtualenvs), then `ansible-galaxy collection install` into a clean path."""
        src = os.path.join(self.controller, "src", "syn2mas")
        listed = _run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
        for rel in sorted(set(filter(None, listed.split("\0")))):
            path = os.path.join(ROOT, rel)
            if os.path.isfile(path) and not os.path.islink(path):
                os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
                shutil.copy2(path, os.path.join(src, rel))
        galaxy = os.path.join(CONTROLLER_VENV, "bin", "ansible-galaxy")
        dist = os.path.join(self.controller, "dist")
        env = self.ansible_env()
        _run([galaxy, "collection", "build", "--output-path", dist, src], env=env, cwd=self.workdir)
        tarballs = glob.glob(os.path.join(dist, "matrix-syn2mas-*.tar.gz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"ansible-galaxy collection build made {tarballs}")
        self.tarball = tarballs[0]
        _run([galaxy, "collection", "install", "--offline", "-p", self.collections, self.tarball],
             env=env, cwd=self.workdir)
        return self.tarball

    def _signing_keys(self) -> None:
        """Each Synapse's signing key, made by Synapse's own library as `--generate-keys` makes it (one
        process for the fleet), owned by Synapse's user."""
        keys = {hs.name: os.path.join(hs.synapse_etc, "homeserver.signing.key") for hs in self.hosts.values()}
        script = ("import json, secrets, sys\nfrom signedjson.key import generate_signing_key, write_signing_keys\n"
                  "for path in json.loads(sys.argv[1]):\n"
                  "    with open(path, 'w') as handle:\n"
                  "        write_signing_keys(handle, [generate_signing_key('a_' + secrets.token_hex(2))])\n")
        import json

        _run([os.path.join(SYNAPSE_VENV, "bin", "python"), "-c", script, json.dumps(list(keys.values()))])
        for name, path in keys.items():
            user = self.hosts[name].user
            shutil.chown(path, user, user)
            os.chmod(path, 0o600)

    def _create_admin(self) -> None:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "syn2mas-controller", "-f", self.client_key])
        with open(self.client_key + ".pub") as handle:
            _write(self.authorized_keys, handle.read())
        try:
            pwd.getpwnam(ADMIN_USER)
        except KeyError:
            os.makedirs(os.path.dirname(self.admin_home), exist_ok=True)
            os.chmod(os.path.dirname(self.admin_home), 0o755)
            _run(["useradd", "--create-home", "--home-dir", self.admin_home, "--shell", "/bin/sh", ADMIN_USER])
        self.admin_created = True
        # No password, but not locked either (sshd without PAM refuses locked accounts).
        _run(["usermod", "--password", "*", ADMIN_USER])
        _write(SUDOERS_FILE, f"{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL\n", 0o440)
        _run(["visudo", "-c", "-q", "-f", SUDOERS_FILE])
        # sshd's privilege separation directory, made by the package's service script otherwise.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def _start_redis(self) -> None:
        redis_dir = _mkdir(os.path.join(self.base, "redis"), 0o700)
        self.redis_proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", redis_dir, "--logfile", os.path.join(redis_dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_all(self) -> None:
        """Every Synapse (and worker) started and healthy; several start at once."""
        for hs in self.hosts.values():
            if not hs.healthy():
                subprocess.run(hs.start_command, shell=True, check=False, capture_output=True)
        for hs in self.hosts.values():
            hs.start()

    @staticmethod
    def _pristine_roots(hs: SshHost) -> list:
        """(name, directory) of each host of a homeserver whose configs heal() restores: its MAS host's too."""
        return [(hs.name, hs.dir)] + ([(hs.mas.name, hs.mas.store)] if hs.mas else [])

    def keep_pristine(self) -> None:
        """A copy of every host's configs and web root as set up (owners and modes kept), for heal()."""
        for hs in self.hosts.values():
            self.pristine[hs.name] = hs.files(PRISTINE)
            for name, root in self._pristine_roots(hs):
                for top in PRISTINE:
                    if not os.path.exists(os.path.join(root, top)):
                        continue
                    dest = os.path.join(self.base, "pristine", name, top)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    _run(["cp", "-a", os.path.join(root, top), dest])

    def _restore_pristine(self, hs: SshHost) -> None:
        for name, root in self._pristine_roots(hs):
            for top in PRISTINE:
                if not os.path.exists(os.path.join(self.base, "pristine", name, top)):
                    continue
                shutil.rmtree(os.path.join(root, top))
                _run(["cp", "-a", os.path.join(self.base, "pristine", name, top), os.path.join(root, top)])
        if os.path.exists(hs.state_file):
            os.unlink(hs.state_file)

    def heal(self, restore: bool = False) -> list[str]:
        """Starts whatever is down, as an operator would before the next step (an earlier step may
        have left it down). With `restore` (before the migration), a host whose configs or web root
        differ from their state before any run, or whose Synapse cannot start, first gets them back
        (keep_pristine) and loses its state record: the operator's own way back to legacy.
        Returns what the next step must fail on: the hosts whose Synapse still cannot be started, and
        why, and (with `restore`) the files an earlier step left changed, which no step before the
        migration may do (each either changes nothing or is rolled back)."""
        done, broken, left_changed = [], [], []
        for hs in self.hosts.values():
            if restore:
                now, pristine = hs.files(PRISTINE), self.pristine[hs.name]
                changed = sorted(p for p in set(now) | set(pristine) if now.get(p) != pristine.get(p))
                if changed:
                    left_changed.append(f"{hs.name}: an earlier step left files changed: {changed} "
                                        "(restored as before any run)")
                    hs.stop()
                    self._restore_pristine(hs)
                    done.append(f"{hs.name}: configs restored as before any run")
            if hs.healthy() and (not hs.spec.worker or hs.worker_healthy()):
                continue
            try:
                hs.start()
                done.append(f"{hs.name}: started")
            except RuntimeError as exc:
                if not restore:
                    broken.append(str(exc))
                    continue
                self._restore_pristine(hs)
                try:
                    hs.start()
                    done.append(f"{hs.name}: restored as before any run, started ({exc})")
                except RuntimeError as again:
                    broken.append(str(again))
        if done or broken:
            print("\nheal: " + "; ".join(done + broken), file=sys.stderr)
        return [f"left unstartable by an earlier step: {why}" for why in broken] + left_changed

    # -- the inventory and the playbooks -----------------------------------------------------------

    def ssh(self, name: str, command: str) -> subprocess.CompletedProcess:
        """`command` on host `name` (a Synapse host, or a MAS host) over SSH as the admin user, as the
        controller connects."""
        ports = {hs.name: hs.ssh_port for hs in self.hosts.values()}
        ports.update({hs.mas.name: hs.mas.sshd.port for hs in self.hosts.values() if hs.mas})
        return subprocess.run(
            ["ssh", "-i", self.client_key, "-p", str(ports[name]), "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{ADMIN_USER}@127.0.0.1", command],
            capture_output=True, text=True, timeout=60, check=False)

    def write_inventory(self, overrides: dict | None = None) -> None:
        overrides = overrides or {}
        # The MAS hosts are in the inventory (tasks are delegated to them), outside the group the playbooks run on.
        mas_hosts = {hs.mas.name: {"ansible_host": "127.0.0.1", "ansible_port": hs.mas.sshd.port}
                     for hs in self.hosts.values() if hs.mas}
        inventory = {"all": {
            "vars": {
                "ansible_user": ADMIN_USER,
                "ansible_ssh_private_key_file": self.client_key,
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
                "ansible_become": True,
                "ansible_python_interpreter": DEBIAN_PYTHON,
                "syn2mas_report_dir": self.report_dir,
            },
            "children": {
                "synapse": {"hosts": {name: {**hs.inventory_vars(), **overrides.get(name, {})}
                                      for name, hs in self.hosts.items()}},
                **({"mas": {"hosts": mas_hosts}} if mas_hosts else {}),
            }}}
        _write(self.inventory, to_yaml(inventory), 0o600)

    def ansible_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VIRTUAL_ENV", "PYTHON"))}
        env.update({
            "PATH": os.path.join(CONTROLLER_VENV, "bin") + os.pathsep + "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "ANSIBLE_COLLECTIONS_PATH": self.collections,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": os.path.join(self.controller, "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(self.controller, "cp"),
        })
        return env

    def playbook(self, name: str, *args: str, limit: str | None = None, timeout: int = 1200,
                 pipelining: bool = True) -> PlaybookRun:
        """`ansible-playbook -i inventory.yml matrix.syn2mas.<name> ...` from the controller venv, in a
        working directory without ansible.cfg; the output is kept in controller/runs/.

        With `pipelining` (ANSIBLE_PIPELINING=1, the one setting the runs add to ansible's defaults; operators
        commonly set it too, sudo here has no requiretty) each task is one SSH exchange instead of a temporary
        directory, an SFTP upload and a cleanup. `pipelining=False` runs
        with ansible's defaults exactly, as a controller without any configuration does (the real migration)."""
        self.runs += 1
        cmd = [os.path.join(CONTROLLER_VENV, "bin", "ansible-playbook"), "-i", "inventory.yml", "--forks", "10",
               f"matrix.syn2mas.{name}", *args]
        if limit:
            cmd += ["--limit", limit]
        env = self.ansible_env()
        if pipelining:
            env["ANSIBLE_PIPELINING"] = "1"
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
        seconds = round(time.monotonic() - started, 1)
        log = os.path.join(self.controller, "runs", f"{self.runs:02d}-{name}.log")
        _write(log, f"$ {' '.join(cmd)}\n# rc={proc.returncode} in {seconds}s\n{proc.stdout}\n--- stderr\n{proc.stderr}",
               0o600)
        self.timings[f"run {self.runs:02d} {name} {' '.join(args)}".strip()] = seconds
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, seconds, log)

    # -- teardown ---------------------------------------------------------------------------------

    def close_connections(self) -> None:
        """Ends the controller's persistent SSH connections (ControlPersist masters)."""
        for sock in glob.glob(os.path.join(self.controller, "cp", "*")):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "syn2mas-test-host"],
                           check=False, capture_output=True, timeout=10)

    def teardown(self) -> None:
        errors = []
        self.close_connections()
        for hs in self.hosts.values():
            try:
                hs.teardown()
            except Exception as exc:  # pragma: no cover - best effort, keep going
                errors.append(f"{hs.name}: {exc}")
        self.nginx.stop()
        if self.redis_proc and self.redis_proc.poll() is None:
            self.redis_proc.send_signal(signal.SIGTERM)
            try:
                self.redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
        if self.admin_created:
            for _attempt in range(20):  # until the last session process has gone
                if accounts.run(["userdel", ADMIN_USER], check=False, capture_output=True).returncode in (0, 6):
                    self.admin_created = False
                    break
                time.sleep(0.25)
            else:
                errors.append(f"userdel {ADMIN_USER} failed")
        if os.path.exists(SUDOERS_FILE):
            os.unlink(SUDOERS_FILE)
        for hs in self.hosts.values():
            for db in (hs.synapse_db, hs.mas_db):
                try:
                    self.pg.drop_database(db)
                except Exception as exc:  # pragma: no cover
                    errors.append(f"drop {db}: {exc}")
            for role in (hs.synapse_role, hs.mas_role):
                try:
                    self.pg.drop_role(role)
                except Exception as exc:  # pragma: no cover
                    errors.append(f"drop role {role}: {exc}")
        if os.environ.get("SYN2MAS_KEEP_FLEET"):
            print(f"kept {self.base}", file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
        if errors:
            print("ssh fleet teardown: " + "; ".join(errors), file=sys.stderr)


DEFAULT_SPECS = [
    HostSpec("hs1", sso=True, in_place=True, mas_host=True),
    HostSpec("hs2", worker=True),
    HostSpec("hs3", uri_override=True),
    HostSpec("hs4"),
    HostSpec("hs5"),
    HostSpec("hs6", bare_python=True),
]


if __name__ == "__main__":  # manual debugging: python -m tests.support.ssh_fleet (Ctrl-C tears it down)
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    from . import pgcluster

    cluster = pgcluster.start_cluster()
    fleet = SshFleet(cluster, DEFAULT_SPECS)
    try:
        fleet.setup()
        print(fleet.workdir, fleet.timings, flush=True)
        while True:
            time.sleep(3600)
    finally:
        fleet.teardown()
        cluster.stop()
