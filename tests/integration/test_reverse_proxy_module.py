"""The syn2mas_reverse_proxy module run by ansible-playbook: a snippet file for a proxy other than nginx
(Caddy here) written, kept, shown in check mode and removed; an nginx file that does not exist refused;
a symlinked nginx site edited through its link, which stays a link; the candidate test with Debian's real nginx
(`nginx -t` on a copy): accepted, and refused with the operator's file named, the operator's files unchanged.
(nginx itself, tested and reloaded for real: test_reverse_proxy_e2e.py.)"""

from __future__ import annotations

import os

from _syn2mas.host import reverse_proxy
from tests.support import homeservers
from tests.support.ansible_run import run_tasks

UPSTREAM = "http://127.0.0.1:8080"


def task(**args):
    return {"matrix.syn2mas.syn2mas_reverse_proxy": {"kind": "caddy", "mas_upstream": UPSTREAM, **args}}


def test_a_caddy_snippet_file_is_written_once_shown_in_check_mode_and_removed(tmp_path):
    path = tmp_path / "syn2mas-mas-compat.caddy"
    run = run_tasks(tmp_path, [task(path=str(path))], check=True, diff=True)
    assert run.result["changed"] is True and not path.exists()
    assert "+@syn2mas_mas_compat path_regexp" in run.stdout

    run = run_tasks(tmp_path, [task(path=str(path)), task(path=str(path))])
    first, second = run.results
    assert first["changed"] is True and second["changed"] is False
    assert path.read_text() == reverse_proxy.render("caddy", UPSTREAM, indent="") == first["snippet"]
    assert os.stat(path).st_mode & 0o777 == 0o644

    run = run_tasks(tmp_path, [task(path=str(path), state="absent"), task(path=str(path), state="absent")])
    assert [r["changed"] for r in run.results] == [True, False] and not path.exists()


def test_an_operators_file_without_the_marks_is_not_removed(tmp_path):
    path = tmp_path / "Caddyfile"
    path.write_text("matrix.example.org {\n\treverse_proxy localhost:8008\n}\n")
    run = run_tasks(tmp_path, [task(path=str(path), state="absent")])
    assert run.result["changed"] is False and path.exists()


def test_nginx_needs_the_file_with_the_server_block(tmp_path):
    run = run_tasks(tmp_path, [{"matrix.syn2mas.syn2mas_reverse_proxy": {
        "path": str(tmp_path / "missing.conf"), "mas_upstream": UPSTREAM}}])
    assert run.result["failed"] is True
    assert "file not found" in run.result["msg"]


def test_a_symlinked_nginx_site_stays_a_symlink_and_its_target_is_edited(tmp_path):
    # Debian's layout: sites-enabled/matrix -> ../sites-available/matrix; the operator names the link.
    available, enabled = tmp_path / "sites-available", tmp_path / "sites-enabled"
    available.mkdir()
    enabled.mkdir()
    site = "server {\n    listen 80;\n    server_name matrix.example.test;\n" \
           "    location / {\n        proxy_pass http://127.0.0.1:8008;\n    }\n}\n"
    (available / "matrix").write_text(site)
    os.chmod(available / "matrix", 0o640)
    link = enabled / "matrix"
    link.symlink_to("../sites-available/matrix")
    nginx = {"matrix.syn2mas.syn2mas_reverse_proxy": {"path": str(link), "mas_upstream": UPSTREAM}}
    run = run_tasks(tmp_path, [nginx, nginx])
    assert [r["changed"] for r in run.results] == [True, False]
    assert os.readlink(link) == "../sites-available/matrix"
    assert (available / "matrix").read_text() == reverse_proxy.nginx_add_routes(site, UPSTREAM)
    assert os.stat(available / "matrix").st_mode & 0o777 == 0o640
    assert sorted(os.listdir(enabled)) == ["matrix"] and sorted(os.listdir(available)) == ["matrix"]

    absent = {"matrix.syn2mas.syn2mas_reverse_proxy": {**nginx["matrix.syn2mas.syn2mas_reverse_proxy"],
                                                       "state": "absent"}}
    run = run_tasks(tmp_path, [absent])
    assert run.result["changed"] is True
    assert os.readlink(link) == "../sites-available/matrix" and (available / "matrix").read_text() == site


def real_nginx_tree(tmp_path, site_text: str):
    """An operator's nginx layout for Debian's real nginx binary: nginx.conf includes mime.types (relative) and
    sites-enabled/* (absolute), where the homeserver's site is a link into sites-available/."""
    etc = tmp_path / "etc-nginx"
    (etc / "sites-available").mkdir(parents=True)
    (etc / "sites-enabled").mkdir()
    (etc / "run").mkdir()
    (etc / "mime.types").write_text("types { text/html html; }\n")
    (etc / "nginx.conf").write_text(f"""pid {etc}/run/nginx.pid;
error_log {etc}/run/error.log;
events {{ worker_connections 16; }}
http {{
    include mime.types;
    access_log {etc}/run/access.log;
    include {etc}/sites-enabled/*;
}}
""")
    (etc / "sites-available" / "matrix").write_text(site_text)
    os.chmod(etc / "sites-available" / "matrix", 0o640)
    (etc / "sites-enabled" / "matrix").symlink_to("../sites-available/matrix")
    return etc


def candidate_task(etc, upstream=UPSTREAM):
    return {"matrix.syn2mas.syn2mas_reverse_proxy": {
        "state": "candidate", "path": str(etc / "sites-enabled" / "matrix"), "mas_upstream": upstream,
        "server_name": "matrix.example.test", "main_config": str(etc / "nginx.conf"),
        "candidate_test_command": f"{homeservers.Nginx.binary()} -t -q -c {{config}} -p {etc}/run"}}


SITE = ("server {\n    listen 127.0.0.1:1;\n    server_name matrix.example.test;\n"
        "    location ~ ^(/_matrix|/_synapse/client) {\n        proxy_pass http://127.0.0.1:8008;\n    }\n}\n")


def files_of(folder) -> dict:
    return {str(p): (p.read_bytes(), os.stat(p).st_mode) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_real_nginx_accepts_the_candidate_and_the_operators_files_stay_as_they_were(tmp_path):
    etc = real_nginx_tree(tmp_path, SITE)
    before = files_of(etc)
    run = run_tasks(tmp_path, [candidate_task(etc), candidate_task(etc)], check=True)
    for result in run.results:
        assert result.get("failed") is not True, result
        assert result["tested"] is True and result["changed"] is False and result["managed"] is True
    assert {k: v for k, v in files_of(etc).items() if "/run/" not in k} == \
        {k: v for k, v in before.items() if "/run/" not in k}
    assert os.readlink(etc / "sites-enabled" / "matrix") == "../sites-available/matrix"


def test_real_nginx_refusing_the_candidate_fails_naming_the_operators_file(tmp_path):
    # The operator's site holds a location nginx refuses twice in one server block: already in the file, it
    # would break the next reload too, so the candidate (our block beside it) is refused.
    broken = SITE.replace("    location ~", "    location = /x { return 204; }\n    location = /x { return 204; }\n"
                          "    location ~", 1)
    etc = real_nginx_tree(tmp_path, broken)
    before = files_of(etc)
    run = run_tasks(tmp_path, [candidate_task(etc)])
    assert run.result["failed"] is True
    message = run.result["msg"]
    assert 'duplicate location "/x"' in message and f"{etc}/sites-enabled/matrix:" in message, message
    assert "nothing was changed and nginx was not reloaded" in message and "syn2mas-proxy-candidate" not in message
    assert {k: v for k, v in files_of(etc).items() if "/run/" not in k} == \
        {k: v for k, v in before.items() if "/run/" not in k}

    # An upstream nginx cannot resolve: refused, with the line of our block in the candidate.
    etc_ok = real_nginx_tree(tmp_path / "second", SITE)
    run = run_tasks(tmp_path, [candidate_task(etc_ok, "http://mas-stand-in.invalid:8080")])
    assert run.result["failed"] is True and "host not found in upstream" in run.result["msg"], run.result["msg"]
    assert (etc_ok / "sites-available" / "matrix").read_text() == SITE
