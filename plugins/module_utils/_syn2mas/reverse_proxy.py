# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MAS's compatibility layer in front of Synapse: the reverse proxy's routes and a probe of them.

Clients that do not speak OAuth 2.0 (and clients holding a refresh token the import carried over)
keep working after the switch only if the reverse proxy sends the three legacy routes,
/_matrix/client/<version>/login, /logout and /refresh (and what lies below them, such as
login/sso/redirect), to MAS instead of Synapse; Synapse no longer serves them once it delegates.

This module renders those routes for nginx, Apache, Caddy, Traefik and HAProxy; adds them to (or
takes them out of) an nginx server block as one marked block, so that removing it gives back the
file as it was; says whether a config already routes them; and probes a public URL to find out who
answers them. Standard library only: it runs on the proxy's host with Debian's bare Python.
"""

from __future__ import annotations

import json
import re
import urllib.parse

from . import http_request
from .errors import ConfigError

KINDS = ("nginx", "apache", "caddy", "traefik", "haproxy")
ROUTES = ("login", "logout", "refresh")
# One path segment for the version (v3, r0, unstable...), then the route, then the end or a subpath.
COMPAT_PATH_REGEX = r"^/_matrix/client/[^/]+/(login|logout|refresh)(/|$)"
# Sample paths a config must send to MAS (and one it must not).
COMPAT_SAMPLE_PATHS = tuple(f"/_matrix/client/v3/{route}" for route in ROUTES) + (
    "/_matrix/client/v3/login/sso/redirect",)
NOT_COMPAT_SAMPLE_PATH = "/_matrix/client/v3/sync"

BEGIN_MARK = "# BEGIN matrix.syn2mas: MAS compatibility routes (login, logout, refresh)"
END_MARK = "# END matrix.syn2mas: MAS compatibility routes"


# -- the upstream --------------------------------------------------------------------------------

def parse_upstream(upstream: str) -> tuple[str, str]:
    """MAS's address as the proxy reaches it: (scheme, host:port), from `http://127.0.0.1:8080/`.

    No path: the routes keep the client's path, and nginx refuses a URI in proxy_pass inside a
    regex location."""
    text = str(upstream or "").strip()
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"MAS's upstream {text!r} is not an http(s):// URL (e.g. http://127.0.0.1:8080)")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ConfigError(f"MAS's upstream {text!r} has a path: give only scheme, host and port "
                          "(a MAS listener with a prefix is not supported here)")
    return parsed.scheme, parsed.netloc


def _hostname(public_url: str) -> str:
    return urllib.parse.urlsplit(public_url or "").hostname or ""


# -- rendering -----------------------------------------------------------------------------------

def render(kind: str, upstream: str, homeserver_url: str = "", indent: str = "    ") -> str:
    """The compat routes for `kind`, as text to paste or include; ends with a newline."""
    if kind not in _RENDERERS:
        raise ConfigError(f"unknown reverse proxy {kind!r}: expected one of {', '.join(KINDS)}")
    scheme, hostport = parse_upstream(upstream)
    return _RENDERERS[kind](scheme, hostport, homeserver_url, indent)


def _render_nginx(scheme: str, hostport: str, _homeserver_url: str, indent: str) -> str:
    body = [
        f"location ~ {COMPAT_PATH_REGEX} {{",
        f"    proxy_pass {scheme}://{hostport};",
        "    proxy_http_version 1.1;",
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "}",
    ]
    return "".join(f"{indent}{line}\n" for line in [BEGIN_MARK, *body, END_MARK])


def _render_apache(scheme: str, hostport: str, _homeserver_url: str, _indent: str) -> str:
    # ProxyPassMatch keeps the whole path ($1); it must come before Synapse's ProxyPass lines.
    regex = "^(" + COMPAT_PATH_REGEX[1:].replace("(/|$)", "(/.*)?") + ")$"
    return "\n".join([
        BEGIN_MARK,
        "# Include in the homeserver's VirtualHost, before the ProxyPass lines for Synapse (mod_proxy, mod_proxy_http).",
        f'ProxyPassMatch "{regex}" "{scheme}://{hostport}$1" nocanon',
        END_MARK, ""])


def _render_caddy(scheme: str, hostport: str, _homeserver_url: str, _indent: str) -> str:
    # `handle` runs before a bare `reverse_proxy` in Caddy's directive order, so Synapse's
    # catch-all in the same site block no longer sees these paths.
    return "\n".join([
        BEGIN_MARK,
        "# import into the homeserver's site block",
        f"@syn2mas_mas_compat path_regexp {COMPAT_PATH_REGEX}",
        "handle @syn2mas_mas_compat {",
        f"\treverse_proxy {scheme}://{hostport}",
        "}",
        END_MARK, ""])


def _render_traefik(scheme: str, hostport: str, homeserver_url: str, _indent: str) -> str:
    host = _hostname(homeserver_url)
    rule = (f"Host(`{host}`) && " if host else "") + f"PathRegexp(`{COMPAT_PATH_REGEX}`)"
    lines = [
        BEGIN_MARK,
        "# Traefik v3 dynamic configuration (file provider); the priority puts it above Synapse's router.",
        "http:",
        "  routers:",
        "    syn2mas-mas-compat:",
        f"      rule: {json.dumps(rule)}",
        "      service: syn2mas-mas-compat",
        "      priority: 10000",
    ]
    if urllib.parse.urlsplit(homeserver_url or "").scheme == "https":
        lines.append("      tls: {}")
    lines += [
        "  services:",
        "    syn2mas-mas-compat:",
        "      loadBalancer:",
        "        passHostHeader: true",
        "        servers:",
        f"          - url: {json.dumps(f'{scheme}://{hostport}')}",
        END_MARK, ""]
    return "\n".join(lines)


def _render_haproxy(scheme: str, hostport: str, _homeserver_url: str, _indent: str) -> str:
    ssl = " ssl verify required ca-file @system-ca" if scheme == "https" else ""
    return "\n".join([
        BEGIN_MARK,
        "# In the homeserver's frontend, before the use_backend / default_backend for Synapse:",
        f"acl syn2mas_mas_compat path_reg {COMPAT_PATH_REGEX}",
        "use_backend syn2mas_mas_compat if syn2mas_mas_compat",
        "",
        "# A backend of its own:",
        "backend syn2mas_mas_compat",
        "    mode http",
        "    option forwardfor",
        f"    server mas {hostport}{ssl}",
        END_MARK, ""])


_RENDERERS = {"nginx": _render_nginx, "apache": _render_apache, "caddy": _render_caddy,
              "traefik": _render_traefik, "haproxy": _render_haproxy}


# -- nginx: the block in the operator's server block ----------------------------------------------

def _strip_comments(line: str) -> str:
    # nginx comments start at an unquoted `#`; quoted `#` in these configs is rare enough to ignore.
    return line.split("#", 1)[0]


def nginx_server_blocks(text: str) -> list[dict]:
    """The top-level-ish `server { ... }` blocks of an nginx file: for each, the line index of its
    opening brace, of its closing brace, its server_name values and its indentation."""
    lines = text.splitlines(keepends=True)
    blocks, stack = [], []
    for index, line in enumerate(lines):
        code = _strip_comments(line)
        for match in re.finditer(r"[{}]|\bserver_name\s+([^;]*);", code):
            token = match.group(0)
            if token == "{":
                before = code[:match.start()].strip()
                stack.append({"open": index, "is_server": re.fullmatch(r"(.*[;{}]\s*)?server", before) is not None,
                              "names": [], "indent": re.match(r"\s*", line).group(0)})
            elif token == "}":
                if not stack:
                    raise ConfigError(f"line {index + 1}: a '}}' closes nothing")
                block = stack.pop()
                if block["is_server"]:
                    block["close"] = index
                    blocks.append(block)
            else:
                for frame in reversed(stack):
                    if frame["is_server"]:
                        frame["names"].extend(match.group(1).split())
                        break
    if stack:
        raise ConfigError(f"line {stack[-1]['open'] + 1}: a '{{' is never closed")
    return sorted(blocks, key=lambda b: b["open"])


def _managed_span(lines: list[str]) -> tuple[int, int] | None:
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARK]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARK]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ConfigError("the matrix.syn2mas marks are broken (a BEGIN without its END, or twice): "
                          "fix the file by hand")
    return starts[0], ends[0]


def nginx_remove_routes(text: str) -> str:
    """The file without the managed block (unchanged when there is none)."""
    lines = text.splitlines(keepends=True)
    span = _managed_span(lines)
    if span is None:
        return text
    return "".join(lines[:span[0]] + lines[span[1] + 1:])


def _pick_server(blocks: list[dict], server_name: str, path: str) -> dict:
    if server_name:
        chosen = [b for b in blocks if server_name in b["names"]]
        if len(chosen) != 1:
            raise ConfigError(f"{path}: {len(chosen)} server blocks have server_name {server_name}; "
                              "expected exactly one")
        return chosen[0]
    if len(blocks) != 1:
        raise ConfigError(f"{path}: {len(blocks)} server blocks; name the homeserver's with server_name")
    return blocks[0]


def _body_indent(lines: list[str], block: dict) -> str:
    """The indentation of the server block's first directive (the block's own plus four spaces when
    the directives share the opening line)."""
    for line in lines[block["open"] + 1:block["close"]]:
        if line.strip():
            found = re.match(r"[ \t]*", line).group(0)
            if len(found) > len(block["indent"]):
                return found
            break
    return block["indent"] + "    "


def nginx_add_routes(text: str, upstream: str, server_name: str = "", path: str = "nginx config") -> str:
    """The file with the managed block as the first thing in the homeserver's server block (replacing
    an earlier managed block). First, because nginx tries regex locations in the order they appear,
    and Synapse's own location is often a regex (`~ ^(/_matrix|/_synapse/client)`)."""
    text = nginx_remove_routes(text)
    lines = text.splitlines(keepends=True)
    block = _pick_server(nginx_server_blocks(text), server_name, path)
    opening = lines[block["open"]]
    brace = _strip_comments(opening).rindex("{")
    indent = _body_indent(lines, block)
    snippet = render("nginx", upstream, indent=indent)
    rest = opening[brace + 1:]
    if rest.strip():  # `server { listen 80;` on one line: split it after the brace
        lines[block["open"]:block["open"] + 1] = [opening[:brace + 1] + "\n", snippet, indent + rest.lstrip()]
    else:
        lines.insert(block["open"] + 1, snippet)
    return "".join(lines)


def nginx_routes_state(text: str, upstream: str = "") -> dict:
    """Whether an nginx file routes the compat paths: `managed` (our block is there), `routed` (a regex
    location matches every sample path and not /sync, and proxies somewhere), its `proxy_pass`, and
    whether that is `upstream` (when given)."""
    managed = _managed_span(text.splitlines()) is not None
    found = None
    for match in re.finditer(r"location\s+~\*?\s+(\"[^\"]+\"|'[^']+'|\S+)\s*\{([^{}]*)\}", text):
        pattern = match.group(1).strip("\"'")
        try:
            compiled = re.compile(pattern)
        except re.error:
            continue
        if all(compiled.search(p) for p in COMPAT_SAMPLE_PATHS) and not compiled.search(NOT_COMPAT_SAMPLE_PATH):
            proxy = re.search(r"proxy_pass\s+([^;]+);", match.group(2))
            if proxy:
                found = proxy.group(1).strip()
                break
    to_upstream = None
    if found and upstream:
        try:
            to_upstream = found.rstrip("/") == "{}://{}".format(*parse_upstream(upstream))
        except ConfigError:
            to_upstream = None
    return {"managed": managed, "routed": found is not None, "proxy_pass": found, "to_upstream": to_upstream}


# -- the probe ------------------------------------------------------------------------------------

PROBE_REFRESH_TOKEN = "syn2mas-probe-not-a-refresh-token"


def _request(method: str, url: str, body: dict | None, timeout: float,
             validate_certs: bool = True) -> tuple[int | None, object]:
    """One request, no redirects followed (a redirect is an answer too): (status, JSON body or text),
    or (None, why) when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Host": urllib.parse.urlsplit(url).netloc}
    answer = http_request.request(method, url, timeout, validate_certs, data, headers)
    if answer.status is None:
        return None, answer.error
    try:
        return answer.status, json.loads(answer.body)
    except ValueError:
        return answer.status, answer.body[:200].decode("utf-8", "replace")


def _looks_like_mas(route: str, status, body) -> bool | None:
    """Who answered, from the answer alone: True (MAS), False (not MAS), None (cannot tell)."""
    if not isinstance(body, dict):
        return False if status is not None else None
    if status in (404, 405) and body.get("errcode") == "M_UNRECOGNIZED":
        return False  # a delegating Synapse no longer serves the route
    if route == "login" and status == 200:
        # MAS marks its SSO flow as the OAuth-aware one (MSC3824); a Synapse on its own does not.
        return any(isinstance(f, dict) and f.get("type") == "m.login.sso"
                   and (f.get("oauth_aware_preferred") or f.get("org.matrix.msc3824.delegated_oidc_compatibility"))
                   for f in body.get("flows", []))
    return None


def _same_answer(first: tuple, second: tuple) -> bool:
    (status_a, body_a), (status_b, body_b) = first, second
    if status_a != status_b or status_a is None:
        return False
    # The whole body: a legacy Synapse and MAS both refuse an unknown refresh token with
    # M_UNKNOWN_TOKEN, but each in its own words.
    return body_a == body_b


def probe_compat_routes(public_url: str, mas_url: str = "", timeout: float = 10.0,
                        validate_certs: bool = True) -> list[dict]:
    """Through the homeserver's public URL: does GET /login and POST /refresh reach MAS, not Synapse?

    Each answer is compared with MAS's own answer to the same request (`mas_url`, MAS reached
    directly) when given, else judged by its shape. Returns one finding per route (the advisor's
    shape plus `route`, `url`, `status`, `reached`: mas, not_mas or unknown)."""
    base = str(public_url or "").rstrip("/")
    probes = (("login", "GET", None), ("refresh", "POST", {"refresh_token": PROBE_REFRESH_TOKEN}))
    findings = []
    for route, method, body in probes:
        path = f"/_matrix/client/v3/{route}"
        public = _request(method, base + path, body, timeout, validate_certs)
        reached = None
        how = "by the shape of the answer"
        if mas_url:
            direct = _request(method, str(mas_url).rstrip("/") + path, body, timeout, validate_certs)
            if direct[0] is not None:
                reached = _same_answer(public, direct)
                how = "compared with MAS's own answer"
        if reached is None:
            reached = _looks_like_mas(route, *public)
        status = public[0]
        where = f"{method} {base}{path}"
        if reached:
            findings.append(_finding("INFO", f"{method} {path} reaches MAS (HTTP {status}, {how})", where,
                                     "", route, status, "mas"))
        elif public[0] is None:
            findings.append(_finding("ERROR", f"{method} {path} gets no answer: {public[1]}", where,
                                     "Check the public URL and that the reverse proxy runs", route, None, "unknown"))
        elif reached is False:
            findings.append(_finding(
                "ERROR", f"{method} {path} does not reach MAS (HTTP {status}, {how}): legacy clients cannot "
                f"{'log in' if route == 'login' else 'refresh their tokens'}", where,
                "Route /_matrix/client/*/login, /logout and /refresh to MAS in the reverse proxy (the reverse_proxy "
                "role does it for nginx, and renders the snippet for the others), and give MAS's listener the "
                "compat resource", route, status, "not_mas"))
        else:
            findings.append(_finding(
                "WARN", f"{method} {path} answers HTTP {status}, which could be MAS or Synapse", where,
                "Give MAS's own address (mas_url) so that the probe can compare the answers", route, status,
                "unknown"))
    return findings


def _finding(severity, message, where, remedy, route, status, reached) -> dict:
    return {"severity": severity, "check": "compat_routes_reach_mas", "message": message, "where": where,
            "remedy": remedy, "route": route, "status": status, "reached": reached}


# -- the advisor's checks ------------------------------------------------------------------------

def _binds(listener: dict) -> str:
    found = []
    for bind in listener.get("binds") or []:
        if isinstance(bind, dict):
            found.append(str(bind.get("address") or bind.get("socket")
                             or f"{bind.get('host', '')}:{bind.get('port', '')}"))
    return ", ".join(found) or "no binds"


def compat_listener_findings(mas_raw: dict, where) -> list[dict]:
    """MAS serves the compatibility layer only on a listener with the `compat` resource. `where(key)`
    names a key's file. Nothing when a listener has it."""
    http = mas_raw.get("http") if isinstance(mas_raw, dict) else None
    listeners = http.get("listeners") if isinstance(http, dict) else None
    if not isinstance(listeners, list) or not listeners:
        return []  # not in the files given (MAS's own defaults have it): nothing to judge
    names = []
    for listener in listeners:
        resources = listener.get("resources") if isinstance(listener, dict) else None
        for resource in resources if isinstance(resources, list) else []:
            if isinstance(resource, dict) and resource.get("name") == "compat":
                return []
        names.append(str(listener.get("name", "?")) if isinstance(listener, dict) else "?")
    return [_advice("ERROR", "mas_compat_resource",
                    f"no MAS listener has the compat resource ({', '.join(names)}): after the switch, legacy clients "
                    "cannot log in, and clients holding an imported refresh token are logged out when their access "
                    "token expires (Synapse no longer serves /login, /logout and /refresh)", where("http.listeners"),
                    "Add `- name: compat` to the resources of the listener the reverse proxy reaches, and route "
                    "/_matrix/client/*/login, /logout and /refresh to it")]


def proxy_needs(synapse_public_baseurl, mas_raw: dict) -> dict:
    """What the proxy needs, for the advisor's summary: the homeserver's public URL (whose server
    block gets the routes), MAS's public_base, and the binds of MAS's listener with `compat`."""
    http = mas_raw.get("http") if isinstance(mas_raw, dict) else None
    http = http if isinstance(http, dict) else {}
    listeners = http.get("listeners") if isinstance(http.get("listeners"), list) else []
    compat = [lst for lst in listeners if isinstance(lst, dict) and isinstance(lst.get("resources"), list)
              and any(isinstance(r, dict) and r.get("name") == "compat" for r in lst["resources"])]
    return {"homeserver_public_baseurl": synapse_public_baseurl, "mas_public_base": http.get("public_base"),
            "mas_compat_listener": _binds(compat[0]) if compat else None,
            "routes": [f"/_matrix/client/*/{route}" for route in ROUTES]}


def proxy_routes_findings(nginx_config: str = "", public_url: str = "", mas_url: str = "",
                          read_text=None) -> list[dict]:
    """Before the switch: whether the proxy already routes the compat paths to MAS, from an nginx
    file (read with `read_text(path)`) and/or by probing the public URL. Nothing when it does; not
    yet is a WARN: the runbook's reverse_proxy step adds them right before Synapse starts."""
    found = []
    remedy = ("The runbook's reverse_proxy step adds them right before Synapse starts (syn2mas_reverse_proxy: "
              "nginx), or add the snippet for your proxy before the switch")
    if nginx_config:
        try:
            state = nginx_routes_state(read_text(nginx_config))
        except ConfigError as exc:
            found.append(_advice("WARN", "compat_routes_reach_mas", f"cannot read the nginx config: {exc}",
                                 nginx_config, "Give the nginx file with the homeserver's server block"))
        else:
            if not state["routed"]:
                found.append(_advice("WARN", "compat_routes_reach_mas",
                                     "the nginx config does not route /_matrix/client/*/login, /logout and /refresh "
                                     "to MAS yet", nginx_config, remedy))
    if public_url:
        for finding in probe_compat_routes(public_url, mas_url):
            if finding["reached"] != "mas":  # quiet when MAS answers
                found.append(_advice("WARN", finding["check"], finding["message"], finding["where"],
                                     remedy if finding["reached"] == "not_mas" else finding["remedy"]))
    return found


def _advice(severity, check, message, where, remedy) -> dict:
    return {"severity": severity, "check": check, "message": message, "where": where, "remedy": remedy}
