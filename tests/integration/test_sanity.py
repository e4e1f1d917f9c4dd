"""`ansible-test sanity` over the whole collection (module docs, argument specs, pylint, pep8...)."""

from __future__ import annotations

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ansible_test_sanity_is_clean():
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "sanity.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=2400, check=False)
    errors = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 0, "\n".join(errors[-60:]) or proc.stderr[-4000:]
