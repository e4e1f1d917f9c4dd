"""A STAND-IN FOR MAS's service (no MAS binary can be had on this machine), one for every test.

It runs as a process of its own, started, stopped and restarted by shell commands as an operator's service
manager does (`start_command`, `stop_command`, `restart_command`: what the mas_service role's `command`
manager runs), with a pid file. It answers what the runbook and the tests ask MAS over HTTP, in MAS's shape:
- GET /health: 200;
- GET /.well-known/openid-configuration: the issuer MAS's config declares (http.issuer, else
  http.public_base), with the endpoints MAS's discovery document names;
- GET /_matrix/client/v3/login (any version): MAS's compatibility layer's flows (m.login.password when
  passwords are enabled, the delegated m.login.sso, m.login.token);
- POST .../login, .../logout, .../refresh: answers of the compatibility layer's shape (a login it does not
  check, an unknown refresh token), enough for the reverse proxy's routing tests, no more.

Like MAS, it reads its config only when it starts (`starts` counts the starts and `fingerprint` is the
sha256 of the config it read, so a test can tell that MAS was restarted once after its config changed), and
while it runs it holds a connection to MAS's database (the config's `database` section), as MAS's
connection pool does: a MAS that cannot reach its database does not start. It records every request
(method, path), so a test can tell what reached MAS.

Without a config (`issuer` only) it serves that issuer and has no database: the advisor's tests use it so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

THIS_FILE = os.path.abspath(__file__)
COMPAT_FLOWS_SSO = {"type": "m.login.sso", "oauth_aware_preferred": True,
                    "org.matrix.msc3824.delegated_oidc_compatibility": True}
APPLICATION_NAME = "matrix-authentication-service (stand-in)"
START_TIMEOUT = 15.0


class MasStandIn:
    """STANDS IN FOR MAS: a process listening on 127.0.0.1:`port` (a free one by default) that serves what
    the config at `config_path` declares (or `issuer`, without a config). Its files (settings, pid file,
    request log, start log) are in `state_dir`."""

    def __init__(self, config_path: str | None = None, issuer: str = "https://auth.example.test/",
                 port: int | None = None, state_dir: str | None = None, database_uri: str | None = None):
        self.config_path = config_path
        if port is None:
            from .net import free_port  # here, not at the top: the service itself runs as a script
            port = free_port()
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="mas-stand-in-")
        os.makedirs(self.state_dir, exist_ok=True)
        with open(os.path.join(self.state_dir, "settings.json"), "w") as handle:
            # database_uri: MAS's database as MAS's own network resolves the config's host (e.g. a
            # container's service name this machine cannot resolve), as the operator gives it to the runbook.
            json.dump({"config_path": config_path, "issuer": issuer, "port": self.port, "database_uri": database_uri},
                      handle)
        base = f"{shlex.quote(sys.executable)} {shlex.quote(THIS_FILE)}"
        self.start_command = f"{base} start {shlex.quote(self.state_dir)}"
        self.stop_command = f"{base} stop {shlex.quote(self.state_dir)}"
        self.restart_command = f"{base} restart {shlex.quote(self.state_dir)}"

    def failing_start_command(self, answers: int) -> str:
        """A start command whose MAS fails (503 to everything) after `answers` answers (fault injection)."""
        return f"{self.start_command} --fail-after {int(answers)}"

    # -- the service, as its manager drives it ------------------------------------------------------

    # How the test itself starts and stops it (the role runs the commands above on MAS's host): an argv
    # prefix, e.g. nsenter into the mount namespace of the host MAS's config is on.
    command_prefix: tuple = ()

    def _run(self, action: str) -> None:
        subprocess.run(list(self.command_prefix) + [sys.executable, THIS_FILE, action, self.state_dir], check=True,
                       timeout=60)

    def start(self) -> "MasStandIn":
        self._run("start")
        return self

    def stop(self) -> None:
        self._run("stop")

    def restart(self) -> None:
        self._run("restart")

    def pid(self) -> int | None:
        return _running_pid(self.state_dir)

    @property
    def running(self) -> bool:
        return self.pid() is not None

    @property
    def starts(self) -> int:
        return int(_read(os.path.join(self.state_dir, "starts")) or 0)

    @property
    def fingerprint(self) -> str | None:
        """sha256 of the config the running MAS read when it started."""
        return _read(os.path.join(self.state_dir, "fingerprint")) or None

    def fail_after(self, answers: int | None) -> None:
        """Fault injection: after `answers` more answers, MAS fails (503 to everything) as a MAS that went
        down behind its proxy does; None: it answers again."""
        _set_fault(self.state_dir, answers)

    @property
    def requests(self) -> list:
        """Every request that reached MAS since the last clear_requests(): (method, path)."""
        text = _read(os.path.join(self.state_dir, "requests.jsonl"))
        return [tuple(json.loads(line)) for line in text.splitlines() if line.strip()]

    def clear_requests(self) -> None:
        open(os.path.join(self.state_dir, "requests.jsonl"), "w").close()

    def log_tail(self) -> str:
        return _read(os.path.join(self.state_dir, "mas.log"))[-3000:]

    def __enter__(self) -> "MasStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the process -------------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip() if not path.endswith(".jsonl") else handle.read()
    except FileNotFoundError:
        return ""


def _set_fault(state_dir: str, answers: int | None) -> None:
    """MAS fails (503) after `answers` more answers; None: it keeps answering."""
    path = os.path.join(state_dir, "answers_left")
    if answers is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        with open(path, "w") as handle:
            handle.write(str(answers))


def _running_pid(state_dir: str) -> int | None:
    text = _read(os.path.join(state_dir, "pid"))
    if not text:
        return None
    try:
        os.kill(int(text), 0)
    except (ProcessLookupError, ValueError):
        return None
    except PermissionError:
        pass
    return int(text)


def _database_dsn(config: dict) -> str | None:
    """MAS's database as its config names it: `uri`, else the separate fields (as MAS reads them)."""
    db = config.get("database") or {}
    if not db:
        return None
    if db.get("uri"):
        return db["uri"]
    password = db.get("password")
    if password is None and db.get("password_file"):  # read where MAS runs, as MAS reads it
        with open(db["password_file"]) as handle:
            password = handle.read().strip()
    parts = {"host": db.get("host") or db.get("socket"), "port": db.get("port"), "user": db.get("username"),
             "password": password, "dbname": db.get("database")}
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in parts.items() if v not in (None, ""))


class _Service:
    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        with open(os.path.join(state_dir, "settings.json")) as handle:
            settings = json.load(handle)
        self.issuer, self.passwords, self.connection = settings["issuer"], True, None
        self.lock = threading.Lock()
        raw = b""
        if settings.get("config_path"):
            with open(settings["config_path"], "rb") as handle:
                raw = handle.read()
            config = yaml.safe_load(raw) or {}
            http = config.get("http") or {}
            self.issuer = http.get("issuer") or http.get("public_base") or self.issuer
            self.passwords = bool((config.get("passwords") or {}).get("enabled", True))
            dsn = settings.get("database_uri") or _database_dsn(config)
            if dsn:
                import psycopg2  # MAS's connection pool: one connection held while it runs
                self.connection = psycopg2.connect(dsn, application_name=APPLICATION_NAME, connect_timeout=10)
                self.connection.autocommit = True
        self.fingerprint = hashlib.sha256(raw).hexdigest()
        self.port = settings["port"]

    def discovery(self) -> dict:
        base = self.issuer.rstrip("/")
        return {"issuer": self.issuer, "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/oauth2/token", "jwks_uri": f"{base}/oauth2/keys.json",
                "registration_endpoint": f"{base}/oauth2/registration",
                "introspection_endpoint": f"{base}/oauth2/introspect",
                "revocation_endpoint": f"{base}/oauth2/revoke", "account_management_uri": f"{base}/account/",
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"]}

    def _fault(self) -> bool:
        """True when the injected fault says MAS is down now (see MasStandIn.fail_after)."""
        path = os.path.join(self.state_dir, "answers_left")
        with self.lock:
            text = _read(path)
            if not text:
                return False
            left = int(text)
            if left <= 0:
                return True
            with open(path, "w") as handle:
                handle.write(str(left - 1))
            return False

    def answer(self, method: str, path: str) -> tuple:
        with self.lock, open(os.path.join(self.state_dir, "requests.jsonl"), "a") as handle:
            handle.write(json.dumps([method, path]) + "\n")
        if self._fault():
            return 503, {"errcode": "M_UNKNOWN", "error": "stand-in: MAS is down"}
        route = path.split("?")[0]
        if method == "GET" and route == "/health":
            return 200, None
        if method == "GET" and route == "/.well-known/openid-configuration":
            return 200, self.discovery()
        last = route.rstrip("/").rsplit("/", 1)[-1]
        if route.startswith("/_matrix/client/"):
            if last == "login" and method == "GET":
                flows = ([{"type": "m.login.password"}] if self.passwords else []) + [
                    COMPAT_FLOWS_SSO, {"type": "m.login.token"}]
                return 200, {"flows": flows}
            if last == "refresh":
                return 401, {"errcode": "M_UNKNOWN_TOKEN", "error": "stand-in: unknown refresh token"}
            if last == "login":
                return 200, {"user_id": "@standin:x", "access_token": "stand-in"}
            if last == "logout":
                return 200, {}
        return 404, {"errcode": "M_NOT_FOUND", "error": "stand-in: not a route of MAS's"}

    def serve(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, body = service.answer(self.command, self.path)
                raw = b"ok" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if body is None else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        starts = int(_read(os.path.join(self.state_dir, "starts")) or 0) + 1
        for name, value in (("starts", starts), ("fingerprint", self.fingerprint), ("pid", os.getpid())):
            with open(os.path.join(self.state_dir, name), "w") as handle:
                handle.write(str(value))
        try:
            server.serve_forever()
        finally:
            server.server_close()
            if self.connection is not None:
                self.connection.close()
            os.unlink(os.path.join(self.state_dir, "pid"))


def _start(state_dir: str, fail_after: int | None = None) -> int:
    if _running_pid(state_dir):
        return 0  # already running: a start changes nothing (as systemctl start)
    # A fresh process answers; `--fail-after N` (fault injection) makes this one fail after N answers.
    _set_fault(state_dir, fail_after)
    log = open(os.path.join(state_dir, "mas.log"), "a")
    proc = subprocess.Popen([sys.executable, THIS_FILE, "serve", state_dir], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _read(os.path.join(state_dir, "pid")) == str(proc.pid):
            return 0
        if proc.poll() is not None:
            sys.stderr.write(f"MAS (stand-in) did not start: {_read(os.path.join(state_dir, 'mas.log'))[-1500:]}\n")
            return 1
        time.sleep(0.05)
    proc.kill()
    sys.stderr.write("MAS (stand-in) did not start within its timeout\n")
    return 1


def _stop(state_dir: str) -> int:
    pid = _running_pid(state_dir)
    if pid is None:
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and _running_pid(state_dir) == pid:
        time.sleep(0.05)
    if _running_pid(state_dir) == pid:
        os.kill(pid, signal.SIGKILL)
        os.unlink(os.path.join(state_dir, "pid"))
    return 0


def main(argv: list) -> int:
    action, state_dir = argv[1], argv[2]
    if action == "serve":
        _Service(state_dir).serve()
        return 0
    if action == "start":
        return _start(state_dir, int(argv[4]) if argv[3:4] == ["--fail-after"] else None)
    if action == "stop":
        return _stop(state_dir)
    if action == "restart":
        _stop(state_dir)
        return _start(state_dir)
    sys.stderr.write(f"usage: {argv[0]} start|stop|restart|serve STATE_DIR [--fail-after N]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
