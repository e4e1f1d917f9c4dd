"""Legacy clients through the reverse proxy, on real parts: Debian's nginx on loopback in front of a real
Synapse (its own config: an operator's site file with the homeserver's server block), the runbook run
by ansible-playbook with the reverse_proxy role managing that nginx (its `nginx -t` and reload commands
given as an operator gives them).

MAS cannot run here: the fleet's MAS stand-in (tests/support/mas_stand_in.py) STANDS IN FOR MAS at MAS's
address. It answers the compat routes in MAS's shape and records every request that reaches it, so the
tests can tell which requests the proxy sent to MAS and which to Synapse (besides the runbook's own gate,
which asks MAS directly before Synapse is stopped: GATE).

The steps run in order on one module-scoped homeserver: before the migration the probe finds Synapse
behind the compat routes -> check mode shows the nginx diff and changes nothing -> an nginx that refuses
the new config (`nginx -t` on a copy with the routes fails) fails the preparation before any stop: Synapse
untouched, the proxy's file unchanged, nginx not reloaded -> with that candidate test turned off, the same
refusal stops the run inside the window before Synapse starts, and the rescue brings Synapse back on legacy
authentication -> the real run sends the three compat routes
to MAS and everything else to Synapse -> a second run (and the role on its own) changes nothing -> the
role on its own puts back a file nginx refuses, without reloading -> the rollback restores the proxy's
file byte for byte, reloads nginx, and legacy password login works through the proxy again -> migrated again
with the conf.d override named by auth_delegation_override_path, a rollback that leaves Synapse delegating (an
operator's stray copy of the override) is reported failed -> a rollback whose proxy reload fails on an unrelated
broken nginx file, with Synapse back on legacy authentication, is reported rolled back, naming the proxy.
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
import yaml

from _syn2mas.host import reverse_proxy
from tests.support import homeservers
from tests.support.ansible_run import latest_report, recap
from tests.support.fleet import host_state, running_fleet

pytestmark = pytest.mark.timeout(1500)

# What the runbook's gate asks MAS before Synapse is stopped, none of it through the proxy: from the host, its
# health, issuer and compat login; from the controller, its public URL (the fleet's public_base is the stand-in).
GATE = [("GET", "/health"), ("GET", "/.well-known/openid-configuration"), ("GET", "/_matrix/client/v3/login"),
        ("GET", "/.well-known/openid-configuration")]


class OperatorNginx:
    """Debian's nginx as an operator runs it in front of Synapse: nginx.conf includes sites/*.conf, and the
    homeserver's site proxies /_matrix and /_synapse/client to Synapse with a regex location."""

    def __init__(self, basedir: str, hs):
        self.prefix = os.path.join(basedir, "proxy")
        os.makedirs(os.path.join(self.prefix, "sites"), exist_ok=True)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.port = homeservers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.site = os.path.join(self.prefix, "sites", "matrix.conf")
        self.binary = homeservers.Nginx.binary()
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(self.conf, "w") as handle:
            handle.write(f"""daemon off;
{user}worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {self.prefix}/access.log;
  client_body_temp_path {self.prefix}/tmp;
  proxy_temp_path {self.prefix}/tmp;
  fastcgi_temp_path {self.prefix}/tmp;
  uwsgi_temp_path {self.prefix}/tmp;
  scgi_temp_path {self.prefix}/tmp;
  include {self.prefix}/sites/*.conf;
}}
""")
        with open(self.site, "w") as handle:
            handle.write(f"""# The homeserver, behind nginx (operator's file)
server {{
    listen 127.0.0.1:{self.port};
    server_name matrix.{hs.server_name};

    location ~ ^(/_matrix|/_synapse/client) {{
        proxy_pass http://127.0.0.1:{hs.port};
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header Host $host;
        client_max_body_size 50M;
    }}
}}
""")
        os.chmod(self.site, 0o640)  # an operator's mode, which every step must keep
        self.proc = None

    @property
    def test_command(self) -> str:
        return f"{self.binary} -t -q -c {self.conf} -p {self.prefix}"

    @property
    def candidate_test_command(self) -> str:
        """The test of a copy of this configuration ({config}: the copy's nginx.conf), as an operator gives it."""
        return f"{self.binary} -t -q -c {{config}} -p {self.prefix}"

    @property
    def reload_command(self) -> str:
        return f"{self.binary} -s reload -c {self.conf} -p {self.prefix}"

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-c", self.conf, "-p", self.prefix],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _attempt in range(100):
            try:
                if homeservers.http("GET", self.url + "/_matrix/client/versions", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        raise RuntimeError(f"nginx did not start in front of Synapse: {open(self.prefix + '/error.log').read()}")

    def pid(self) -> int:
        with open(os.path.join(self.prefix, "nginx.pid")) as handle:
            return int(handle.read().strip())

    def workers(self) -> set:
        """The master's worker processes: a reload starts new ones (a restart would change the master)."""
        master, found = self.pid(), set()
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                found.add(int(entry))
        return found

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Lab:
    def __init__(self, fleet, nginx, mas):
        self.fleet, self.nginx, self.mas = fleet, nginx, mas
        self.hs = fleet.hosts["hs1"]
        self.original_site = open(nginx.site).read()
        self.original_bytes = open(nginx.site, "rb").read()

    def vars(self, **extra) -> dict:
        return {"hs1": {
            "syn2mas_reverse_proxy": "nginx",
            "syn2mas_reverse_proxy_config": self.nginx.site,
            "syn2mas_reverse_proxy_server_name": f"matrix.{self.hs.server_name}",
            "syn2mas_reverse_proxy_test_command": self.nginx.test_command,
            "syn2mas_reverse_proxy_reload_command": self.nginx.reload_command,
            "syn2mas_reverse_proxy_main_config": self.nginx.conf,
            "syn2mas_reverse_proxy_candidate_test_command": self.nginx.candidate_test_command,
            "syn2mas_mas_upstream": self.mas.url,
            "syn2mas_homeserver_url": self.nginx.url,
            **extra}}

    def playbook(self, name: str, *args: str, **extra):
        self.fleet.write_inventory(self.vars(**extra))
        return self.fleet.playbook(name, *args)

    def role(self, tmp_path, *args: str, **extra):
        """The reverse_proxy role on its own, as an operator runs it outside the runbook."""
        playbook = tmp_path / "proxy.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "synapse", "gather_facts": False, "roles": [
            {"role": "matrix.syn2mas.reverse_proxy"}]}]))
        self.fleet.write_inventory(self.vars(**extra))
        return self.fleet.playbook(str(playbook), *args)

    def through_proxy(self, method, path, body=None, token=None):
        return homeservers.http(method, self.nginx.url + path, body, token=token)

    def password_login(self, who="alice"):
        return self.through_proxy("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": who},
            "password": homeservers.PASSWORDS[who]})


@pytest.fixture(scope="module")
def lab(pg):
    with running_fleet(pg, ("hs1",)) as fleet:
        nginx = OperatorNginx(fleet.base, fleet.hosts["hs1"])
        nginx.start()
        try:
            yield Lab(fleet, nginx, fleet.mas["hs1"])
        finally:
            nginx.stop()


def test_1_before_the_migration_the_probe_finds_synapse_behind_the_compat_routes(lab):
    findings = reverse_proxy.probe_compat_routes(lab.nginx.url, lab.mas.url)
    assert {f["route"]: f["reached"] for f in findings} == {"login": "not_mas", "refresh": "not_mas"}
    assert all(f["severity"] == "ERROR" for f in findings)
    # Judged without MAS's own answers too: Synapse's /login has no OAuth-aware SSO flow.
    assert reverse_proxy.probe_compat_routes(lab.nginx.url)[0]["reached"] == "not_mas"
    # The stand-in's own answers are what the probe calls MAS.
    direct = reverse_proxy.probe_compat_routes(lab.mas.url, lab.mas.url)
    assert {f["reached"] for f in direct} == {"mas"}
    lab.mas.clear_requests()


def test_2_check_mode_shows_the_nginx_diff_and_changes_nothing(lab):
    pid = lab.nginx.pid()
    run = lab.playbook("migrate.yml", "--check", "--diff")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert open(lab.nginx.site, "rb").read() == lab.original_bytes
    assert f"+        proxy_pass {lab.mas.url};" in run.stdout
    assert "+    location ~ ^/_matrix/client/[^/]+/(login|logout|refresh)(/|$) {" in run.stdout
    assert lab.nginx.pid() == pid and lab.mas.requests == GATE  # the gate's own questions, nothing proxied
    assert lab.hs.healthy()


def test_3_nginx_refusing_the_routes_fails_the_preparation_before_any_stop(lab):
    """The candidate test in the preparation: nginx tests a copy of its configuration with the routes and
    refuses it, so the run fails before Synapse is stopped: same Synapse, the proxy's file byte for byte (and
    its mode), nginx never reloaded and still serving its old configuration."""
    lab.mas.clear_requests()
    synapse_pid, master, workers = lab.hs.pid(), lab.nginx.pid(), lab.nginx.workers()
    # A MAS address nginx cannot resolve: `nginx -t` on the candidate fails ("host not found in upstream").
    run = lab.playbook("migrate.yml", syn2mas_mas_upstream="http://mas-stand-in.invalid:8080")
    assert run.returncode != 0
    report = latest_report(lab.fleet)["hosts"]["hs1"]
    assert report["outcome"] == "failed" and report["failed_phase"] == "prepare", report
    assert [p["phase"] for p in report["phase_seconds"]] == ["backup", "prepare"], report["phase_seconds"]
    assert report["rolled_back"] is False and report["synapse_down"] is False, report
    # The error is nginx's own, naming the operator's file (not the copy), and says Synapse was never stopped.
    assert "host not found in upstream" in report["error"] and f"{lab.nginx.site}:" in report["error"], report
    assert "syn2mas-proxy-candidate" not in report["error"]
    assert "Synapse was never stopped" in report["error"], report["error"]
    # Synapse never stopped; the proxy's file as it was; nginx neither reloaded nor restarted.
    assert lab.hs.pid() == synapse_pid and lab.hs.healthy()
    assert open(lab.nginx.site, "rb").read() == lab.original_bytes
    assert os.stat(lab.nginx.site).st_mode & 0o777 == 0o640
    assert lab.nginx.pid() == master and lab.nginx.workers() == workers
    # nginx still serves the old configuration: legacy login goes to Synapse, nothing to MAS beyond the gate.
    status, body = lab.password_login()
    assert status == 200 and body["user_id"] == f"@alice:{lab.hs.server_name}", body
    asked = lab.mas.requests
    assert asked[:len(GATE)] == GATE and set(asked[len(GATE):]) <= {("GET", "/health")}, asked
    assert host_state(lab.hs) == "legacy"


def test_3b_without_the_candidate_test_nginx_refusing_the_routes_stops_the_run_before_synapse_starts(lab):
    """The operator turned the candidate test off (an empty command, as for a proxy in a container): the
    routes are then refused inside the window, and the run rolls back before Synapse starts."""
    lab.mas.clear_requests()
    run = lab.playbook("migrate.yml", syn2mas_mas_upstream="http://mas-stand-in.invalid:8080",
                       syn2mas_reverse_proxy_candidate_test_command="")
    assert run.returncode != 0
    assert "host not found" in run.stdout, run.stdout[-6000:]
    # The proxy's file is as it was (its mode too), and nginx still serves it.
    assert open(lab.nginx.site, "rb").read() == lab.original_bytes
    assert os.stat(lab.nginx.site).st_mode & 0o777 == 0o640
    report = latest_report(lab.fleet)["hosts"]["hs1"]
    assert report["outcome"] == "failed" and report["rolled_back"] is True
    assert report["failed_phase"] == "reverse_proxy"
    # Synapse was never started on the new configuration: the run went from the proxy to the rollback.
    assert [p["phase"] for p in report["phase_seconds"]] == [
        "backup", "prepare", "synapse_stop", "mas_stop", "activate", "import", "reverse_proxy", "rollback"]
    # The rescue started Synapse again on legacy authentication: password login works through the proxy.
    assert lab.hs.healthy()
    status, body = lab.password_login()
    assert status == 200 and body["user_id"] == f"@alice:{lab.hs.server_name}", body
    # Nothing was proxied to MAS: the gate's questions, then only the runbook's own health checks of MAS (its
    # restart in the preparation, its start again in the rollback).
    asked = lab.mas.requests
    assert asked[:len(GATE)] == GATE and set(asked[len(GATE):]) <= {("GET", "/health")}, asked


def test_4_after_the_runbook_the_compat_routes_reach_mas_and_the_rest_reaches_synapse(lab):
    master, workers = lab.nginx.pid(), lab.nginx.workers()
    run = lab.playbook("migrate.yml")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    live_check = run.stdout.split("Check that they reach MAS, not Synapse]", 1)[1].split("TASK [", 1)[0]
    assert "ok: [hs1]" in live_check, live_check  # the live check ran, and passed
    assert lab.hs.healthy(), lab.hs.log_tail()
    site = open(lab.nginx.site).read()
    assert site != lab.original_site and reverse_proxy.nginx_remove_routes(site) == lab.original_site
    assert os.stat(lab.nginx.site).st_mode & 0o777 == 0o640
    assert lab.nginx.pid() == master and lab.nginx.workers() - workers  # reloaded, not restarted
    full_report = latest_report(lab.fleet)
    report = full_report["hosts"]["hs1"]
    assert report["outcome"] == "migrated"
    # The fleet report carries the live check of the compat routes.
    assert report["compat_routes"] == {"reach_mas": True, "routes": {"login": "mas", "refresh": "mas"},
                                       "findings": []}, report["compat_routes"]
    md = open(os.path.join(lab.fleet.report_dir, full_report["run_id"], "migrate.md")).read()
    assert "Legacy clients' routes through the public URL reach MAS: login mas, refresh mas" in md
    assert [p["phase"] for p in report["phase_seconds"]] == [
        "backup", "prepare", "synapse_stop", "mas_stop", "activate", "import", "reverse_proxy", "mas_start",
        "synapse_start", "well_known"]
    lab.mas.clear_requests()
    compat = [("GET", "/_matrix/client/v3/login"), ("POST", "/_matrix/client/v3/login"),
              ("POST", "/_matrix/client/v3/logout"), ("POST", "/_matrix/client/r0/refresh"),
              ("GET", "/_matrix/client/v3/login/sso/redirect?redirectUrl=x")]
    for method, path in compat:
        lab.through_proxy(method, path, {} if method == "POST" else None)
    assert lab.mas.requests == compat
    # Every other client route reaches Synapse: the same answer as from Synapse directly, nothing at MAS.
    lab.mas.clear_requests()
    others = [("GET", "/_matrix/client/versions"), ("GET", f"/_matrix/client/v3/profile/@alice:{lab.hs.server_name}"),
              ("GET", "/_matrix/client/v3/sync"), ("GET", "/_matrix/client/v3/publicRooms"),
              ("GET", "/_matrix/client/v3/account/whoami"), ("POST", "/_matrix/client/v3/loginx"),
              ("GET", "/_synapse/client/pick_username/account_details")]
    for method, path in others:
        direct = homeservers.http(method, lab.hs.base_url + path, {} if method == "POST" else None)
        proxied = lab.through_proxy(method, path, {} if method == "POST" else None)
        assert proxied[0] == direct[0], (path, proxied, direct)
        assert proxied[0] != 502, path
    assert lab.mas.requests == []


def test_5_a_second_run_changes_nothing(lab, tmp_path):
    site = open(lab.nginx.site).read()
    run = lab.playbook("migrate.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    assert all(s["changed"] == 0 for s in recap(run.stdout).values()), recap(run.stdout)
    # The role on its own (the host is delegated, so the runbook skips it): no change, no reload.
    workers = lab.nginx.workers()
    role_run = lab.role(tmp_path, "--diff")
    assert role_run.returncode == 0, role_run.stdout[-4000:]
    assert recap(role_run.stdout)["hs1"]["changed"] == 0, role_run.stdout  # a reload would count as a change
    assert open(lab.nginx.site).read() == site
    assert lab.nginx.workers() <= workers  # no new workers: no reload


def test_5b_the_role_on_its_own_puts_back_a_file_nginx_refuses(lab, tmp_path):
    # Without the runbook's rollback behind it: the role's own rescue gives back the file byte for byte,
    # with its mode, and nginx is not reloaded (the routes it serves still reach MAS).
    before = open(lab.nginx.site, "rb").read()
    workers = lab.nginx.workers()
    run = lab.role(tmp_path, syn2mas_mas_upstream="http://mas-stand-in.invalid:8080")
    assert run.returncode != 0
    assert "the proxy refused the compatibility routes" in run.stdout and "host not found" in run.stdout, \
        run.stdout[-4000:]
    assert open(lab.nginx.site, "rb").read() == before
    assert os.stat(lab.nginx.site).st_mode & 0o777 == 0o640
    assert lab.nginx.workers() <= workers  # no new workers: no reload
    lab.mas.clear_requests()
    lab.through_proxy("GET", "/_matrix/client/v3/login")
    assert lab.mas.requests == [("GET", "/_matrix/client/v3/login")]


def test_6_rollback_restores_the_proxy_and_legacy_login_works_through_it(lab):
    master, workers = lab.nginx.pid(), lab.nginx.workers()
    run = lab.playbook("rollback.yml", "-e", "rollback_mas_database=empty", "-e", "rollback_force=true")
    assert run.returncode == 0, run.stdout[-6000:]
    assert open(lab.nginx.site, "rb").read() == lab.original_bytes
    assert os.stat(lab.nginx.site).st_mode & 0o777 == 0o640
    # nginx was reloaded (new workers), not restarted (the same master).
    assert lab.nginx.pid() == master and lab.nginx.workers() - workers
    assert lab.hs.healthy()
    lab.mas.clear_requests()
    status, body = lab.password_login("bob")
    assert status == 200, body
    status, me = lab.through_proxy("GET", "/_matrix/client/v3/account/whoami", token=body["access_token"])
    assert status == 200 and me["user_id"] == f"@bob:{lab.hs.server_name}", me
    status, _body = lab.through_proxy("POST", "/_matrix/client/v3/logout", {}, token=body["access_token"])
    assert status == 200
    assert lab.mas.requests == []


def login_flows(hs) -> list:
    """What Synapse itself offers for login (asked directly, not through the proxy)."""
    status, body = homeservers.http("GET", hs.base_url + "/_matrix/client/v3/login")
    return [f["type"] for f in body.get("flows", [])] if status == 200 else [status]


def test_7_an_override_set_through_the_roles_own_input_is_migrated_and_rolled_back_only_as_observed(lab):
    """The conf.d override named by auth_delegation's own input (auth_delegation_override_path) is in the backup,
    so the rollback removes it. A rollback that leaves Synapse delegating (an operator's stray copy of the
    override the backup cannot know) is reported as failed, naming it, with the state record left as it was."""
    hs = lab.hs
    confd = os.path.join(hs.confdir, "conf.d")
    os.makedirs(confd, exist_ok=True)
    override = os.path.join(confd, "zz-mas.yaml")
    reads_confd = {  # Synapse reads homeserver.yaml and conf.d/, as Debian's unit does
        "synapse_service_start_command": hs.start_command.replace(f"-c {hs.homeserver_yaml}",
                                                                  f"-c {hs.homeserver_yaml} -c {confd}"),
        "auth_delegation_override_path": override}
    homeserver_before = open(hs.homeserver_yaml).read()
    run = lab.playbook("migrate.yml", **reads_confd)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert os.path.exists(override) and open(hs.homeserver_yaml).read() == homeserver_before
    assert "m.login.password" not in login_flows(hs)
    # The operator copies the override by hand; the rollback cannot know that file.
    stray = os.path.join(confd, "zz-operator-copy.yaml")
    with open(stray, "w") as handle:
        handle.write(open(override).read())
    run = lab.playbook("rollback.yml", **reads_confd)
    assert run.returncode != 0
    entry = latest_report(lab.fleet, "rollback")["hosts"]["hs1"]
    assert entry["outcome"] == "rollback failed", entry
    assert "rollback failed: Synapse offers no password login" in entry["error"], entry["error"]
    assert "it still delegates to MAS" in entry["error"] and entry["rolled_back"] is False, entry
    assert not os.path.exists(override)  # its own override is gone (it was in the backup)...
    assert "m.login.password" not in login_flows(hs)  # ...but Synapse still delegates: not "rolled back"
    assert host_state(hs) == "delegated"
    os.unlink(stray)


def test_8_a_proxy_that_cannot_reload_does_not_hide_a_rollback_that_worked(lab):
    """The other way round: an unrelated broken nginx file makes the rollback's `nginx -t` fail, yet Synapse is
    back on legacy authentication. The report and the state record say so, naming the proxy's failure."""
    hs = lab.hs
    confd = os.path.join(hs.confdir, "conf.d")
    broken = os.path.join(os.path.dirname(lab.nginx.site), "other-site.conf")
    with open(broken, "w") as handle:
        handle.write("server { listen 127.0.0.1:1; this_is_not_a_directive; }\n")
    try:
        run = lab.playbook("rollback.yml", synapse_service_start_command=hs.start_command.replace(
            f"-c {hs.homeserver_yaml}", f"-c {hs.homeserver_yaml} -c {confd}"),
            auth_delegation_override_path=os.path.join(confd, "zz-mas.yaml"))
    finally:
        os.unlink(broken)
    assert run.returncode == 0, run.stdout[-8000:]
    report = latest_report(lab.fleet, "rollback")
    entry = report["hosts"]["hs1"]
    assert entry["outcome"] == "rolled back" and entry["rolled_back"] is True, entry
    assert "the reverse proxy was not reloaded" in entry["error"] and "this_is_not_a_directive" in entry["error"], \
        entry["error"]
    assert host_state(hs) == "legacy"
    assert "m.login.password" in login_flows(hs)
    md = open(os.path.join(lab.fleet.report_dir, report["run_id"], "rollback.md")).read()
    assert "| hs1 | rolled back | delegated → legacy |" in md and "still down" not in md, md
    # The proxy's file is restored; once the operator's file is fixed, a reload serves it.
    assert open(lab.nginx.site, "rb").read() == lab.original_bytes
    subprocess.run(lab.nginx.reload_command, shell=True, check=True)
    status, body = lab.password_login("bob")
    assert status == 200, body
