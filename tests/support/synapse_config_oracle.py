"""Run with a Synapse virtualenv's Python: how that Synapse itself reads the settings it is given.

Reads a JSON list of homeserver.yaml fragments on stdin; for each, prints one JSON line: the
switches as Synapse's own config classes read them, or the ConfigError (with its path) Synapse
refuses the configuration with. It uses nothing of this collection: it is the oracle the
collection's reading (synapse_settings.py) is compared with.
"""

import json
import os
import sys
import tempfile

import signedjson.key
from synapse.config._base import ConfigError
from synapse.config.homeserver import HomeServerConfig

workdir = tempfile.mkdtemp()
key_path = os.path.join(workdir, "signing.key")
with open(key_path, "w") as handle:
    signedjson.key.write_signing_keys(handle, [signedjson.key.generate_signing_key("a")])
BASE = {
    "server_name": "example.test", "report_stats": False, "signing_key_path": key_path, "media_store_path": workdir,
    "listeners": [], "database": {"name": "sqlite3", "args": {"database": ":memory:"}},
    "macaroon_secret_key": "m", "form_secret": "f", "registration_shared_secret": "r",
    "suppress_key_server_warning": True, "recaptcha_public_key": "p", "recaptcha_private_key": "q",
}

for fragment in json.load(sys.stdin):
    config = dict(BASE)
    config.update(fragment)
    try:
        parsed = HomeServerConfig()
        parsed.parse_config_dict(config, workdir, workdir)
    except ConfigError as exc:
        print(json.dumps({"refused": str(exc), "path": list(exc.path or [])}))
        continue
    except Exception as exc:  # strtobool's ValueError and the like: Synapse does not start either
        print(json.dumps({"refused": f"{type(exc).__name__}: {exc}", "path": []}))
        continue
    print(json.dumps({
        "enable_registration": bool(parsed.registration.enable_registration),
        "enable_registration_captcha": bool(parsed.captcha.enable_registration_captcha),
        "allow_guest_access": bool(parsed.registration.allow_guest_access),
        "enable_3pid_changes": bool(parsed.registration.enable_3pid_changes),
        "cas_config": bool(parsed.cas.cas_enabled),
        "login_via_existing_session": bool(parsed.auth.login_via_existing_enabled),
        "password_login": bool(parsed.auth.password_enabled_for_login or parsed.auth.password_enabled_for_reauth),
        "oidc_idps": sorted(p.idp_id for p in parsed.oidc.oidc_providers),
    }))
