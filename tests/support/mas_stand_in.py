"""A STAND-IN FOR MAS's HTTP service (no MAS binary can be had on this machine), one for every test.

It answers what the runbook and the tests ask MAS over HTTP, in MAS's shape:
- GET /health: 200;
- GET /.well-known/openid-configuration: the issuer MAS's config declares (http.issuer, else
  http.public_base), with the endpoints MAS's discovery document names;
- GET /_matrix/client/v3/login (any version): MAS's compatibility layer's flows (m.login.password when
  passwords are enabled, the delegated m.login.sso, m.login.token);
- POST .../login, .../logout, .../refresh: answers of the compatibility layer's shape (a login it does not
  check, an unknown refresh token), enough for the reverse proxy's routing tests, no more.

Like MAS, it reads its config only when it starts: `restart()` re-reads it, and `starts` counts the starts,
so a test can tell whether MAS was restarted after its config changed. It records every request (method,
path), so a test can tell what reached MAS. It does not connect to MAS's database (real MAS does).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from . import homeservers

COMPAT_FLOWS_SSO = {"type": "m.login.sso", "oauth_aware_preferred": True,
                    "org.matrix.msc3824.delegated_oidc_compatibility": True}


class MasStandIn:
    """STANDS IN FOR MAS: listens on 127.0.0.1:`port` (a free one by default) and serves what the config
    at `config_path` declares (or `issuer`, without a config)."""

    def __init__(self, config_path: str | None = None, issuer: str = "https://auth.example.test/",
                 port: int | None = None):
        self.config_path = config_path
        self.default_issuer = issuer
        self.port = port or homeservers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list = []
        self.starts = 0
        self.issuer = issuer
        self.passwords = True
        self.answers_left: int | None = None  # fault injection: see fail_after
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- the service ------------------------------------------------------------------------------

    def _read_config(self) -> None:
        self.issuer, self.passwords = self.default_issuer, True
        if not self.config_path:
            return
        with open(self.config_path) as handle:
            config = yaml.safe_load(handle) or {}
        http = config.get("http") or {}
        self.issuer = http.get("issuer") or http.get("public_base") or self.default_issuer
        self.passwords = bool((config.get("passwords") or {}).get("enabled", True))

    def start(self) -> "MasStandIn":
        self._read_config()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.starts += 1
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def fail_after(self, answers: int | None) -> None:
        """Fault injection: after `answers` more answers, MAS fails (503 to everything) as a MAS that went
        down behind its proxy does; None: it answers again."""
        self.answers_left = answers

    @property
    def running(self) -> bool:
        return self.server is not None

    def __enter__(self) -> "MasStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what it answers --------------------------------------------------------------------------

    def discovery(self) -> dict:
        base = self.issuer.rstrip("/")
        return {"issuer": self.issuer, "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/oauth2/token", "jwks_uri": f"{base}/oauth2/keys.json",
                "registration_endpoint": f"{base}/oauth2/registration",
                "introspection_endpoint": f"{base}/oauth2/introspect",
                "revocation_endpoint": f"{base}/oauth2/revoke", "account_management_uri": f"{base}/account/",
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"]}

    def answer(self, method: str, path: str) -> tuple:
        if self.answers_left is not None:
            if self.answers_left <= 0:
                return 503, {"errcode": "M_UNKNOWN", "error": "stand-in: MAS is down"}
            self.answers_left -= 1
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

    def _handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                stand_in.requests.append((self.command, self.path))
                status, body = stand_in.answer(self.command, self.path)
                raw = b"ok" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if body is None else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # quiet
                pass

        return Handler
