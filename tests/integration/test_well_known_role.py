"""The well_known role on its own, run by ansible-playbook on this host: it merges MAS's keys into an
existing .well-known/matrix/client, creates the document only when there is none, and fails - naming the
file, leaving it as it was - when one exists that it cannot read or parse (the operator's keys would be lost)."""

from __future__ import annotations

import json
import os
import subprocess

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ISSUER = "https://auth.example.test/"


def publish(tmp_path, path: str):
    playbook = tmp_path / "well_known.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python")},
        "roles": [{"role": "matrix.syn2mas.well_known", "vars": {
            "well_known_path": path, "well_known_issuer": ISSUER,
            "well_known_account": ISSUER + "account/", "well_known_url": ""}}]}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    return subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(playbook)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_keys_are_merged_and_a_missing_document_is_created(tmp_path):
    existing = tmp_path / "client"
    existing.write_text(json.dumps({"m.homeserver": {"base_url": "https://matrix.example.test"}, "io.element.e2ee": {}}))
    run = publish(tmp_path, str(existing))
    assert run.returncode == 0, run.stdout[-3000:]
    merged = json.loads(existing.read_text())
    assert merged["m.homeserver"] == {"base_url": "https://matrix.example.test"} and "io.element.e2ee" in merged
    assert merged["org.matrix.msc2965.authentication"]["issuer"] == ISSUER
    missing = tmp_path / "new" / "client"
    missing.parent.mkdir()
    run = publish(tmp_path, str(missing))
    assert run.returncode == 0, run.stdout[-3000:]
    assert list(json.loads(missing.read_text())) == ["org.matrix.msc2965.authentication"]


def test_a_document_it_cannot_parse_fails_the_role_naming_it_and_stays_as_it_was(tmp_path):
    broken = tmp_path / "client"
    text = '{"m.homeserver": {"base_url": "https://matrix.example.test"},}\n'  # a trailing comma
    broken.write_text(text)
    run = publish(tmp_path, str(broken))
    assert run.returncode != 0
    assert f"{broken} exists but cannot be read or parsed as a JSON object" in run.stdout, run.stdout[-3000:]
    assert broken.read_text() == text
    for not_an_object in ('["m.homeserver"]\n', ""):
        broken.write_text(not_an_object)
        run = publish(tmp_path, str(broken))
        assert run.returncode != 0 and f"{broken} exists but cannot be read" in run.stdout, run.stdout[-3000:]
        assert broken.read_text() == not_an_object


def test_a_document_it_cannot_read_fails_the_role_naming_it(tmp_path):
    # Something at the path that is not a readable file (root reads any file's content, so a directory).
    unreadable = tmp_path / "client"
    unreadable.mkdir()
    run = publish(tmp_path, str(unreadable))
    assert run.returncode != 0
    assert f"{unreadable} exists but cannot be read" in run.stdout, run.stdout[-3000:]
    assert unreadable.is_dir() and not os.listdir(unreadable)
