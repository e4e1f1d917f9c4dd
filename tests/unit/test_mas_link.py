"""MAS's matrix section and password schemes; Synapse's hashes verify with scheme version 1."""

from __future__ import annotations

import unicodedata

import bcrypt
import pytest
import yaml

from _syn2mas.config import load_synapse_config
from _syn2mas.errors import ConfigError
from _syn2mas.config.mas_synapse_link import LinkSettings, apply_link, verify_password
from _syn2mas.config.yaml_edit import YamlDocument

# What `mas-cli config generate` writes without --synapse-config: version 1 is argon2id.
MAS_DEFAULT = """\
http:
  public_base: https://auth.example.com/
# passwords as generated
passwords:
  enabled: true
  schemes:
  - version: 1
    algorithm: argon2id
  minimum_complexity: 3
matrix:
  kind: synapse
  homeserver: localhost:8008
  secret: old-shared-secret
  endpoint: http://localhost:8008/
"""


def synapse(tmp_path, **config):
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({"server_name": "example.com", **config}))
    return load_synapse_config(str(path))


def synapse_hash(password: str, pepper: str, rounds: int = 4) -> str:
    """Synapse's AuthHandler.hash: bcrypt over NFKC(password) + pepper, first 72 bytes."""
    data = unicodedata.normalize("NFKC", password).encode("utf8") + pepper.encode("utf8")
    return bcrypt.hashpw(data[:72], bcrypt.gensalt(rounds)).decode("ascii")


def linked(tmp_path, text=MAS_DEFAULT, **kw):
    doc = YamlDocument(text, "config.yaml")
    result = apply_link(doc.data, synapse(tmp_path, **kw.pop("synapse", {})), LinkSettings(**kw), "config.yaml")
    return doc, result


def test_default_mas_config_gets_bcrypt_v1_and_keeps_argon2id_as_v2(tmp_path):
    doc, result = linked(tmp_path, synapse={"password_config": {"pepper": "pep"}, "bcrypt_rounds": 10},
                         secret="new-shared-secret")
    data = yaml.safe_load(doc.render())
    assert data["passwords"]["schemes"] == [
        {"version": 1, "algorithm": "bcrypt", "unicode_normalization": True, "cost": 10, "secret": "pep"},
        {"version": 2, "algorithm": "argon2id"},
    ]
    assert data["passwords"]["minimum_complexity"] == 3
    assert data["matrix"] == {"kind": "synapse", "homeserver": "example.com", "secret": "new-shared-secret",
                              "endpoint": "http://localhost:8008/"}
    assert "# passwords as generated\n" in doc.render()
    assert {c["key"] for c in result.changes} >= {"matrix.homeserver", "matrix.secret", "passwords.schemes[version 1]"}
    # Idempotent.
    again = YamlDocument(doc.render())
    second = apply_link(again.data, synapse(tmp_path, password_config={"pepper": "pep"}, bcrypt_rounds=10),
                        LinkSettings(secret="new-shared-secret"), "config.yaml")
    assert second.changes == [] and again.render() == doc.render()


def test_existing_schemes_are_kept(tmp_path):
    text = ("matrix: {homeserver: x, secret: s, endpoint: 'http://s/'}\npasswords:\n  schemes:\n"
            "  - {version: 1, algorithm: bcrypt}\n  - {version: 3, algorithm: argon2id, secret: other}\n")
    doc, _result = linked(tmp_path, text)
    schemes = yaml.safe_load(doc.render())["passwords"]["schemes"]
    assert schemes == [{"version": 1, "algorithm": "bcrypt", "unicode_normalization": True},
                       {"version": 3, "algorithm": "argon2id", "secret": "other"}]


def test_pepper_file_must_hold_exactly_the_pepper(tmp_path):
    good = tmp_path / "pepper"
    good.write_bytes(b"pep")
    doc, _result = linked(tmp_path, synapse={"password_config": {"pepper": "pep"}}, pepper_file=str(good))
    v1 = yaml.safe_load(doc.render())["passwords"]["schemes"][0]
    assert v1["secret_file"] == str(good) and "secret" not in v1
    newline = tmp_path / "pepper-nl"
    newline.write_bytes(b"pep\n")
    with pytest.raises(ConfigError, match="ends with a newline; MAS reads the file as it is"):
        linked(tmp_path, synapse={"password_config": {"pepper": "pep"}}, pepper_file=str(newline))
    wrong = tmp_path / "pepper-wrong"
    wrong.write_bytes(b"nope")
    with pytest.raises(ConfigError, match="does not hold Synapse's password_config.pepper"):
        linked(tmp_path, synapse={"password_config": {"pepper": "pep"}}, pepper_file=str(wrong))


def test_errors_and_warnings(tmp_path):
    with pytest.raises(ConfigError, match="matrix.secret is missing"):
        linked(tmp_path, "matrix: {endpoint: http://s/}\n")
    with pytest.raises(ConfigError, match="server_name is missing"):
        doc = YamlDocument(MAS_DEFAULT)
        path = tmp_path / "hs.yaml"
        path.write_text("public_baseurl: https://m/\n")
        apply_link(doc.data, load_synapse_config(str(path)), LinkSettings(), "config.yaml")
    with pytest.raises(ConfigError, match="matrix.endpoint is not set and Synapse has no public_baseurl"):
        linked(tmp_path, "matrix: {secret: s}\n")
    with pytest.raises(ConfigError, match=r"passwords.schemes: version 1 appears twice"):
        linked(tmp_path, "matrix: {secret: s, endpoint: http://s/}\npasswords:\n  schemes: [{version: 1}, {version: 1}]\n")
    _doc, result = linked(tmp_path, "matrix: {secret: s}\n", synapse={"public_baseurl": "https://m/",
                                                                      "password_config": {"pepper": ""}})
    assert any("/_synapse/mas" in w for w in result.warnings)
    assert any("empty string" in w for w in result.warnings)


@pytest.mark.parametrize("password", ["correct horse battery", "Ünïcödé ﬁ Å ２０２４ pässwörd"])
@pytest.mark.parametrize("pepper", ["", "a-pepper-with-ümlauts"])
def test_synapse_hashes_verify_with_the_written_scheme(tmp_path, password, pepper):
    synapse_cfg = {"password_config": {"pepper": pepper}} if pepper else {}
    doc, _result = linked(tmp_path, synapse=synapse_cfg, secret="s")
    (v1,) = [s for s in yaml.safe_load(doc.render())["passwords"]["schemes"] if s["version"] == 1]
    hashed = synapse_hash(password, pepper)
    assert verify_password(v1, password, hashed)
    assert not verify_password(v1, password + "x", hashed)
    if unicodedata.normalize("NFKC", password) != password:
        # Without unicode_normalization, the non-ASCII password no longer matches (MAS #4598).
        assert not verify_password(dict(v1, unicode_normalization=False), password, hashed)
    if pepper:
        assert not verify_password({k: v for k, v in v1.items() if k != "secret"}, password, hashed)


def test_long_passwords_verify_like_synapse_truncates_them(tmp_path):
    doc, _result = linked(tmp_path, synapse={"password_config": {"pepper": "pep"}}, secret="s")
    v1 = yaml.safe_load(doc.render())["passwords"]["schemes"][0]
    password = "ä" * 50  # 100 bytes in UTF-8
    assert verify_password(v1, password, synapse_hash(password, "pep"))
