"""Every test file has exactly one tier, and a file added without one stops the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.support import tiers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_test_file_has_exactly_one_tier():
    assert tiers.check_tiers(os.path.join(ROOT, "tests")) == []
    files = tiers.test_files(os.path.join(ROOT, "tests"))
    assert "unit/test_tiers.py" in files and "integration/test_fleet_ssh.py" in files
    for rel in files:
        assert tiers.tier_of("tests/" + rel) in tiers.TIERS, rel


def copy_of_the_tests(tmp_path):
    (tmp_path / "integration").mkdir()
    for rel in tiers.FILES:
        shutil.copy(os.path.join(ROOT, "tests", rel), tmp_path / rel)


def test_a_new_file_without_a_tier_is_named(tmp_path):
    copy_of_the_tests(tmp_path)
    (tmp_path / "integration" / "test_new_thing.py").write_text("")
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "test_anything.py").write_text("")
    assert tiers.check_tiers(str(tmp_path)) == ["integration/test_new_thing.py has no tier (add it to FILES)"]
    os.remove(tmp_path / "integration" / "test_runbook_e2e.py")
    assert "integration/test_runbook_e2e.py is listed but does not exist" in tiers.check_tiers(str(tmp_path))


def test_a_slow_test_in_the_fast_tier_is_named_with_the_tier_it_belongs_to(tmp_path):
    """The rule of what is fast (tiers.SLOW_CALLS, tiers.SLOW_IN_A_LOOP), read from the code: directly, through
    a helper of the file, as the command's name, or the command run in a loop (once is fast)."""
    copy_of_the_tests(tmp_path)
    with open(tmp_path / "integration" / "test_import_safety.py", "a") as handle:
        handle.write("\n\ndef load(env):\n    bulk_homeserver(env, 10)\n\n\n"
                     "def test_new_fault(env):\n    load(env)\n\n\n"
                     "def test_new_module(env):\n    subprocess.run(['ansible-playbook', 'x.yml'])\n\n\n"
                     "def every_output(env):\n    return [syn2mas('--output', o) for o in ('text', 'json')]\n\n\n"
                     "def test_new_cli(env):\n    every_output(env)\n\n\n"
                     "def test_new_quick(env):\n    env.run()\n    syn2mas('--version')\n")
    assert tiers.check_tiers(str(tmp_path)) == [
        "integration/test_import_safety.py::test_new_cli is in the fast tier 'database' but is slow "
        "(syn2mas in a loop): give it tier cli in TESTS",
        "integration/test_import_safety.py::test_new_fault is in the fast tier 'database' but is slow "
        "(bulk_homeserver): give it tier faults in TESTS",
        "integration/test_import_safety.py::test_new_module is in the fast tier 'database' but is slow "
        "(ansible-playbook): give it tier playbook in TESTS"]


def test_a_test_given_its_own_tier_must_exist_and_differ_from_its_files(tmp_path, monkeypatch):
    copy_of_the_tests(tmp_path)
    assert tiers.tier_of("tests/integration/test_verify.py", "test_module_refuses_data_without_mas_database") == "playbook"
    assert tiers.tier_of("tests/integration/test_verify.py", "test_nothing_to_verify_without_an_import") == "database"
    monkeypatch.setitem(tiers.TESTS, "integration/test_verify.py::test_gone", "faults")
    monkeypatch.setitem(tiers.TESTS, "integration/test_verify.py::test_nothing_to_verify_without_an_import", "database")
    assert tiers.check_tiers(str(tmp_path)) == [
        "integration/test_verify.py::test_gone is in TESTS but no such test exists",
        "integration/test_verify.py::test_nothing_to_verify_without_an_import is in TESTS with its file's own tier "
        "'database'"]


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
            if isinstance(node, ast.ImportFrom) and (node.level or node.module in ("tests", "tests.integration",
                                                                                   "tests.unit")):
                names += [alias.name for alias in node.names]  # from . import test_x, from tests import unit
            for name in names:
                if name.startswith(("tests.integration", "tests.unit", "tests.conftest", "conftest")) \
                        or name in ("integration", "unit") or name.split(".")[-1].startswith("test_"):
                    offenders.append(f"{rel}: {name}")
    assert offenders == []
