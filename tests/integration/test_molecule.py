"""Molecule (delegated driver, localhost, no Docker): converge, idempotence and verify of the roles."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "molecule")), reason="molecule is not installed in .venv")
def test_molecule_default_scenario():
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(BIN, "molecule"), "test"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "idempotence" in proc.stdout + proc.stderr


def test_ansible_lint_production_profile():
    lint = os.path.join(BIN, "ansible-lint")
    if not os.path.exists(lint) or not shutil.which("git"):
        pytest.skip("ansible-lint is not installed in .venv")
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1")
    proc = subprocess.run([lint, "--offline", "--profile", "production", "roles", "playbooks/migrate.yml",
                           "playbooks/rollback.yml", "playbooks/advisor.yml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
