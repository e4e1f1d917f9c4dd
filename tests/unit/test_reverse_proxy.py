"""MAS's compat routes as each proxy gets them, and the nginx server-block edit (the end-to-end test runs
the result in a real nginx: tests/integration/test_reverse_proxy_e2e.py)."""

from __future__ import annotations

import re

import pytest

from _syn2mas import reverse_proxy
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
