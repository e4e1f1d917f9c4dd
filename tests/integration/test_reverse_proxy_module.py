"""The syn2mas_reverse_proxy module run by ansible-playbook: a snippet file for a proxy other than nginx
(Caddy here) written, kept, shown in check mode and removed; an nginx file that does not exist refused;
a symlinked nginx site edited through its link, which stays a link.
(nginx itself, tested and reloaded for real: test_reverse_proxy_e2e.py.)"""

from __future__ import annotations

import os

from _syn2mas import reverse_proxy
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
