# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live checks after Synapse starts on MAS: what clients will meet, asked over HTTP.

Synapse answers /health; its own password login is gone (its login flows, where it still
serves them, show MAS's delegation); its auth issuer and auth metadata name MAS's issuer;
`.well-known/matrix/client` carries MAS's keys; and, where MAS's URL is reachable from here,
MAS answers /health, its OpenID configuration names the issuer its config declares, and its
compatibility login endpoint offers the delegated SSO flow. Each failed check is an ERROR with a
remedy; what could not be proven because MAS (or Synapse's way to MAS) was unreachable is a WARN
saying so. Plain http.client (http_request): it runs on a bare host Python.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..http_request import request

OK, WARN, ERROR = "OK", "WARN", "ERROR"
DELEGATED_SSO = "org.matrix.msc3824.delegated_oidc_compatibility"
WELL_KNOWN_AUTH = "org.matrix.msc2965.authentication"
LOGIN_PATH = "/_matrix/client/v3/login"
AUTH_ISSUER_PATH = "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer"
AUTH_METADATA_PATHS = ("/_matrix/client/v1/auth_metadata", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata")


@dataclass
class LiveCheck:
    check: str
    level: str
    message: str
    remedy: str = ""
    url: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LiveOptions:
    synapse_url: str  # as this host reaches Synapse's client listener, e.g. http://localhost:8008
    mas_url: str | None = None  # as this host reaches MAS, e.g. http://localhost:8080
    issuer: str | None = None  # MAS's issuer (its config's http.issuer, else http.public_base)
    well_known_url: str | None = None  # the public .well-known/matrix/client
    validate_certs: bool = True
    timeout: float = 10.0


@dataclass
class Response:
    status: int | None  # None: nothing answered
    body: str = ""
    error: str = ""

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def mas_issuer(mas_raw: dict) -> str | None:
    """MAS's issuer as its config declares it: http.issuer, else http.public_base."""
    http = mas_raw.get("http") if isinstance(mas_raw, dict) else None
    if not isinstance(http, dict):
        return None
    value = http.get("issuer") or http.get("public_base")
    return str(value) if value else None


def same_url(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")


def get(url: str, options: LiveOptions) -> Response:
    """One GET (no redirects followed: a check names the URL that answered)."""
    answer = request("GET", url, options.timeout, options.validate_certs, headers={"Accept": "application/json"},
                     limit=1 << 20)
    if answer.status is None:
        return Response(None, error=answer.error)
    if 300 <= answer.status < 400 and answer.location:
        return Response(answer.status, f"redirected to {answer.location}")
    return Response(answer.status, answer.body.decode("utf-8", "replace"))


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


def _answer(response: Response) -> str:
    if response.status is None:
        return f"no answer ({response.error})"
    snippet = response.body.strip().replace("\n", " ")[:120]
    return f"HTTP {response.status}" + (f": {snippet}" if snippet else "")


def check_synapse_health(options: LiveOptions) -> LiveCheck:
    url = _join(options.synapse_url, "/health")
    response = get(url, options)
    if response.status == 200:
        return LiveCheck("synapse_health", OK, "Synapse answers /health", url=url)
    return LiveCheck("synapse_health", ERROR, f"Synapse's /health gives {_answer(response)}",
                     "start Synapse and read its log: it did not come up on MAS", url)


def check_login_flows(options: LiveOptions) -> LiveCheck:
    """Synapse's own login is gone: a delegating Synapse no longer serves /login (the reverse
    proxy sends it to MAS), or what answers there is MAS, offering the delegated SSO flow."""
    url = _join(options.synapse_url, LOGIN_PATH)
    response = get(url, options)
    if response.status == 404:
        return LiveCheck("login_flows", OK, "Synapse no longer serves its own login (404): logins are MAS's",
                         url=url)
    if response.status != 200:
        return LiveCheck("login_flows", ERROR, f"the login flows give {_answer(response)}",
                         "check Synapse's log and its matrix_authentication_service section", url)
    flows = [f for f in ((response.json() or {}).get("flows") or []) if isinstance(f, dict)]
    types = [f.get("type") for f in flows]
    delegated = any(f.get("type") == "m.login.sso" and f.get(DELEGATED_SSO) for f in flows)
    if delegated:
        return LiveCheck("login_flows", OK, f"the login flows show MAS's delegation ({', '.join(map(str, types))})",
                         url=url)
    if "m.login.password" in types:
        return LiveCheck("login_flows", ERROR,
                         f"Synapse still offers its own password login (flows: {', '.join(map(str, types))}): "
                         "it is not delegating to MAS",
                         "enable matrix_authentication_service in homeserver.yaml (matrix.syn2mas."
                         "synapse_auth_delegation) and restart Synapse", url)
    return LiveCheck("login_flows", ERROR,
                     f"the login flows do not show MAS's delegation (flows: {', '.join(map(str, types)) or 'none'}; "
                     f"no m.login.sso with {DELEGATED_SSO})",
                     "enable matrix_authentication_service in homeserver.yaml and restart Synapse", url)


def check_auth_metadata(options: LiveOptions) -> LiveCheck:
    """Synapse's auth metadata (and the older auth issuer, where the release still has it): what
    clients ask to find MAS. Synapse builds them from MAS's own metadata, so they also prove that
    Synapse reaches MAS."""
    answers = [(_join(options.synapse_url, p), get(_join(options.synapse_url, p), options))
               for p in AUTH_METADATA_PATHS + (AUTH_ISSUER_PATH,)]
    good = [(url, r.json().get("issuer")) for url, r in answers if r.status == 200 and isinstance(r.json(), dict)]
    if good:
        for url, issuer in good:
            if not issuer or (options.issuer and not same_url(issuer, options.issuer)):
                return LiveCheck("auth_metadata", ERROR, f"Synapse's {url.rsplit('/', 1)[-1]} names the issuer "
                                 f"{issuer!r}, not MAS's {options.issuer!r}",
                                 "make matrix_authentication_service.endpoint in homeserver.yaml point at this MAS, "
                                 "and MAS's http.public_base/issuer match what clients use", url)
        return LiveCheck("auth_metadata", OK, f"Synapse's auth metadata names MAS's issuer {good[0][1]}",
                         url=good[0][0])
    url, response = answers[0]
    if all(r.status == 404 for _u, r in answers):
        return LiveCheck("auth_metadata", ERROR, f"Synapse serves no auth metadata ({_answer(response)}): it is "
                         "not delegating authentication to MAS",
                         "enable matrix_authentication_service in homeserver.yaml and restart Synapse", url)
    # Synapse answers from MAS's metadata: an error here is MAS unreachable from Synapse.
    return LiveCheck("auth_metadata", WARN, f"not proven: Synapse could not give its auth metadata "
                     f"({_answer(response)}), most likely because it cannot reach MAS to name its issuer",
                     "start MAS, and check that matrix_authentication_service.endpoint reaches it from "
                     "Synapse's host", url)


def check_well_known(options: LiveOptions) -> LiveCheck:
    url = options.well_known_url or _join(options.synapse_url, "/.well-known/matrix/client")
    response = get(url, options)
    document = response.json() if response.status == 200 else None
    if not isinstance(document, dict):
        if not options.well_known_url:
            return LiveCheck("well_known", WARN, f"not proven: no well_known_url given, and Synapse serves no "
                             f".well-known/matrix/client ({_answer(response)})",
                             "give the public URL of .well-known/matrix/client (syn2mas_well_known_url)", url)
        return LiveCheck("well_known", ERROR, f".well-known/matrix/client gives {_answer(response)}",
                         "serve a JSON .well-known/matrix/client with MAS's keys (role well_known)", url)
    auth = document.get(WELL_KNOWN_AUTH)
    issuer = auth.get("issuer") if isinstance(auth, dict) else None
    if not issuer:
        return LiveCheck("well_known", ERROR, f".well-known/matrix/client has no {WELL_KNOWN_AUTH}.issuer: clients "
                         "will not find MAS", "merge MAS's keys into it (role well_known)", url)
    if options.issuer and not same_url(issuer, options.issuer):
        return LiveCheck("well_known", ERROR, f".well-known/matrix/client names the issuer {issuer!r}, not MAS's "
                         f"{options.issuer!r}", "merge MAS's keys into it again (role well_known)", url)
    return LiveCheck("well_known", OK, f".well-known/matrix/client carries MAS's keys (issuer {issuer})", url=url)


def check_mas(options: LiveOptions, required: bool = False) -> list:
    """MAS's /health, OpenID configuration (issuer) and compatibility login. `required`: MAS must
    answer (the gate before Synapse stops), so a MAS that does not answer is an ERROR, not a WARN."""
    if not options.mas_url:
        return [LiveCheck("mas_reachable", WARN, "not proven: no MAS URL given, so MAS's /health, OpenID "
                          "configuration and compatibility login were not checked",
                          "give MAS's URL as this host reaches it (syn2mas_mas_endpoint)")]
    health_url = _join(options.mas_url, "/health")
    health = get(health_url, options)
    if health.status is None and required:
        return [LiveCheck("mas_reachable", ERROR, f"MAS does not answer at {health_url} ({health.error})",
                          "start MAS (its service on MAS's host), or give the URL this host reaches it at "
                          "(syn2mas_mas_endpoint): Synapse is not stopped while MAS does not answer", health_url)]
    if health.status is None:
        return [LiveCheck("mas_reachable", WARN, f"not proven: MAS at {options.mas_url} is unreachable from here "
                          f"({health.error}), so its /health, its OpenID configuration (issuer) and its "
                          "compatibility login were not checked",
                          "start MAS, or give the URL this host reaches it at", health_url)]
    checks = []
    if health.status == 200:
        checks.append(LiveCheck("mas_health", OK, "MAS answers /health", url=health_url))
    else:
        checks.append(LiveCheck("mas_health", ERROR, f"MAS's /health gives {_answer(health)}",
                                "read MAS's log (mas-cli doctor)", health_url))
    url = _join(options.mas_url, "/.well-known/openid-configuration")
    response = get(url, options)
    document = response.json() if response.status == 200 else None
    issuer = document.get("issuer") if isinstance(document, dict) else None
    if not issuer:
        checks.append(LiveCheck("mas_openid_configuration", ERROR, f"MAS's OpenID configuration gives "
                                f"{_answer(response)}", "read MAS's log (mas-cli doctor)", url))
    elif options.issuer and not same_url(issuer, options.issuer):
        checks.append(LiveCheck("mas_openid_configuration", ERROR, f"MAS's OpenID configuration names the issuer "
                                f"{issuer!r}, but its config declares {options.issuer!r}",
                                "MAS runs another config than the one migrated: restart it with it", url))
    else:
        checks.append(LiveCheck("mas_openid_configuration", OK, f"MAS's OpenID configuration names the issuer "
                                f"{issuer}", url=url))
    url = _join(options.mas_url, LOGIN_PATH)
    response = get(url, options)
    flows = [f for f in (((response.json() or {}) if response.status == 200 else {}).get("flows") or [])
             if isinstance(f, dict)]
    if any(f.get("type") == "m.login.sso" and f.get(DELEGATED_SSO) for f in flows):
        checks.append(LiveCheck("mas_compat_login", OK, "MAS's compatibility login offers the delegated SSO flow",
                                url=url))
    else:
        checks.append(LiveCheck("mas_compat_login", ERROR, f"MAS's compatibility login gives {_answer(response)}",
                                "read MAS's log (mas-cli doctor)", url))
    return checks


def run_live_checks(options: LiveOptions) -> dict:
    checks = [check_synapse_health(options)]
    if checks[0].level == OK:
        checks.append(check_login_flows(options))
        checks.append(check_auth_metadata(options))
    checks.append(check_well_known(options))
    checks.extend(check_mas(options))
    return summarize(checks)


def summarize(checks: list) -> dict:
    errors = [c for c in checks if c.level == ERROR]
    warnings = [c for c in checks if c.level == WARN]
    passed = len(checks) - len(errors) - len(warnings)
    if errors:
        verdict = f"live checks FAILED: {', '.join(c.check for c in errors)}"
    else:
        verdict = f"live checks passed: {passed} of {len(checks)}"
    if warnings:
        verdict += f"; not proven: {', '.join(c.check for c in warnings)}"
    return {"ok": not errors, "checks": [c.as_dict() for c in checks], "errors": len(errors),
            "warnings": len(warnings), "passed": passed, "verdict": verdict}
