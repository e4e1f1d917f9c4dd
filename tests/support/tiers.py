"""The suite's tiers, assigned here file by file (tests/conftest.py marks every collected test).

A test file missing from FILES, or a name in FILES whose file is gone, stops any pytest run at start-up
(`check_tiers`), so a new file cannot be left out of its tier. Run one tier with `-m`, e.g.
`pytest -m unit`, `pytest -m "unit or database"` (`make test-fast`).
"""

from __future__ import annotations

import os

TIERS = {
    "unit": "the library and the adapters in-process: no database, no Synapse, no ansible-playbook",
    "database": "the library against a real PostgreSQL with the real Synapse and MAS schemas",
    "playbook": "modules, roles and playbooks run by ansible-playbook (or the built collection and its tools)",
    "e2e": "end to end: real Synapse servers with the playbooks, the SSH fleet, nginx, molecule",
}

# File (relative to tests/) -> tier. Every tests/unit/ file is a unit test.
FILES = {
    "integration/test_advisor_checks.py": "database",
    "integration/test_backup_durability.py": "database",
    "integration/test_backup_restore.py": "database",
    "integration/test_bad_inputs.py": "database",
    "integration/test_bench_smoke.py": "database",
    "integration/test_import_kill_points.py": "database",
    "integration/test_import_mapping.py": "database",
    "integration/test_import_planned_config.py": "database",
    "integration/test_import_reliability.py": "database",
    "integration/test_import_safety.py": "database",
    "integration/test_mas_fixtures.py": "database",
    "integration/test_refusals_agree.py": "database",
    "integration/test_synapse_data.py": "database",
    "integration/test_verify.py": "database",
    "integration/test_verify_activity.py": "database",
    "integration/test_verify_damage.py": "database",
    "integration/test_advisor_interfaces.py": "playbook",
    "integration/test_config_edit_on_host.py": "playbook",
    "integration/test_config_modules.py": "playbook",
    "integration/test_import_interfaces.py": "playbook",
    "integration/test_packaging.py": "playbook",
    "integration/test_provider_rows_converge.py": "playbook",
    "integration/test_report_secrets.py": "playbook",
    "integration/test_reverse_proxy_module.py": "playbook",
    "integration/test_sanity.py": "playbook",
    "integration/test_well_known_role.py": "playbook",
    "integration/test_synapse_settings.py": "e2e",
    "integration/test_bench_runbook.py": "e2e",
    "integration/test_fleet_ssh.py": "e2e",
    "integration/test_live_checks.py": "e2e",
    "integration/test_molecule.py": "e2e",
    "integration/test_reverse_proxy_e2e.py": "e2e",
    "integration/test_runbook_e2e.py": "e2e",
    "integration/test_runtime_discovery.py": "e2e",
    "integration/test_synapse_auth_start.py": "e2e",
    "integration/test_verify_synapse_activity.py": "e2e",
}

# Files run on one pytest-xdist worker, one after the other (every other file is a group of its own):
# those that create system users and groups (useradd/groupadd lock /etc/passwd: two at once fail), and
# the heavy end-to-end files (fleets of Synapse servers, sshd, nginx, molecule), so that two of them
# never compete for the cores while the other worker runs the rest of the suite beside them.
SERIAL_FILES = frozenset({
    "integration/test_fleet_ssh.py",
    "integration/test_config_edit_on_host.py",
    "integration/test_runbook_e2e.py",
    "integration/test_reverse_proxy_e2e.py",
    "integration/test_molecule.py",
})


def _relative(path: str) -> str:
    path = path.replace(os.sep, "/")
    return path[len("tests/"):] if path.startswith("tests/") else path


def tier_of(path: str) -> tuple[str, str]:
    """(tier, xdist group) of a test file given relative to the repository root."""
    rel = _relative(path)
    tier = "unit" if rel.startswith("unit/") else FILES[rel]
    return tier, ("serial" if rel in SERIAL_FILES else rel)


def test_files(tests_dir: str) -> list:
    """Every file pytest collects under tests/ (test_*.py), relative to tests/."""
    found = []
    for folder, dirs, files in os.walk(tests_dir):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "support", "fixtures")]
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(folder, name), tests_dir).replace(os.sep, "/"))
    return sorted(found)


def check_tiers(tests_dir: str) -> list:
    """What is wrong with FILES against the test files on disk (empty when every file has exactly one tier)."""
    on_disk = set(test_files(tests_dir))
    problems = [f"{rel} has no tier (add it to FILES)" for rel in sorted(on_disk)
                if not rel.startswith("unit/") and rel not in FILES]
    problems += [f"{rel} is listed but does not exist" for rel in sorted(set(FILES) - on_disk)]
    problems += [f"{rel} is a unit test by its folder and must not be listed" for rel in sorted(FILES)
                 if rel.startswith("unit/")]
    problems += [f"{rel}: unknown tier {tier!r}" for rel, tier in sorted(FILES.items()) if tier not in TIERS]
    problems += [f"{rel} is in SERIAL_FILES but not in FILES" for rel in sorted(SERIAL_FILES)
                 if rel not in FILES]
    return problems
