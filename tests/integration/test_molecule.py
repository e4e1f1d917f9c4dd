"""Molecule (delegated driver, localhost, no Docker): converge, idempotence and verify of the roles."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "molecule")), reason="molecule is not installed in .venv")
def test_molecule_default_scenario(tmp_path):
    # A home of its own: the scenario runs this checkout as the collection and installs nothing into the user's
    # ~/.ansible (molecule's prerun would install the collection there).
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1", ANSIBLE_NOCOLOR="1",
               HOME=str(home))
    proc = subprocess.run([os.path.join(BIN, "molecule"), "test"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "idempotence" in proc.stdout + proc.stderr
    installed = [str(p) for p in home.glob(".ansible/collections/ansible_collections/*")]
    assert not installed, f"molecule installed collections into the user's home: {installed}"


def test_ansible_lint_production_profile_from_the_root():
    """As a user runs it: from the repository root, no paths, so the whole collection is linted (roles,
    playbooks, meta/, molecule/, galaxy.yml, the changelog and its fragments)."""
    lint = os.path.join(BIN, "ansible-lint")
    if not os.path.exists(lint) or not shutil.which("git"):
        pytest.skip("ansible-lint is not installed in .venv")
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1")
    proc = subprocess.run([lint, "--profile", "production"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in output


def test_ansible_lint_config_skips_no_rule():
    """.ansible-lint only leaves out what is not the collection; our content is fixed, never excused."""
    with open(os.path.join(ROOT, ".ansible-lint")) as handle:
        config = yaml.safe_load(handle)
    assert not set(config) & {"skip_list", "warn_list", "mock_modules", "mock_roles", "kinds"}
    assert config.get("profile") == "production"
    assert sorted(config["exclude_paths"]) == [".ansible/", ".venv-synapse/", ".venv/", "bench/results/",
                                               "tests/output/"]
    assert not os.path.exists(os.path.join(ROOT, ".ansible-lint-ignore"))
