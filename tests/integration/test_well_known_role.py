"""The well_known role on its own, run by ansible-playbook on this host: it merges MAS's keys into an
existing .well-known/matrix/client, creates the document only when there is none, and fails - naming the
file, leaving it as it was - when one exists that it cannot read or parse (the operator's keys would be lost).

One run of the role serves every case: each case is a host of its own (a local connection) with its own
document, and a host that fails does not stop the others, so each test reads its host's outcome in the run."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.support.ansible_run import recap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ISSUER = "https://auth.example.test/"
EXISTING = {"m.homeserver": {"base_url": "https://matrix.example.test"}, "io.element.e2ee": {}}
# What each case's host finds at its path before the run (None: nothing; a dict: a directory).
UNPARSABLE = {
    "trailing_comma": '{"m.homeserver": {"base_url": "https://matrix.example.test"},}\n',
    "not_an_object": '["m.homeserver"]\n',
    "empty": "",
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The role run once over one host per case; returns (the run, each host's document path)."""
    tmp_path = tmp_path_factory.mktemp("well-known")
    paths = {}
    for host in ("merged", "created", "unreadable", *UNPARSABLE):
        (tmp_path / host).mkdir()
        paths[host] = tmp_path / host / "client"
    paths["merged"].write_text(json.dumps(EXISTING))
    paths["unreadable"].mkdir()  # not a readable file (root reads any file's content, so a directory)
    for host, text in UNPARSABLE.items():
        paths[host].write_text(text)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local",
                 "ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python")},
        "hosts": {host: {"document": str(path)} for host, path in paths.items()}}}))
    playbook = tmp_path / "well_known.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "roles": [{"role": "matrix.syn2mas.well_known", "vars": {
            "well_known_path": "{{ document }}", "well_known_issuer": ISSUER,
            "well_known_account": ISSUER + "account/", "well_known_url": ""}}]}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    run = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(inventory),
                          str(playbook)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert set(recap(run.stdout)) == set(paths), run.stdout[-3000:] + run.stderr[-3000:]
    return run, paths


def test_keys_are_merged_and_a_missing_document_is_created(published):
    run, paths = published
    for host in ("merged", "created"):
        assert recap(run.stdout)[host]["failed"] == 0, run.stdout[-3000:]
    merged = json.loads(paths["merged"].read_text())
    assert merged["m.homeserver"] == EXISTING["m.homeserver"] and "io.element.e2ee" in merged
    assert merged["org.matrix.msc2965.authentication"]["issuer"] == ISSUER
    assert list(json.loads(paths["created"].read_text())) == ["org.matrix.msc2965.authentication"]


@pytest.mark.parametrize("case", list(UNPARSABLE))
def test_a_document_it_cannot_parse_fails_the_role_naming_it_and_stays_as_it_was(published, case):
    run, paths = published
    broken = paths[case]
    assert recap(run.stdout)[case]["failed"] == 1, run.stdout[-3000:]
    assert f"{broken} exists but cannot be read or parsed as a JSON object" in run.stdout, run.stdout[-3000:]
    assert broken.read_text() == UNPARSABLE[case]


def test_a_document_it_cannot_read_fails_the_role_naming_it(published):
    run, paths = published
    unreadable = paths["unreadable"]
    assert recap(run.stdout)["unreadable"]["failed"] == 1, run.stdout[-3000:]
    assert f"{unreadable} exists but cannot be read" in run.stdout, run.stdout[-3000:]
    assert unreadable.is_dir() and not os.listdir(unreadable)
