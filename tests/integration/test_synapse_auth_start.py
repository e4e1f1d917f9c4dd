"""The real Synapse against the rewritten homeserver.yaml.

For each tested Synapse release: the original configuration starts (and hashes a password the
way Synapse does); the original plus only the MAS block is refused; the configuration rewritten
by matrix.syn2mas.synapse_auth_delegation starts, answers /health and no longer serves /login.
The conf.d override mode starts too, and MAS's scheme version 1 written by mas_synapse_link
verifies the password hash the real Synapse stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess

import pytest
import yaml

from _syn2mas.config.mas_synapse_link import verify_password
from tests.support import synapse_schema
from tests.support.net import free_port
from tests.support.pgcluster import new_db_name
from tests.support.ansible_run import run_tasks
from tests.support.synapse_process import Synapse, http, wait_healthy

PEPPER = "pepper-ÿ-1234"
REG_SECRET = "registration-shared-secret"
PASSWORD = "Ünïcödé ﬁ Å pässwörd"  # NFKC changes "ﬁ" and "Å": only a normalising scheme accepts it


def register(base: str, username: str, password: str):
    _status, body = http(base + "/_synapse/admin/v1/register")
    nonce = json.loads(body)["nonce"]
    mac = hmac.new(REG_SECRET.encode(), b"\x00".join(
        [nonce.encode(), username.encode(), password.encode("utf8"), b"notadmin"]), hashlib.sha1).hexdigest()
    status, body = http(base + "/_synapse/admin/v1/register",
                        {"nonce": nonce, "username": username, "password": password, "admin": False, "mac": mac})
    assert status == 200, body


@pytest.fixture(params=synapse_schema.VERSIONS, ids=lambda v: f"synapse-{v}")
def setup(request, pg, tmp_path_factory):
    version = request.param
    work = tmp_path_factory.mktemp("synapse-" + version.replace(".", "_"))
    dbname = new_db_name("synapse_start")
    pg.create_database(dbname, template=synapse_schema.create_template(pg, version))
    port = free_port()
    consent_dir = work / "privacy"
    (consent_dir / "en").mkdir(parents=True)
    (consent_dir / "en" / "1.0.html").write_text("<html><body>Terms</body></html>\n")
    base = {
        "server_name": "test.local",
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": False,
                       "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "psycopg2", "args": {"host": pg.sockdir, "port": pg.port, "user": "postgres",
                                                  "dbname": dbname, "cp_min": 1, "cp_max": 3}},
        "media_store_path": str(work / "media"),
        "signing_key_path": str(work / "signing.key"),
        "report_stats": False,
        "trusted_key_servers": [],
        "registration_shared_secret": REG_SECRET,
        "bcrypt_rounds": 4,
        # Everything below is fine for Synapse alone and refused once MAS is enabled.
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "password_config": {"enabled": True, "pepper": PEPPER},
        "user_consent": {"version": "1.0", "template_dir": str(consent_dir)},
        "enable_registration_captcha": True,
        "recaptcha_public_key": "public",
        "recaptcha_private_key": "private",
        "login_via_existing_session": {"enabled": True},
        "refresh_token_lifetime": "24h",
        "session_lifetime": "30d",
        "enable_3pid_changes": True,
    }
    baseline = work / "baseline.yaml"
    baseline.write_text("# the homeserver as it runs before MAS\n" + yaml.safe_dump(base, sort_keys=False))
    subprocess.run([synapse_schema.synapse_python(version), "-m", "synapse.app.homeserver", "-c", str(baseline),
                    "--generate-keys"], check=True, capture_output=True)
    # The full original also has SSO (not startable here: the test venvs lack authlib, Synapse's OIDC extra).
    original = work / "homeserver.yaml"
    original.write_text(baseline.read_text() + yaml.safe_dump({"oidc_providers": [{
        "idp_id": "dex", "idp_name": "Dex", "issuer": "http://127.0.0.1:9/dex", "client_id": "synapse",
        "client_secret": "dex-secret"}]}))
    yield {"version": version, "work": work, "baseline": baseline, "original": original,
           "url": f"http://127.0.0.1:{port}", "dbname": dbname}
    pg.drop_database(dbname)


def start(setup, configs, name):
    return Synapse(setup["version"], configs, setup["work"], name).start()


def test_rewritten_config_starts_and_the_removals_matter(setup, pg, tmp_path):
    url = setup["url"]
    work = setup["work"]

    # 1. Synapse as it runs before the move: starts, serves password login, hashes a password.
    synapse = start(setup, [setup["baseline"]], "baseline")
    try:
        wait_healthy(synapse, url)
        status, body = http(url + "/_matrix/client/v3/login")
        assert status == 200 and "m.login.password" in body
        register(url, "alice", PASSWORD)
    finally:
        synapse.stop()
    (stored,) = pg.execute("SELECT password_hash FROM users WHERE name = '@alice:test.local'", dbname=setup["dbname"])

    # 2. The same plus only the MAS block: Synapse refuses to start.
    mas_only = work / "mas-only.yaml"
    mas_only.write_text(setup["baseline"].read_text() + yaml.safe_dump({"matrix_authentication_service": {
        "enabled": True, "endpoint": "http://127.0.0.1:9/", "secret": "shared"}}))
    synapse = start(setup, [mas_only], "mas-only")
    try:
        code = synapse.wait_exit()
        assert code not in (None, 0), "Synapse started with conflicting settings"
        assert "when OAuth delegation is enabled" in synapse.output()
    finally:
        synapse.stop()

    # 3. The full original (with SSO) rewritten by the module, Synapse's version detected: starts.
    secret_file = work / "mas.secret"
    secret_file.write_text("shared-secret-from-file\n")
    run = run_tasks(tmp_path, [{"matrix.syn2mas.synapse_auth_delegation": {
        "path": str(setup["original"]), "endpoint": "http://127.0.0.1:9/", "secret_path": str(secret_file),
        "synapse_python": synapse_schema.synapse_python(setup["version"]), "backup": True}}])
    result = run.result
    assert not result.get("failed"), result
    assert result["synapse_version"] == setup["version"] and result["config_form"] == "matrix_authentication_service"
    assert {c["key"] for c in result["changes"]} == {
        "enable_registration", "password_config.enabled", "user_consent", "oidc_providers",
        "enable_registration_captcha", "login_via_existing_session.enabled", "refresh_token_lifetime",
        "session_lifetime", "enable_3pid_changes", "matrix_authentication_service"}
    synapse = start(setup, [setup["original"]], "rewritten")
    try:
        wait_healthy(synapse, url)
        status, _body = http(url + "/_matrix/client/v3/login")
        assert status == 404  # logins are MAS's now
    finally:
        synapse.stop()

    # 4. MAS's scheme version 1 (written by mas_synapse_link from the original config) accepts the
    #    hash the real Synapse stored for the non-ASCII password.
    mas = work / "mas.yaml"
    mas.write_text("matrix:\n  secret: shared\npasswords:\n  schemes:\n  - version: 1\n    algorithm: argon2id\n")
    link = run_tasks(tmp_path, [{"matrix.syn2mas.mas_synapse_link": {
        "path": str(mas), "synapse_config": [result["backup_file"]], "endpoint": url + "/"}}])
    assert not link.result.get("failed"), link.result
    v1 = [s for s in yaml.safe_load(mas.read_text())["passwords"]["schemes"] if s["version"] == 1][0]
    assert verify_password(v1, PASSWORD, stored[0])
    assert not verify_password(dict(v1, unicode_normalization=False), PASSWORD, stored[0])
    assert not verify_password({k: v for k, v in v1.items() if k != "secret"}, PASSWORD, stored[0])


# The override mode is version-independent: the newest release only (the other case is not generated).
@pytest.mark.parametrize("setup", [synapse_schema.LATEST], indirect=True, ids=lambda v: f"synapse-{v}")
def test_override_mode_starts(setup, tmp_path):
    before = setup["original"].read_text()
    override = setup["work"] / "zz-mas.yaml"
    run = run_tasks(tmp_path, [{"matrix.syn2mas.synapse_auth_delegation": {
        "path": str(setup["original"]), "override_path": str(override), "endpoint": "http://127.0.0.1:9/",
        "secret": "shared-secret", "synapse_version": setup["version"]}}])
    assert not run.result.get("failed"), run.result
    assert setup["original"].read_text() == before
    synapse = start(setup, [setup["original"], override], "override")
    try:
        wait_healthy(synapse, setup["url"])
    finally:
        synapse.stop()
