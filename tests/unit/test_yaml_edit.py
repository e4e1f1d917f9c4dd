"""Round-trip editing: untouched text kept byte for byte, comments kept, atomic writes, redaction."""

from __future__ import annotations

import difflib
import os
import stat

import pytest

from _syn2mas.errors import ConfigError
from _syn2mas.config.yaml_edit import (
    REDACTED, YamlDocument, atomic_write, commit, delete_key, redact_text, set_value, to_commented,
)

# A hand-edited file mixing indentation styles, quoting, flow lists and comments everywhere.
MIXED = """\
# Synapse configuration, hand edited.
# Do not touch without asking ops.
server_name: "example.com"   # our domain
pid_file: /data/homeserver.pid

listeners:
- port: 8008
  type: http
  resources:
      - names: [client, federation]   # odd indentation on purpose

# Registration
enable_registration: true  # temporary!
# Consent tracking, see docs
user_consent:
  template_dir: res/templates/privacy
  version: 1.0
  # indented comment inside user_consent

# Password settings
password_config:
    enabled: true
    pepper: 'p3pp3r-value'
    policy: {minimum_length: 8}

experimental_features:
  msc3861:
    enabled: false
  # the next one is needed by Element Call
  msc3266_enabled: true

database:
  name: psycopg2
  args: {user: synapse, password: "db-password", host: localhost}
"""


def test_unchanged_document_renders_identically():
    doc = YamlDocument(MIXED, "hs.yaml")
    assert doc.render() == MIXED
    assert not doc.changed()


@pytest.mark.parametrize("text", [
    "a:\n  b: 1\n  l:\n  - x: 1\n    y: 2\n",
    "a:\n    b: 1\n    l:\n        - x: 1\n          y: 2\n",
    "---\n# head\nkey: 'quoted'   # c\nother: \"double\"\nlist: [1, 2]\n",
    "k: |\n  line one\n  line two\nz: >-\n  folded\n  text\n",
])
def test_round_trip_is_byte_identical(text):
    assert YamlDocument(text).render() == text


def test_changed_section_keeps_comments_and_untouched_sections_stay_verbatim():
    doc = YamlDocument(MIXED, "hs.yaml")
    doc.data["password_config"]["enabled"] = False
    out = doc.render()
    # The listeners block's odd indentation would not survive a full re-dump: it must be untouched.
    assert "  resources:\n      - names: [client, federation]   # odd indentation on purpose\n" in out
    assert "# Password settings\npassword_config:\n    enabled: false\n    pepper: 'p3pp3r-value'\n" in out
    assert "    policy: {minimum_length: 8}\n" in out
    changed = [ln for ln in difflib.ndiff(MIXED.splitlines(), out.splitlines()) if ln[:1] in "+-"]
    assert changed == ["-     enabled: true", "+     enabled: false"]


def test_removed_top_level_section_leaves_a_note_and_the_next_sections_header():
    doc = YamlDocument(MIXED, "hs.yaml")
    assert doc.remove_top_level("user_consent", "removed by test: because")
    out = doc.render()
    assert "template_dir" not in out and "indented comment inside user_consent" not in out
    assert "# Consent tracking, see docs\n# user_consent: removed by test: because\n\n# Password settings\n" in out
    # Re-loading the result gives the same data minus the key.
    assert "user_consent" not in YamlDocument(out).data


def test_nested_delete_keeps_the_comment_introducing_the_next_key():
    doc = YamlDocument(MIXED, "hs.yaml")
    delete_key(doc.data["experimental_features"], "msc3861")
    out = doc.render()
    assert "experimental_features:\n  # the next one is needed by Element Call\n  msc3266_enabled: true\n" in out


def test_delete_of_a_middle_key_moves_its_trailing_comment_to_the_predecessor():
    text = "s:\n  a: 1\n  b: 2\n  # about c\n  c: 3\n"
    doc = YamlDocument(text)
    delete_key(doc.data["s"], "b")
    assert doc.render() == "s:\n  a: 1\n  # about c\n  c: 3\n"


def test_new_section_is_appended_after_a_blank_line():
    doc = YamlDocument("a: 1  # one\n")
    doc.data["mas"] = to_commented({"enabled": True, "list": ["x"]})
    assert doc.render() == "a: 1  # one\n\nmas:\n  enabled: true\n  list:\n  - x\n"


def test_set_value_reports_equal_values_as_unchanged_and_tells_booleans_from_numbers():
    doc = YamlDocument("a: true\nb: 1\n")
    assert not set_value(doc.data, "a", True)
    assert set_value(doc.data, "b", True)
    assert doc.render() == "a: true\nb: true\n"


@pytest.mark.parametrize("text,where", [
    ("a: [1, 2\nb: 3\n", "line 2"),
    ("a: 1\n  b: 2\n", "line 2"),
])
def test_malformed_yaml_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "homeserver.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        YamlDocument.load(str(path))
    assert str(path) in str(err.value) and "invalid YAML" in str(err.value) and where in str(err.value)


def test_top_level_list_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings at the top level"):
        YamlDocument.load(str(path))
    with pytest.raises(ConfigError, match="file not found"):
        YamlDocument.load(str(tmp_path / "nope.yaml"))


def test_atomic_write_keeps_mode_owner_and_follows_symlinks(tmp_path):
    real = tmp_path / "real.yaml"
    real.write_text("a: 1\n")
    os.chmod(real, 0o640)
    if os.geteuid() == 0:
        os.chown(real, 12345, 23456)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    backup = atomic_write(str(link), "a: 2\n", backup=True)
    assert link.is_symlink()
    assert real.read_text() == "a: 2\n"
    st = os.stat(real)
    assert stat.S_IMODE(st.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert backup is not None and backup.startswith(str(real) + ".") and backup.endswith("~")
    assert open(backup).read() == "a: 1\n"
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_new_file_is_private(tmp_path):
    path = tmp_path / "new.yaml"
    assert atomic_write(str(path), "secret: x\n", backup=True) is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_commit_in_check_mode_writes_nothing_and_redacts_the_diff(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("matrix:\n  secret: old-secret-value\n")
    doc = YamlDocument.load(str(path))
    doc.data["matrix"]["secret"] = "new-secret-value"
    result = commit(doc, doc.render(), check_mode=True, backup=True)
    assert result["changed"] is True and "backup_file" not in result
    assert path.read_text() == "matrix:\n  secret: old-secret-value\n"
    assert "secret-value" not in repr(result)
    assert result["diff"]["after"] == f"matrix:\n  secret: {REDACTED}\n"


def test_redaction_covers_secret_keys_uris_and_extra_values_but_not_lookalikes():
    text = (
        "macaroon_secret_key: 'mac-aroon'\n"
        "password_config: {pepper: pep-per-value, enabled: false}\n"
        "database:\n  uri: postgresql://mas:db-pass@db/mas\n"
        "oidc:\n  client_secret: |\n    multi\n    line\n  token_endpoint: https://idp/token\n"
        "  client_secret_path: /etc/secret\n"
        "refresh_token_lifetime: 24h\n"
        "note: contains extra-secret-xyz here\n"
    )
    out = redact_text(text, ["extra-secret-xyz"])
    for secret in ("mac-aroon", "pep-per-value", "db-pass", "multi", "extra-secret-xyz"):
        assert secret not in out
    for kept in ("https://idp/token", "/etc/secret", "24h", "enabled: false", "postgresql://mas:"):
        assert kept in out
