# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MAS's compatibility layer in front of Synapse: the reverse proxy's routes and a probe of them.

Clients that do not speak OAuth 2.0 (and clients holding a refresh token the import carried over)
keep working after the switch only if the reverse proxy sends the three legacy routes,
/_matrix/client/<version>/login, /logout and /refresh (and what lies below them, such as
login/sso/redirect), to MAS instead of Synapse; Synapse no longer serves them once it delegates.

The proxies are one table, `KINDS`: each kind renders the routes, and a managed kind (nginx) also
edits its operator's file (one marked block, so that removing it gives back the file as it was),
reads whether a file already routes them, tests a candidate of its configuration without the live
proxy seeing it, and names its default test and reload commands. The other kinds are shown: their
snippet is rendered, and written to a file of its own when one is named. `apply` and
`test_candidate` are what the module and the roles use; a new managed proxy is one `ProxyKind` here.
The module also probes a public URL to find out who answers the routes. Standard library only: it
runs on the proxy's host with Debian's bare Python.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Optional

from .. import http_request
from ..errors import ConfigError
from ..config.files import LOCAL_FILES, ConfigFileMissing
from ..config.yaml_edit import atomic_write

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
    scheme, hostport = parse_upstream(upstream)
    return proxy_kind(kind).render(scheme, hostport, homeserver_url, indent)


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


# -- nginx: a candidate configuration, tested where the live nginx never reads it -----------------

def _nginx_statements(text: str):
    """The directives of an nginx file, as nginx's own tokenizer reads them: for each, its words as
    (value, start, end, quoted) and the character that ends it (`;`, `{` or `}`). A `#` starts a
    comment, and a quote a quoted word, only at the start of a word."""
    words, i, n = [], 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif char in ";{}":
            yield words, char
            words, i = [], i + 1
        elif char in "\"'":
            j, value = i + 1, []
            while j < n and text[j] != char:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                value.append(text[j])
                j += 1
            words.append(("".join(value), i, j + 1, True))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                if text.startswith("${", j):  # a ${variable}: its braces are part of the word
                    close = text.find("}", j)
                    j = n if close < 0 else close + 1
                else:
                    j += 1
            words.append((text[i:j], i, j, False))
            i = j
    if words:
        yield words, ""


def _nginx_mirror(path: str, conf_prefix: str, root: str, edited: str, candidate: str, reader, depth: int = 0) -> bool:
    """Copies the nginx file `path` to `root` + `path`, its `include`s pointing to copies there too (a
    relative one was relative to `conf_prefix`), with `candidate` as the text of the file `edited`.
    Whether `edited` was reached."""
    if depth > 20:
        raise ConfigError(f"{path}: includes nest more than 20 deep (an include loop?)")
    reached = os.path.realpath(path) == edited
    text = candidate if reached else reader.read_text(path)
    pieces, last = [], 0
    for words, end in _nginx_statements(text):
        if end != ";" or len(words) != 2 or words[0][0] != "include" or words[0][3]:
            continue
        value, start, stop, quoted = words[1]
        pattern = os.path.normpath(os.path.join(conf_prefix, value))
        matches = sorted(glob.glob(pattern)) if re.search(r"[*?[]", pattern) else [pattern]  # as nginx decides
        for match in matches:
            if os.path.isfile(match):  # a missing file is left for nginx to name
                reached = _nginx_mirror(match, conf_prefix, root, edited, candidate, reader, depth + 1) or reached
        mirrored = root + pattern
        if quoted or re.search(r"[\s;{}'\"]", mirrored):
            mirrored = '"' + mirrored.replace("\\", "\\\\").replace('"', '\\"') + '"'
        pieces += [text[last:start], mirrored]
        last = stop
    copy = root + os.path.abspath(path)
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    with open(copy, "w", encoding="utf-8") as handle:
        handle.write("".join(pieces) + text[last:])
    return reached


def nginx_candidate_tree(main_config: str, edited_path: str, candidate: str, root: str,
                         reader=LOCAL_FILES) -> str:
    """A copy of nginx's configuration under `root` (a private directory), from `main_config` and every
    file it includes, with `candidate` in place of `edited_path`; returns the copy of `main_config`.

    nginx includes by absolute path (`/etc/nginx/sites-enabled/*`), so every copy's includes point to
    the copies: nginx tested on it (`nginx -t -c <copy>`) reads the candidate and never the live file,
    and the running nginx never reads the copies. Its messages name `root` + the operator's path.
    Other relative paths (certificates, mime.types when not included) are relative to the main
    config's directory: its entries that were not copied are linked there."""
    main_config = os.path.abspath(main_config)
    conf_prefix = os.path.dirname(main_config)
    if not reader.is_file(main_config):
        raise ConfigError(f"{main_config}: file not found (nginx's main configuration, which includes "
                          f"{edited_path}; name it with the reverse proxy's main_config)")
    if not _nginx_mirror(main_config, conf_prefix, root, os.path.realpath(edited_path), candidate, reader):
        raise ConfigError(f"{edited_path}: nginx's configuration {main_config} does not include it, so routes added "
                          "there would never be served; name the file nginx reads (or the main config that includes it)")
    mirrored_prefix = root + conf_prefix
    for name in os.listdir(conf_prefix):
        if not os.path.lexists(os.path.join(mirrored_prefix, name)):
            os.symlink(os.path.join(conf_prefix, name), os.path.join(mirrored_prefix, name))
    return root + main_config


# -- the kinds -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProxyKind:
    """One reverse proxy: how its routes are rendered and, for a managed kind, how its operator's file is
    edited, read, tested as a candidate, and its default commands. A kind without `add_routes` is
    shown: its snippet is rendered (and written to a file of its own when one is named)."""

    name: str
    render: Callable[[str, str, str, str], str]  # (scheme, host:port, homeserver URL, indent) -> snippet
    add_routes: Optional[Callable[[str, str, str, str], str]] = None  # (text, upstream, server name, path) -> text
    remove_routes: Optional[Callable[[str], str]] = None
    routes_state: Optional[Callable[[str, str], dict]] = None  # (text, upstream) -> managed/routed/proxy_pass
    test_command: str = ""
    reload_command: str = ""  # a reload, never a restart: open connections stay
    main_config: str = ""  # what includes the edited file, for the candidate
    candidate_tree: Optional[Callable[[str, str, str, str], str]] = None  # (main, edited, text, root) -> config
    candidate_test_command: str = ""  # `{config}` is the candidate's main config

    @property
    def managed(self) -> bool:
        return self.add_routes is not None


KINDS = {kind.name: kind for kind in (
    ProxyKind("nginx", _render_nginx, nginx_add_routes, nginx_remove_routes, nginx_routes_state,
              test_command="nginx -t", reload_command="systemctl reload nginx", main_config="/etc/nginx/nginx.conf",
              candidate_tree=nginx_candidate_tree, candidate_test_command="nginx -t -q -c {config}"),
    ProxyKind("apache", _render_apache),
    ProxyKind("caddy", _render_caddy),
    ProxyKind("traefik", _render_traefik),
    ProxyKind("haproxy", _render_haproxy),
)}


def proxy_kind(name: str) -> ProxyKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown reverse proxy {name!r}: expected one of {', '.join(KINDS)}") from None


def _read_or_none(path: str):
    try:
        return LOCAL_FILES.read_text(path)
    except ConfigFileMissing:
        return None


def new_text(kind: ProxyKind, present: bool, path: str, before, upstream: str = "", server_name: str = "",
             homeserver_url: str = ""):
    """The file's text after adding (`present`) or removing the routes; None: no file."""
    if kind.managed:
        if before is None:
            raise ConfigError(f"{path}: file not found (the {kind.name} file with the homeserver's server block)")
        return kind.add_routes(before, upstream, server_name, path) if present else kind.remove_routes(before)
    if present:
        return render(kind.name, upstream, homeserver_url)  # a snippet of its own: no indentation to fit
    # Only a file this module wrote is removed.
    return None if before is not None and BEGIN_MARK in before else before


def commands(kind: ProxyKind, test_command=None, reload_command=None) -> dict:
    """What the roles need of a kind: managed or shown, and its test and reload commands (the operator's
    when given, even empty; else the kind's)."""
    return {"managed": kind.managed,
            "test_command": kind.test_command if test_command is None else test_command,
            "reload_command": kind.reload_command if reload_command is None else reload_command}


def apply(kind_name: str, present: bool, path: str = "", upstream: str = "", server_name: str = "",
          homeserver_url: str = "", check_mode: bool = False, want_diff: bool = False, test_command=None,
          reload_command=None) -> dict:
    """Adds (`present`) or removes the routes in `path` on this machine, atomically and keeping the file's
    owner and mode (a symlink's target is edited); nothing is written in check mode. The result:
    `changed`, `diff`, `snippet` (when present), `path`, and `commands()`."""
    kind = proxy_kind(kind_name)
    result = {"changed": False, "routes": list(ROUTES), **commands(kind, test_command, reload_command)}
    if present:
        result["snippet"] = render(kind.name, upstream, homeserver_url)
    if not path:
        if kind.managed and present:
            raise ConfigError(f"a path is needed for {kind.name}: the file with the homeserver's server block")
        return result
    result["path"] = path
    before = _read_or_none(path)
    after = new_text(kind, present, path, before, upstream, server_name, homeserver_url)
    if after == before:
        return result
    result["changed"] = True
    if want_diff:
        result["diff"] = {"before_header": path, "after_header": path, "before": before or "", "after": after or ""}
    if not check_mode:
        if after is None:
            os.unlink(path)
        else:
            atomic_write(path, after, new_file_mode=0o644)  # a proxy's config is not secret; its user reads it
    return result


def test_candidate(kind_name: str, path: str, upstream: str, run, server_name: str = "", main_config=None,
                   candidate_test_command=None) -> dict:
    """Tests, before anything is written, the configuration the proxy would have with the routes: the
    edited file as `apply` would write it, in a private copy of the configuration (`candidate_tree`),
    tested with `candidate_test_command` (`{config}`: the copy's main config) run by `run(command) ->
    (rc, stdout, stderr)`. The operator's files are only read, and the live proxy never sees the copy,
    which is removed afterwards. A refusal raises ConfigError with the proxy's words, naming the
    operator's paths. Nothing to test for a shown kind or an empty command (`tested` false)."""
    kind = proxy_kind(kind_name)
    command = kind.candidate_test_command if candidate_test_command is None else candidate_test_command
    main = main_config or kind.main_config
    result = {"changed": False, "managed": kind.managed, "tested": False, "main_config": main}
    if not kind.managed or not command:
        return result
    if not path:
        raise ConfigError(f"a path is needed for {kind.name}: the file with the homeserver's server block")
    candidate = new_text(kind, True, path, _read_or_none(path), upstream, server_name)
    root = tempfile.mkdtemp(prefix="syn2mas-proxy-candidate-")  # 0700: nobody else reads or swaps it
    try:
        config = kind.candidate_tree(main, path, candidate, root)
        rc, out, err = run(command.replace("{config}", shlex.quote(config)))  # a shell command line
    finally:
        shutil.rmtree(root, ignore_errors=True)
    said = "\n".join(part.strip() for part in (err, out) if part and part.strip()).replace(root, "")
    if rc != 0:
        raise ConfigError(f"{kind.name} refuses its configuration with the compat routes added to {path} (tested on a "
                          f"copy; nothing was changed and {kind.name} was not reloaded): {said or f'exit code {rc}'}")
    result.update(tested=True, output=said)
    return result


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


def proxy_routes_findings(proxy_config: str = "", public_url: str = "", mas_url: str = "",
                          read_text=None, kind_name: str = "nginx") -> list[dict]:
    """Before the switch: whether the proxy already routes the compat paths to MAS, from its file (read
    with `read_text(path)`, for a kind that can read one) and/or by probing the public URL. Nothing
    when it does; not yet is a WARN: the runbook's reverse_proxy step adds them right before Synapse
    starts."""
    found = []
    managed = ", ".join(name for name, kind in KINDS.items() if kind.managed)
    remedy = (f"The runbook's reverse_proxy step adds them right before Synapse starts (syn2mas_reverse_proxy: "
              f"{managed}), or add the snippet for your proxy before the switch")
    kind = KINDS.get(kind_name)
    if proxy_config and kind is None:
        found.append(_advice("WARN", "compat_routes_reach_mas", f"unknown reverse proxy {kind_name!r}: its file is "
                             "not read", proxy_config, f"Name one of {', '.join(KINDS)}"))
    elif proxy_config and kind.routes_state is not None:
        try:
            state = kind.routes_state(read_text(proxy_config), "")
        except ConfigError as exc:
            found.append(_advice("WARN", "compat_routes_reach_mas", f"cannot read the {kind.name} config: {exc}",
                                 proxy_config, f"Give the {kind.name} file with the homeserver's server block"))
        else:
            if not state["routed"]:
                found.append(_advice("WARN", "compat_routes_reach_mas",
                                     f"the {kind.name} config does not route /_matrix/client/*/login, /logout and "
                                     "/refresh to MAS yet", proxy_config, remedy))
    if public_url:
        for finding in probe_compat_routes(public_url, mas_url):
            if finding["reached"] != "mas":  # quiet when MAS answers
                found.append(_advice("WARN", finding["check"], finding["message"], finding["where"],
                                     remedy if finding["reached"] == "not_mas" else finding["remedy"]))
    return found


def _advice(severity, check, message, where, remedy) -> dict:
    return {"severity": severity, "check": check, "message": message, "where": where, "remedy": remedy}
