"""MAS's compat routes as each proxy gets them, and the nginx server-block edit (the end-to-end test runs
the result in a real nginx: tests/integration/test_reverse_proxy_e2e.py)."""

from __future__ import annotations

import os
import re

import pytest

from _syn2mas.host import reverse_proxy
from _syn2mas.errors import ConfigError

SITE = (
    "# operator's site\n"
    "server {\n"
    "    listen 80;\n"
    "    server_name other.example.com;\n"
    "    location / { return 404; }\n"
    "}\n"
    "\n"
    "server {\n"
    "\tlisten 443 ssl;\n"
    "\tserver_name matrix.example.com;  # the homeserver\n"
    "\tlocation ~ ^(/_matrix|/_synapse/client) {\n"
    "\t\tproxy_pass http://127.0.0.1:8008;\n"
    "\t}\n"
    "}\n"
)
UPSTREAM = "http://127.0.0.1:8080/"
ROUTED = ["/_matrix/client/v3/login", "/_matrix/client/r0/logout", "/_matrix/client/v3/logout/all",
          "/_matrix/client/v3/refresh", "/_matrix/client/unstable/login", "/_matrix/client/v3/login/sso/redirect"]
NOT_ROUTED = ["/_matrix/client/v3/sync", "/_matrix/client/v3/loginx", "/_matrix/client/versions",
              "/_matrix/client/v3/rooms/!r:x/login", "/_synapse/client/login", "/_matrix/media/v3/login"]


def test_the_path_regex_takes_the_three_routes_and_nothing_else():
    pattern = re.compile(reverse_proxy.COMPAT_PATH_REGEX)
    assert all(pattern.search(p) for p in ROUTED)
    assert not any(pattern.search(p) for p in NOT_ROUTED)


def test_the_routes_go_first_in_the_named_server_block_and_come_out_as_they_were():
    added = reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "matrix.example.com")
    lines = added.splitlines()
    opening = [i for i, line in enumerate(lines) if line == "server {"][1]
    assert lines[opening + 1] == "\t" + reverse_proxy.BEGIN_MARK
    assert "\t    proxy_pass http://127.0.0.1:8080;" in lines  # no trailing slash: the path is kept
    assert added.index(reverse_proxy.END_MARK) < added.index("location ~ ^(/_matrix")
    assert reverse_proxy.nginx_add_routes(added, UPSTREAM, "matrix.example.com") == added
    assert reverse_proxy.nginx_remove_routes(added) == SITE
    assert reverse_proxy.nginx_remove_routes(SITE) == SITE


def test_a_new_upstream_replaces_the_block():
    added = reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "matrix.example.com")
    moved = reverse_proxy.nginx_add_routes(added, "http://10.0.0.5:8080", "matrix.example.com")
    assert moved.count(reverse_proxy.BEGIN_MARK) == 1 and "10.0.0.5:8080;" in moved and "127.0.0.1:8080" not in moved


def test_the_server_block_must_be_named_when_there_are_several():
    with pytest.raises(ConfigError, match="2 server blocks"):
        reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "", "site.conf")
    with pytest.raises(ConfigError, match="0 server blocks have server_name nope"):
        reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "nope", "site.conf")


def test_broken_marks_and_braces_are_refused():
    added = reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "matrix.example.com")
    with pytest.raises(ConfigError, match="marks are broken"):
        reverse_proxy.nginx_remove_routes(added.replace(reverse_proxy.END_MARK, ""))
    with pytest.raises(ConfigError, match="never closed"):
        reverse_proxy.nginx_add_routes("server {\n listen 80;\n", UPSTREAM)


def test_an_upstream_with_a_path_or_no_scheme_is_refused():
    for bad in ("http://127.0.0.1:8080/auth", "127.0.0.1:8080", ""):
        with pytest.raises(ConfigError):
            reverse_proxy.render("nginx", bad)


def test_the_routes_state_of_a_config():
    added = reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "matrix.example.com")
    assert reverse_proxy.nginx_routes_state(added, UPSTREAM) == {
        "managed": True, "routed": True, "proxy_pass": "http://127.0.0.1:8080", "to_upstream": True}
    assert reverse_proxy.nginx_routes_state(SITE)["routed"] is False
    # An operator's own location, MAS's documented shape, counts too.
    own = SITE.replace("\tlocation ~ ^(/_matrix", "\tlocation ~ ^/_matrix/client/(.*)/(login|logout|refresh) {\n"
                       "\t\tproxy_pass http://localhost:8080;\n\t}\n\tlocation ~ ^(/_matrix")
    assert reverse_proxy.nginx_routes_state(own) == {
        "managed": False, "routed": True, "proxy_pass": "http://localhost:8080", "to_upstream": None}


@pytest.mark.parametrize("kind, expected", [
    ("apache", 'ProxyPassMatch "^(/_matrix/client/[^/]+/(login|logout|refresh)(/.*)?)$" "http://127.0.0.1:8080$1"'),
    ("caddy", "reverse_proxy http://127.0.0.1:8080"),
    ("traefik", 'rule: "Host(`matrix.example.com`) && PathRegexp(`^/_matrix/client/[^/]+/(login|logout|refresh)'
                '(/|$)`)"'),
    ("haproxy", "server mas 127.0.0.1:8080"),
])
def test_each_proxy_gets_the_routes_to_mas(kind, expected):
    snippet = reverse_proxy.render(kind, UPSTREAM, "https://matrix.example.com/")
    assert expected in snippet
    assert snippet.startswith(reverse_proxy.BEGIN_MARK) and snippet.endswith(reverse_proxy.END_MARK + "\n")


def test_apaches_regex_keeps_the_whole_path():
    regex = re.search(r'ProxyPassMatch "([^"]+)"', reverse_proxy.render("apache", UPSTREAM)).group(1)
    for path in ROUTED:
        assert re.match(regex, path).group(1) == path
    assert not any(re.match(regex, p) for p in NOT_ROUTED)


def test_the_compat_listener_check():
    where = "mas.yaml: {}".format
    listeners = {"http": {"listeners": [{"name": "web", "resources": [{"name": "human"}, {"name": "oauth"}]}]}}
    [finding] = reverse_proxy.compat_listener_findings(listeners, where)
    assert finding["severity"] == "ERROR" and finding["check"] == "mas_compat_resource"
    assert "- name: compat" in finding["remedy"] and finding["where"] == "mas.yaml: http.listeners"
    listeners["http"]["listeners"][0]["resources"].append({"name": "compat"})
    assert reverse_proxy.compat_listener_findings(listeners, where) == []
    needs = reverse_proxy.proxy_needs("https://matrix.example.com/", {"http": {
        "public_base": "https://auth.example.com/", "listeners": [
            {"name": "web", "resources": [{"name": "compat"}], "binds": [{"host": "localhost", "port": 8080}]}]}})
    assert needs["mas_compat_listener"] == "localhost:8080"
    assert needs["homeserver_public_baseurl"] == "https://matrix.example.com/"
    assert needs["mas_public_base"] == "https://auth.example.com/"


@pytest.mark.parametrize("kind", reverse_proxy.KINDS)
def test_the_readme_shows_each_snippet_as_rendered(kind):
    readme = open(__file__.rsplit("/tests/", 1)[0] + "/README.md").read()
    snippet = reverse_proxy.render(kind, "http://127.0.0.1:8080", "https://matrix.example.org/", indent="")
    for line in snippet.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line in readme, line


# -- the kinds table -------------------------------------------------------------------------------

MANAGED = [name for name, kind in reverse_proxy.KINDS.items() if kind.managed]
SHOWN = [name for name, kind in reverse_proxy.KINDS.items() if not kind.managed]


def test_managed_and_shown_kinds():
    assert MANAGED == ["nginx"] and SHOWN == ["apache", "caddy", "traefik", "haproxy"]
    with pytest.raises(ConfigError, match="unknown reverse proxy 'lighttpd': expected one of nginx, apache"):
        reverse_proxy.proxy_kind("lighttpd")


@pytest.mark.parametrize("kind", reverse_proxy.KINDS)
def test_every_kind_renders_the_three_routes_to_mas(kind):
    snippet = reverse_proxy.render(kind, UPSTREAM, "https://matrix.example.com/", indent="")
    assert snippet.startswith(reverse_proxy.BEGIN_MARK) and snippet.endswith(reverse_proxy.END_MARK + "\n")
    assert "127.0.0.1:8080" in snippet and "(login|logout|refresh)" in snippet


@pytest.mark.parametrize("kind", MANAGED)
def test_a_managed_kind_edits_its_file_once_keeps_its_mode_and_gives_it_back(kind, tmp_path):
    site = tmp_path / "matrix.conf"
    site.write_text(SITE)
    os.chmod(site, 0o640)
    edit = dict(upstream=UPSTREAM, server_name="matrix.example.com")
    checked = reverse_proxy.apply(kind, True, str(site), check_mode=True, want_diff=True, **edit)
    assert checked["changed"] is True and site.read_text() == SITE  # check mode: the diff, nothing written
    assert checked["diff"]["before"] == SITE and reverse_proxy.BEGIN_MARK in checked["diff"]["after"]
    first = reverse_proxy.apply(kind, True, str(site), **edit)
    assert first["changed"] is True and site.read_text() == checked["diff"]["after"]
    assert first["managed"] is True and first["test_command"] and first["reload_command"]
    assert os.stat(site).st_mode & 0o777 == 0o640
    assert reverse_proxy.apply(kind, True, str(site), **edit)["changed"] is False
    removed = reverse_proxy.apply(kind, False, str(site))
    assert removed["changed"] is True and site.read_text() == SITE and os.stat(site).st_mode & 0o777 == 0o640
    assert reverse_proxy.apply(kind, False, str(site))["changed"] is False
    with pytest.raises(ConfigError, match="missing.conf: file not found"):
        reverse_proxy.apply(kind, True, str(tmp_path / "missing.conf"), **edit)
    with pytest.raises(ConfigError, match="a path is needed"):
        reverse_proxy.apply(kind, True, "", **edit)


@pytest.mark.parametrize("kind", SHOWN)
def test_a_shown_kind_writes_its_snippet_file_once_and_removes_only_its_own(kind, tmp_path):
    snippet = tmp_path / "syn2mas-mas-compat.conf"
    first = reverse_proxy.apply(kind, True, str(snippet), UPSTREAM, homeserver_url="https://matrix.example.com/")
    assert first["changed"] is True and first["managed"] is False
    assert snippet.read_text() == first["snippet"] == reverse_proxy.render(kind, UPSTREAM, "https://matrix.example.com/")
    assert (first["test_command"], first["reload_command"]) == ("", "")  # nothing of its own to run
    assert reverse_proxy.apply(kind, True, str(snippet), UPSTREAM, homeserver_url="https://matrix.example.com/")[
        "changed"] is False
    assert reverse_proxy.apply(kind, False, str(snippet))["changed"] is True and not snippet.exists()
    operators = tmp_path / "operators.conf"
    operators.write_text("# the operator's own\n")
    assert reverse_proxy.apply(kind, False, str(operators))["changed"] is False and operators.exists()
    # Without a file, only the snippet (to show).
    shown = reverse_proxy.apply(kind, True, "", UPSTREAM)
    assert shown["changed"] is False and "path" not in shown and shown["snippet"]


def test_the_operators_commands_win_even_empty():
    assert reverse_proxy.commands(reverse_proxy.KINDS["nginx"]) == {
        "managed": True, "test_command": "nginx -t", "reload_command": "systemctl reload nginx"}
    assert reverse_proxy.commands(reverse_proxy.KINDS["nginx"], "", "docker kill -s HUP nginx") == {
        "managed": True, "test_command": "", "reload_command": "docker kill -s HUP nginx"}
    assert reverse_proxy.commands(reverse_proxy.KINDS["caddy"], "caddy validate")["test_command"] == "caddy validate"


# -- the candidate --------------------------------------------------------------------------------

def operator_tree(tmp_path):
    """An operator's nginx: nginx.conf includes mime.types (relative) and sites-enabled/* (absolute), where
    the homeserver's site is a link to sites-available/."""
    etc = tmp_path / "etc" / "nginx"
    for folder in ("sites-available", "sites-enabled", "ssl"):
        (etc / folder).mkdir(parents=True)
    (etc / "mime.types").write_text("types { text/html html; }\n")
    (etc / "nginx.conf").write_text(
        "events {}\nhttp {\n    include mime.types;  # relative to this file's folder\n"
        f"    # include {etc}/nowhere/*;\n    include \"{etc}/sites-enabled/*\";\n}}\n")
    (etc / "sites-available" / "matrix").write_text(SITE)
    (etc / "sites-enabled" / "matrix").symlink_to("../sites-available/matrix")
    (etc / "sites-enabled" / "other").write_text("server { listen 81; }\n")
    return etc


def snapshot(folder) -> dict:
    return {str(p): (p.read_bytes(), os.stat(p).st_mode) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_candidate_is_tested_on_a_copy_whose_includes_point_to_copies(tmp_path):
    etc = operator_tree(tmp_path)
    before = snapshot(tmp_path)
    seen = {}

    def run(command):
        config = command.split("-c ", 1)[1]
        root = config[:-len(str(etc / "nginx.conf"))]
        seen.update(command=command, root=root, main=open(config).read(),
                    site=open(root + str(etc / "sites-enabled" / "matrix")).read(),
                    other=open(root + str(etc / "sites-enabled" / "other")).read(),
                    mime=open(root + str(etc / "mime.types")).read(),
                    ssl=os.path.realpath(root + str(etc / "ssl")))
        return 0, "", f"nginx: configuration file {config} test is successful\n"

    result = reverse_proxy.test_candidate("nginx", str(etc / "sites-enabled" / "matrix"), UPSTREAM, run,
                                          "matrix.example.com", str(etc / "nginx.conf"))
    root = seen["root"]
    assert result["tested"] is True and result["changed"] is False
    assert result["output"] == f"nginx: configuration file {etc / 'nginx.conf'} test is successful"
    assert seen["command"].startswith("nginx -t -q -c " + root)
    assert seen["site"] == reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "matrix.example.com")
    assert seen["other"] == "server { listen 81; }\n" and seen["mime"] == "types { text/html html; }\n"
    assert f'include "{root}{etc}/sites-enabled/*";' in seen["main"]
    assert f"include {root}{etc}/mime.types;  # relative" in seen["main"]
    assert f"    # include {etc}/nowhere/*;" in seen["main"]  # a comment stays a comment
    assert seen["ssl"] == str(etc / "ssl")  # what was not copied is reached through a link
    assert snapshot(tmp_path) == before and not os.path.exists(root)  # the operator's files read only; copy gone


def test_a_refused_candidate_names_the_operators_files_and_the_copy_is_removed(tmp_path):
    etc = operator_tree(tmp_path)
    before = snapshot(tmp_path)
    roots = []

    def run(command):
        root = command.split("-c ", 1)[1][:-len(str(etc / "nginx.conf"))]
        roots.append(root)
        return 1, "", (f'nginx: [emerg] host not found in upstream "mas.invalid:8080" in '
                       f"{root}{etc}/sites-enabled/matrix:10\n")

    with pytest.raises(ConfigError) as refused:
        reverse_proxy.test_candidate("nginx", str(etc / "sites-available" / "matrix"), "http://mas.invalid:8080", run,
                                     "matrix.example.com", str(etc / "nginx.conf"))
    message = str(refused.value)
    assert f"host not found in upstream \"mas.invalid:8080\" in {etc}/sites-enabled/matrix:10" in message
    assert "nothing was changed and nginx was not reloaded" in message and roots[0] not in message
    assert snapshot(tmp_path) == before and not os.path.exists(roots[0])


def test_a_file_nginx_never_reads_is_refused_before_any_test(tmp_path):
    etc = operator_tree(tmp_path)
    (etc / "sites-available" / "unused").write_text(SITE)

    def run(_command):
        raise AssertionError("nothing to test")

    with pytest.raises(ConfigError, match="does not include it, so routes added there would never be served"):
        reverse_proxy.test_candidate("nginx", str(etc / "sites-available" / "unused"), UPSTREAM, run,
                                     "matrix.example.com", str(etc / "nginx.conf"))
    with pytest.raises(ConfigError, match="nginx's main configuration"):
        reverse_proxy.test_candidate("nginx", str(etc / "sites-available" / "matrix"), UPSTREAM, run,
                                     "matrix.example.com", str(tmp_path / "nginx.conf"))


@pytest.mark.parametrize("kind", SHOWN)
def test_a_shown_kind_or_an_empty_command_has_no_candidate_to_test(kind, tmp_path):
    etc = operator_tree(tmp_path)

    def run(_command):
        raise AssertionError("nothing to test")

    assert reverse_proxy.test_candidate(kind, "", UPSTREAM, run)["tested"] is False
    assert reverse_proxy.test_candidate("nginx", str(etc / "sites-available" / "matrix"), UPSTREAM, run,
                                        "matrix.example.com", str(etc / "nginx.conf"), "")["tested"] is False


def test_nginx_words_as_nginx_reads_them():
    text = 'a "b;c" d#e; # f;\nlog_format x \'${host}{}\' ${x}y;\nserver {\n}\n'
    statements = [([w[0] for w in words], end) for words, end in reverse_proxy._nginx_statements(text)]
    assert statements == [(["a", "b;c", "d#e"], ";"), (["log_format", "x", "${host}{}", "${x}y"], ";"),
                          (["server"], "{"), ([], "}")]


def test_the_advisor_reads_the_file_of_a_kind_that_can_read_one(tmp_path):
    site = tmp_path / "matrix.conf"
    site.write_text(SITE)

    def read(path):
        return open(path).read()

    [finding] = reverse_proxy.proxy_routes_findings(str(site), read_text=read, kind_name="nginx")
    assert finding["severity"] == "WARN" and "the nginx config does not route" in finding["message"]
    assert "syn2mas_reverse_proxy: nginx" in finding["remedy"]
    site.write_text(reverse_proxy.nginx_add_routes(SITE, UPSTREAM, "matrix.example.com"))
    assert reverse_proxy.proxy_routes_findings(str(site), read_text=read, kind_name="nginx") == []
    # A shown kind's file is a snippet of ours or the operator's own: not read, nothing said of it.
    assert reverse_proxy.proxy_routes_findings(str(site), read_text=read, kind_name="caddy") == []
    [unknown] = reverse_proxy.proxy_routes_findings(str(site), read_text=read, kind_name="lighttpd")
    assert "unknown reverse proxy 'lighttpd'" in unknown["message"] and "nginx, apache" in unknown["remedy"]
