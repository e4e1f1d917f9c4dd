"""Every test file has exactly one tier, and a file added without one stops the run."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import tiers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_test_file_has_exactly_one_tier():
    assert tiers.check_tiers(os.path.join(ROOT, "tests")) == []
    files = tiers.test_files(os.path.join(ROOT, "tests"))
    assert "unit/test_tiers.py" in files and "integration/test_fleet_ssh.py" in files
    for rel in files:
        assert tiers.tier_of("tests/" + rel)[0] in tiers.TIERS, rel


def test_a_new_file_without_a_tier_is_named(tmp_path):
    (tmp_path / "integration").mkdir()
    for rel in tiers.FILES:
        (tmp_path / rel).write_text("")
    (tmp_path / "integration" / "test_new_thing.py").write_text("")
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "test_anything.py").write_text("")
    assert tiers.check_tiers(str(tmp_path)) == ["integration/test_new_thing.py has no tier (add it to FILES)"]
    os.remove(tmp_path / "integration" / "test_runbook_e2e.py")
    assert "integration/test_runbook_e2e.py is listed but does not exist" in tiers.check_tiers(str(tmp_path))


def test_a_tier_marker_selects_the_files_of_that_tier():
    """`-m TIER` selects by the tier assigned in tiers.py (a small file of each kind is collected)."""
    def collect(marks, *paths):
        run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "-m", marks, *paths], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             check=False)
        return run.returncode, [line for line in run.stdout.splitlines() if "::" in line]

    unit, playbook = "tests/unit/test_module_specs.py", "tests/integration/test_packaging.py"
    rc, selected = collect("unit", unit, playbook)
    assert rc == 0 and selected and all(line.startswith(unit) for line in selected), selected
    rc, selected = collect("playbook", unit, playbook)
    assert rc == 0 and selected and all(line.startswith(playbook) for line in selected), selected
    assert collect("database or e2e", unit, playbook) == (5, [])  # 5: pytest collected nothing


def test_no_test_file_imports_another_test_file():
    """Shared helpers live in tests/support: importing a test file would also collect its tests there."""
    import ast

    offenders = []
    for rel in tiers.test_files(os.path.join(ROOT, "tests")):
        with open(os.path.join(ROOT, "tests", rel)) as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith(("tests.integration", "tests.unit", "tests.conftest", "conftest")) \
                        or name.split(".")[-1].startswith("test_"):
                    offenders.append(f"{rel}: {name}")
    assert offenders == []
