"""The live checks against real Synapse servers: one delegating to MAS (MAS itself is not run here,
so what needs it is reported as not proven), and the same Synapse still on its legacy
authentication, where each check that must fail fails and says which."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading

import pytest
import yaml

from _syn2mas.migration.live_checks import ERROR, OK, WARN, LiveOptions, run_live_checks
from tests.support.net import free_port
from tests.support.pgcluster import new_db_name
from tests.support.synapse_process import Synapse, wait_healthy
from tests.support import synapse_schema

ISSUER = "https://auth.test.local/"


@pytest.fixture
def static_site(tmp_path):
    """A plain HTTP server for the .well-known file, as the web server in front of the domain."""
    root = tmp_path / "www"
    (root / ".well-known" / "matrix").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/.well-known/matrix/client"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=synapse_schema.VERSIONS, ids=lambda v: f"synapse-{v}")
def synapse_configs(request, pg, tmp_path):
    version = request.param
    dbname = new_db_name("synapse_live")
    pg.create_database(dbname, template=synapse_schema.create_template(pg, version))
    port = free_port()
    legacy = {
        "server_name": "test.local", "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": False,
                       "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "psycopg2", "args": {"host": pg.sockdir, "port": pg.port, "user": "postgres",
                                                  "dbname": dbname, "cp_min": 1, "cp_max": 3}},
        "media_store_path": str(tmp_path / "media"), "signing_key_path": str(tmp_path / "signing.key"),
        "report_stats": False, "trusted_key_servers": [], "password_config": {"enabled": True},
    }
    legacy_path = tmp_path / "legacy.yaml"
    legacy_path.write_text(yaml.safe_dump(legacy))
    subprocess.run([synapse_schema.synapse_python(version), "-m", "synapse.app.homeserver", "-c", str(legacy_path),
                    "--generate-keys"], check=True, capture_output=True)
    mas_port = free_port()  # nothing listens there: MAS is not run in these tests
    delegated = dict(legacy, password_config={"enabled": False}, matrix_authentication_service={
        "enabled": True, "endpoint": f"http://127.0.0.1:{mas_port}/", "secret": "shared-secret"})
    delegated_path = tmp_path / "delegated.yaml"
    delegated_path.write_text(yaml.safe_dump(delegated))
    yield {"version": version, "work": tmp_path, "legacy": legacy_path, "delegated": delegated_path,
           "url": f"http://127.0.0.1:{port}", "mas_url": f"http://127.0.0.1:{mas_port}"}
    pg.drop_database(dbname)


def run_against(setup, config, name, options):
    synapse = Synapse(setup["version"], [config], setup["work"], name).start()
    try:
        wait_healthy(synapse, setup["url"])
        return run_live_checks(options)
    finally:
        synapse.stop()


def by_check(result):
    return {c["check"]: c for c in result["checks"]}


def test_delegating_synapse_passes_and_absent_mas_is_not_proven(synapse_configs, static_site):
    root, well_known_url = static_site
    (root / ".well-known" / "matrix" / "client").write_text(json.dumps({
        "m.homeserver": {"base_url": synapse_configs["url"]},
        "org.matrix.msc2965.authentication": {"issuer": ISSUER, "account": ISSUER + "account/"}}))
    result = run_against(synapse_configs, synapse_configs["delegated"], "delegated", LiveOptions(
        synapse_url=synapse_configs["url"], mas_url=synapse_configs["mas_url"], issuer=ISSUER,
        well_known_url=well_known_url, timeout=5))
    checks = by_check(result)
    assert result["ok"] is True and result["errors"] == 0, result
    assert checks["synapse_health"]["level"] == OK
    assert checks["login_flows"]["level"] == OK
    assert checks["well_known"]["level"] == OK and ISSUER in checks["well_known"]["message"]
    # MAS is not running: what depends on it is a WARN that says what could not be proven.
    assert checks["mas_reachable"]["level"] == WARN
    assert "unreachable" in checks["mas_reachable"]["message"]
    assert "OpenID configuration" in checks["mas_reachable"]["message"]
    assert checks["auth_metadata"]["level"] == WARN and "not proven" in checks["auth_metadata"]["message"]
    assert result["verdict"] == "live checks passed: 3 of 5; not proven: auth_metadata, mas_reachable"


def test_legacy_synapse_fails_each_check_by_name(synapse_configs, static_site):
    root, well_known_url = static_site
    (root / ".well-known" / "matrix" / "client").write_text(json.dumps({
        "m.homeserver": {"base_url": synapse_configs["url"]}}))
    result = run_against(synapse_configs, synapse_configs["legacy"], "legacy", LiveOptions(
        synapse_url=synapse_configs["url"], mas_url=synapse_configs["mas_url"], issuer=ISSUER,
        well_known_url=well_known_url, timeout=5))
    checks = by_check(result)
    assert result["ok"] is False
    assert checks["synapse_health"]["level"] == OK
    assert checks["login_flows"]["level"] == ERROR
    assert "still offers its own password login" in checks["login_flows"]["message"]
    assert checks["auth_metadata"]["level"] == ERROR and "not delegating" in checks["auth_metadata"]["message"]
    assert checks["well_known"]["level"] == ERROR and "no org.matrix.msc2965.authentication" in \
        checks["well_known"]["message"]
    assert all(checks[c]["remedy"] for c in ("login_flows", "auth_metadata", "well_known"))
    assert result["verdict"].startswith("live checks FAILED: login_flows, auth_metadata, well_known")


def test_synapse_down_is_an_error():
    # Nothing listens on the port: the same for every Synapse release, so no Synapse is prepared for it.
    result = run_live_checks(LiveOptions(synapse_url=f"http://127.0.0.1:{free_port()}", timeout=2))
    checks = by_check(result)
    assert checks["synapse_health"]["level"] == ERROR and "no answer" in checks["synapse_health"]["message"]
    assert result["ok"] is False


class StandInMas(http.server.BaseHTTPRequestHandler):
    """A stand-in for MAS's HTTP API (MAS itself does not run in these tests): /health, its OpenID
    configuration with the issuer given to the server, and the compatibility login's flows."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        issuer = self.server.issuer
        documents = {
            "/health": None,
            "/.well-known/openid-configuration": {"issuer": issuer, "account_management_uri": issuer + "account/"},
            "/_matrix/client/v3/login": {"flows": [
                {"type": "m.login.sso", "org.matrix.msc3824.delegated_oidc_compatibility": True},
                {"type": "m.login.password"}]},
        }
        if self.path not in documents:
            self.send_error(404)
            return
        body = b"ok" if documents[self.path] is None else json.dumps(documents[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if documents[self.path] is not None else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in_mas():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInMas)
    server.issuer = ISSUER
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# The checks of MAS are the same for every Synapse release: the newest only (the other case is not generated).
@pytest.mark.parametrize("synapse_configs", [synapse_schema.LATEST], indirect=True,
                         ids=lambda v: f"synapse-{v}")
def test_with_mas_answering_every_check_is_proven_and_a_wrong_issuer_is_named(synapse_configs, static_site,
                                                                              stand_in_mas):
    root, well_known_url = static_site
    (root / ".well-known" / "matrix" / "client").write_text(json.dumps({
        "org.matrix.msc2965.authentication": {"issuer": ISSUER, "account": ISSUER + "account/"}}))
    server, mas_url = stand_in_mas
    config = yaml.safe_load(synapse_configs["delegated"].read_text())
    config["matrix_authentication_service"]["endpoint"] = mas_url + "/"
    delegated = synapse_configs["work"] / "delegated-to-stand-in.yaml"
    delegated.write_text(yaml.safe_dump(config))
    options = LiveOptions(synapse_url=synapse_configs["url"], mas_url=mas_url, issuer=ISSUER,
                          well_known_url=well_known_url, timeout=5)
    synapse = Synapse(synapse_configs["version"], [delegated], synapse_configs["work"], "stand-in").start()
    try:
        wait_healthy(synapse, synapse_configs["url"])
        result = run_live_checks(options)
        assert result["verdict"] == "live checks passed: 7 of 7", result
        assert by_check(result)["auth_metadata"]["message"] == f"Synapse's auth metadata names MAS's issuer {ISSUER}"
        # The MAS that answers is not the one migrated: its issuer is another.
        server.issuer = "https://other.test.local/"
        result = run_live_checks(options)
    finally:
        synapse.stop()
    checks = by_check(result)
    assert checks["mas_openid_configuration"]["level"] == ERROR
    assert "'https://other.test.local/'" in checks["mas_openid_configuration"]["message"]
    assert checks["mas_health"]["level"] == OK and checks["mas_compat_login"]["level"] == OK
