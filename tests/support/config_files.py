"""An operator's hand-edited homeserver.yaml and MAS config.yaml (comments, odd spellings, secrets), as the
configuration modules meet them (test_config_modules.py through ansible-playbook on this machine,
test_config_edit_on_host.py on a host's files), and the check that no secret of theirs is shown."""

from __future__ import annotations

import json

CLIENT_SECRET = "dex-client-secret-7f3a"
PEPPER = "pepper-9b2c-ümlaut"
SHARED = "shared-secret-41d0"

HOMESERVER = f"""\
# Synapse configuration (hand edited, keep the comments!)
server_name: "example.com"
public_baseurl: https://matrix.example.com/

listeners:
  - port: 8008
    type: http
    resources:
      - names: [client, federation]

# Registration is open until the move to MAS
enable_registration: true
enable_registration_without_verification: true

password_config:
  enabled: true      # local passwords
  pepper: "{PEPPER}"

# Single sign-on
oidc_providers:
  # Our Dex
  - idp_id: dex
    idp_name: "Company SSO"
    idp_icon: "mxc://example.com/dex"
    issuer: "https://dex.example.com/"
    client_id: "synapse"
    client_secret: "{CLIENT_SECRET}"
    scopes: ["openid", "profile", "email"]
    backchannel_logout_enabled: true
    user_mapping_provider:
      config:
        localpart_template: "{{{{ user.preferred_username }}}}"
        display_name_template: "{{{{ user.name }}}}"
  - idp_id: gitlab
    idp_name: GitLab
    issuer: "https://gitlab.example.com/"
    client_id: "synapse-gl"
    client_secret_path: /etc/matrix-synapse/gitlab.secret
    scopes: ["openid"]

# Sessions
session_lifetime: 30d

# Media store
media_store_path: /var/lib/matrix-synapse/media
"""

MAS = f"""\
# MAS configuration, generated then edited
http:
  public_base: https://auth.example.com/
  listeners:
  - name: web
    resources:
    - name: discovery
    - name: human
# Keep this secret
matrix:
  kind: synapse
  homeserver: localhost:8008
  secret: {SHARED}
  endpoint: http://localhost:8008/
passwords:
  enabled: true
  schemes:
  - version: 1
    algorithm: argon2id
  minimum_complexity: 3
"""


def assert_no_secrets(run) -> None:
    """Neither the output of an ansible-playbook run nor its module results show a secret of the files."""
    text = run.stdout + json.dumps(run.results)
    for secret in (CLIENT_SECRET, PEPPER, SHARED):
        assert secret not in text
