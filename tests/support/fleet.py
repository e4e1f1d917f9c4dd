"""A fleet of real homeservers on this machine for the runbook playbooks: N Synapse servers (own port,
config dir, databases in one test cluster), their MAS databases, a MAS stand-in per homeserver (MAS
itself cannot run here: tests/support/mas_stand_in.py) answering where the inventory says MAS is, nginx
serving each .well-known, and an inventory with the local connection and operator-given start/stop
commands. With `mas_https`, MAS's public URL (http.public_base) is an HTTPS one on this machine's name, nginx in
front of the stand-in with a throwaway certificate that the fleet's playbook runs trust (tests/support/tls.py)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile

import yaml

from . import homeservers, pgcluster, tls
from .mas_stand_in import MasStandIn
from .net import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")


class Fleet:
    def __init__(self, names=("hs1", "hs2", "hs3"), versions=None, pg=None, mas_https=False):
        self.own_pg = pg is None
        self.pg = pg or pgcluster.start_cluster()
        self.base = tempfile.mkdtemp(prefix="syn2mas-fleet-")
        versions = versions or {}
        self.hosts = {}
        self.tls = None
        fronts = []
        if mas_https:
            # A name the controller resolves that is not loopback's own (which the advisor's mas_public_base check
            # warns about, as it does about plain HTTP): this machine's.
            hostname = socket.gethostname()
            try:
                address = socket.gethostbyname(hostname)
            except OSError as exc:
                raise RuntimeError(f"MAS's HTTPS public URL is on this machine's name, {hostname!r}, which does not "
                                   f"resolve here ({exc}): give it an address in /etc/hosts") from exc
            self.tls = dict(tls.throwaway_certificate(os.path.join(self.base, "tls"), hostname),
                            hostname=hostname, address=address)
        for n in names:
            extra = {"synapse_version": versions[n]} if n in versions else {}
            port = free_port() if self.tls else None
            if port:
                extra["mas_public_base"] = f"https://{self.tls['hostname']}:{port}/"
            self.hosts[n] = hs = homeservers.Homeserver(self.pg, n, self.base, **extra)
            if port:
                fronts.append({"address": self.tls["address"], "port": port, "certificate": self.tls["certificate"],
                               "key": self.tls["key"], "upstream": f"http://127.0.0.1:{hs.mas_port}"})
        self.nginx = homeservers.Nginx(self.base, list(self.hosts.values()), fronts)
        # MAS, answering from before the run (the runbook does not stop Synapse while MAS does not answer).
        self.mas = {n: MasStandIn(hs.mas_yaml, port=hs.mas_port, state_dir=os.path.join(self.base, f"mas-{n}"))
                    for n, hs in self.hosts.items()}
        self.inventory = os.path.join(self.base, "inventory.yml")
        self.report_dir = os.path.join(self.base, "reports")
        self.expected: dict = {}

    def setup(self) -> "Fleet":
        for hs in self.hosts.values():
            hs.create()
        for mas in self.mas.values():
            mas.start()
        for hs in self.hosts.values():
            hs.start()
        for name, hs in self.hosts.items():
            self.expected[name] = hs.populate()
        self.nginx.start()
        self.write_inventory()
        return self

    def host_vars(self, hs: homeservers.Homeserver) -> dict:
        return {
            "syn2mas_synapse_config": [hs.homeserver_yaml],
            "syn2mas_mas_config": [hs.mas_yaml],
            "syn2mas_mas_secret": homeservers.MAS_SHARED_SECRET,
            "syn2mas_mas_endpoint": f"{self.mas[hs.name].url}/",
            "syn2mas_synapse_endpoint": f"{hs.base_url}/",
            "syn2mas_synapse_health_url": f"{hs.base_url}/health",
            "syn2mas_synapse_python": hs.python,
            # The lab's interpreter, given as an operator would: this fleet is about the runbook's steps;
            # finding Synapse's own Python is tested by test_runtime_discovery and the SSH fleet.
            "syn2mas_python": VENV_PYTHON,
            "syn2mas_well_known_path": hs.well_known,
            "syn2mas_well_known_url": hs.well_known_url,
            "syn2mas_backup_dir": os.path.join(hs.dir, "backups"),
            "syn2mas_state_file": os.path.join(hs.dir, "state", "state.json"),
            "synapse_service_manager": "command",
            "synapse_service_start_command": hs.start_command,
            "synapse_service_stop_command": hs.stop_command,
            "synapse_service_start_timeout": 90,
            "synapse_service_stop_timeout": 60,
            # MAS's service (its stand-in), run by commands as an operator's service manager runs it.
            "mas_service_manager": "command",
            "mas_service_start_command": self.mas[hs.name].start_command,
            "mas_service_stop_command": self.mas[hs.name].stop_command,
            "mas_service_restart_command": self.mas[hs.name].restart_command,
            "mas_service_start_timeout": 30,
            "mas_service_stop_timeout": 30,
        }

    def write_inventory(self, overrides: dict | None = None) -> None:
        overrides = overrides or {}
        inventory = {"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": VENV_PYTHON,
                     "syn2mas_report_dir": self.report_dir},
            "children": {"synapse": {"hosts": {
                name: {**self.host_vars(hs), **overrides.get(name, {})} for name, hs in self.hosts.items()}}},
        }}
        with open(self.inventory, "w") as handle:
            yaml.safe_dump(inventory, handle, sort_keys=False)

    def playbook(self, name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        cmd = [PLAYBOOK, "-i", self.inventory, os.path.join(ROOT, "playbooks", name), *args]
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_PIPELINING="1",
                   PATH=os.path.dirname(VENV_PYTHON) + os.pathsep + os.environ.get("PATH", ""))
        if self.tls:  # the controller trusts the throwaway CA of MAS's public URL, for these runs only
            env["SSL_CERT_FILE"] = self.tls["ca"]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout, check=False)

    def teardown(self) -> None:
        for hs in self.hosts.values():
            try:
                hs.stop()
            except Exception:  # pragma: no cover - best effort
                pass
        self.nginx.stop()
        for mas in self.mas.values():
            try:
                mas.stop()
            except Exception:  # pragma: no cover - best effort
                pass
        if self.own_pg:
            self.pg.stop()


@contextlib.contextmanager
def running_fleet(pg, names, versions=None):
    """A set-up Fleet on the session's cluster, torn down afterwards with its databases (a MAS database a
    test renamed away included)."""
    fleet = Fleet(names=names, versions=versions, pg=pg)
    try:
        fleet.setup()
        yield fleet
    finally:
        fleet.teardown()
        for hs in fleet.hosts.values():
            for name in (hs.synapse_db, hs.mas_db, hs.mas_db + "_gone"):
                pg.drop_database(name)


# -- what the runbook tests read off a fleet (tests/integration/test_runbook_e2e.py and
# test_runbook_rollbacks_e2e.py, each on a fleet of its own) ---------------------------------------


def snapshot(fleet: Fleet, names=None) -> dict:
    """Every file under each homeserver's directory (configs, web root, state, backups) by hash, plus a
    dump of each database and the running Synapse's pid."""
    state = {}
    for name, hs in fleet.hosts.items():
        if names is not None and name not in names:
            continue
        files = {}
        for path in sorted(glob.glob(os.path.join(hs.dir, "**"), recursive=True)):
            if os.path.isfile(path) and not path.endswith((".log", ".pid")) and "/media/" not in path:
                with open(path, "rb") as handle:
                    files[os.path.relpath(path, hs.dir)] = hashlib.sha256(handle.read()).hexdigest()
        state[name] = {"files": files, "pid": hs.pid(),
                       "mas": fleet.pg.dump(hs.mas_db), "synapse_users": fleet.pg.execute(
                           "SELECT name, password_hash, deactivated FROM users ORDER BY name", hs.synapse_db)}
    return state


def host_state(hs) -> str:
    """The state record, as syn2mas_state reads it (no file yet: legacy)."""
    path = os.path.join(hs.dir, "state", "state.json")
    if not os.path.exists(path):
        return "legacy"
    with open(path) as handle:
        return json.load(handle)["state"]


def host_configs(hs) -> dict:
    """The configuration files a run edits on `hs`: homeserver.yaml, and MAS's config (edited in the preparation,
    before Synapse stops: a rollback puts both back)."""
    return {path: open(path, "rb").read() for path in (hs.homeserver_yaml, hs.mas_yaml)}


def assert_back_on_legacy_auth(fleet, hs, configs_before: dict) -> None:
    """`hs` after a rollback: its homeserver.yaml and MAS's config as before, its state `legacy`, Synapse healthy,
    and a password login answered by Synapse itself (that login makes one more device)."""
    assert host_configs(hs) == configs_before
    assert host_state(hs) == "legacy"
    assert hs.healthy(), hs.log_tail()
    status, body = hs.login("alice", homeservers.PASSWORDS["alice"])
    assert status == 200, body
    fleet.expected[hs.name]["devices"] += 1


if __name__ == "__main__":  # manual debugging: python -m tests.support.fleet (Ctrl-C tears it down)
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    fleet = Fleet().setup()
    print(fleet.inventory, flush=True)
    try:
        import time
        while True:
            time.sleep(3600)
    finally:
        fleet.teardown()
