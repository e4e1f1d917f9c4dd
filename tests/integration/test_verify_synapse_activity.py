"""Real Synapse activity after the import, through Synapse's own API on one real homeserver: a
password change without and with user-interactive auth, a refresh, a logout, a deactivation. None is
damage: verify exits 0 and names each as a change in Synapse since the import; damage planted in MAS
on a row Synapse also changed still exits 12."""

from __future__ import annotations

import yaml

from _syn2mas.migration.importer import ImportOptions, run_import
from _syn2mas.migration.verify import EXIT_MISMATCH, VerifyOptions, run_verify
from tests.support import homeservers
from tests.support.homeservers import http

PASSWORD = "pw-before-Kq8"


def login(hs, who, device, refresh=False):
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": who}, "password": PASSWORD,
            "device_id": device}
    if refresh:
        body["refresh_token"] = True
    status, answer = http("POST", hs.base_url + "/_matrix/client/v3/login", body)
    assert status == 200, answer
    return answer


def verify(hs) -> dict:
    return run_verify(VerifyOptions(synapse_config=[hs.homeserver_yaml], mas_config=[hs.mas_yaml], examples=20))


def test_synapse_activity_after_the_import_is_named_and_not_damage(pg, tmp_path):
    hs = homeservers.Homeserver(pg, "vfy", str(tmp_path))
    hs.create()
    with open(hs.homeserver_yaml) as handle:
        config = yaml.safe_load(handle)
    config["refreshable_access_token_lifetime"] = "5m"  # so that a login may ask for a refresh token
    with open(hs.homeserver_yaml, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    try:
        hs.start()
        hs.register("admin", homeservers.PASSWORDS["admin"], admin=True)
        for who in ("alice", "bob", "carol", "dave", "erin"):
            hs.register(who, PASSWORD)
        alice = login(hs, "alice", "ALICEPHONE")
        login(hs, "alice", "ALICELAPTOP")
        carol = login(hs, "carol", "CAROLPHONE", refresh=True)
        dave = login(hs, "dave", "DAVEPHONE")
        hs.stop()

        result = run_import(ImportOptions(synapse_config=[hs.homeserver_yaml], mas_config=[hs.mas_yaml]))
        assert result["changed"] is True
        clean = verify(hs)
        assert clean["exit_code"] == 0 and not clean["synapse_changed_since_import"], clean["verdict"]

        hs.start()
        # A password change without user-interactive auth (the admin API), keeping the devices.
        status, body = hs.admin("POST", f"/_synapse/admin/v1/reset_password/@bob:{hs.server_name}",
                                {"new_password": "pw-after-Bb1", "logout_devices": False})
        assert status == 200, body
        # ... and with it (the client API): Synapse validates alice's token anew and logs out her others.
        status, body = http("POST", hs.base_url + "/_matrix/client/v3/account/password", {
            "new_password": "pw-after-Aa1", "logout_devices": True,
            "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                     "password": PASSWORD}}, token=alice["access_token"])
        assert status == 200, body
        # A refresh, a logout, a deactivation.
        status, body = http("POST", hs.base_url + "/_matrix/client/v3/refresh",
                            {"refresh_token": carol["refresh_token"]})
        assert status == 200, body
        status, body = http("POST", hs.base_url + "/_matrix/client/v3/logout", {}, token=dave["access_token"])
        assert status == 200, body
        status, body = hs.admin("POST", f"/_synapse/admin/v1/deactivate/@erin:{hs.server_name}", {"erase": False})
        assert status == 200, body
        hs.stop()

        after = verify(hs)
        assert after["exit_code"] == 0 and after["ok"] is True, after["verdict"]
        assert after["synapse_changed_since_import"] is True
        entities = after["entities"]
        named = {name: " | ".join(e["examples"].get("changed_in_synapse", [])) for name, e in entities.items()}
        for name, e in entities.items():
            assert e["missing"] == e["different"] == e["unexpected"] == 0, (name, e)
        assert f"@bob:{hs.server_name} (hashed_password)" in named["passwords"]
        assert f"@alice:{hs.server_name} (hashed_password)" in named["passwords"]
        assert "alice device ALICELAPTOP (gone from Synapse)" in named["device_sessions"]  # logged out by the password change
        assert "dave device DAVEPHONE (gone from Synapse)" in named["device_sessions"]  # logged out
        assert f"@carol:{hs.server_name}" in named["refresh_tokens"]  # refreshed
        assert f"@erin:{hs.server_name} (deactivated_at)" in named["users"]
        assert "Synapse changed since the import" in after["verdict"]

        # Damage in MAS on a row Synapse also changed is still damage.
        pg.execute("UPDATE user_passwords SET hashed_password = 'planted' WHERE user_id = "
                   "(SELECT user_id FROM users WHERE username = 'alice')", hs.mas_db)
        damaged = verify(hs)
        assert damaged["exit_code"] == EXIT_MISMATCH, damaged["verdict"]
        assert damaged["entities"]["passwords"]["examples"]["different"] == [
            f"@alice:{hs.server_name} (hashed_password)"]
    finally:
        hs.stop()
        pg.drop_database(hs.synapse_db)
        pg.drop_database(hs.mas_db)
