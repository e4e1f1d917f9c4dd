"""The suite's tiers, assigned here file by file, and test by test where a file's tests differ
(tests/conftest.py marks every collected test).

A test file missing from FILES, or a name in FILES or TESTS that is gone, stops any pytest run at start-up
(`check_tiers`), so a new file cannot be left out of its tier. Run one tier with `-m`, e.g.
`pytest -m unit`, `pytest -m "unit or database"` (`make test-fast`).

What is fast (the rule `make test-fast` stands on): the unit tier, and the database tier, which is the
library in-process against the session's one PostgreSQL on small homeservers. A test is not fast when it
does any of SLOW_CALLS: it loads a bulk homeserver to catch the import mid-run or sets a throttled
autovacuum on it (its tier is `faults`), or runs ansible-playbook (its tier is `playbook`); nor when it
does any of SLOW_IN_A_LOOP: it runs the `syn2mas` command as a process in a loop, by the dozen (its tier
is `cli`; a test may run the command once or twice and stay fast). `check_tiers` reads every fast-tier
test's code (and the file's helpers it calls) and stops the run when one of them does one of these without
its tier in TESTS, so a slow test cannot creep into the inner loop. Killing the
importer (test_import_kill_points.py) is a fault whatever the homeserver's size.
"""

from __future__ import annotations

import ast
import os

TIERS = {
    "unit": "the library and the adapters in-process: no database, no Synapse, no ansible-playbook",
    "database": "the library against a real PostgreSQL with the real Synapse and MAS schemas, small homeservers",
    "cli": "the `syn2mas` command run as a process by the dozen (every command and output format of a case) "
           "against the session's PostgreSQL",
    "faults": "the import under injected faults (killed, signalled, cut off, restarted, raced) on homeservers big "
              "enough to be caught mid-run; `make reliability` runs every case",
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
    "integration/test_import_kill_points.py": "faults",
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
    "integration/test_report_action.py": "playbook",
    "integration/test_report_secrets.py": "playbook",
    "integration/test_reverse_proxy_module.py": "playbook",
    "integration/test_sanity.py": "playbook",
    "integration/test_service_command_module.py": "playbook",
    "integration/test_well_known_role.py": "playbook",
    "integration/test_synapse_settings.py": "e2e",
    "integration/test_bench_runbook.py": "e2e",
    "integration/test_fleet_ssh.py": "e2e",
    "integration/test_live_checks.py": "e2e",
    "integration/test_molecule.py": "e2e",
    "integration/test_reverse_proxy_e2e.py": "e2e",
    "integration/test_runbook_e2e.py": "e2e",
    "integration/test_runbook_rollbacks_e2e.py": "e2e",
    "integration/test_runtime_discovery.py": "e2e",
    "integration/test_synapse_auth_start.py": "e2e",
    "integration/test_verify_synapse_activity.py": "e2e",
}

# The tests of a file whose tier differs from the file's: "file::function" (every case of it) -> tier.
TESTS = {
    "integration/test_backup_restore.py::test_backups_are_purged_through_the_module_once_the_migration_is_accepted":
        "playbook",
    "integration/test_import_reliability.py::"
    "test_a_malformed_database_uri_never_shows_its_password_in_module_results_or_logs": "playbook",
    "integration/test_import_reliability.py::test_the_import_role_refuses_a_stale_import": "playbook",
    "integration/test_import_reliability.py::test_a_malformed_database_uri_never_shows_its_password_on_the_cli":
        "cli",
    "integration/test_import_reliability.py::"
    "test_a_connection_lost_at_any_step_is_reported_as_lost_and_leaves_mas_as_it_was": "faults",
    "integration/test_import_reliability.py::"
    "test_a_parallel_worker_of_the_synapse_reader_terminated_is_a_database_error_mas_left_as_it_was": "faults",
    "integration/test_import_reliability.py::test_a_connection_lost_mid_copy_prints_one_line_and_never_a_row":
        "faults",
    "integration/test_import_reliability.py::test_a_write_to_synapse_waiting_during_the_import_is_refused_before_the_commit":
        "faults",
    "integration/test_import_reliability.py::"
    "test_a_synapse_idle_timeout_set_by_a_dba_does_not_end_the_snapshot_during_the_rebuild": "faults",
    "integration/test_import_reliability.py::"
    "test_a_postgresql_fast_restart_mid_import_leaves_mas_as_it_was_and_the_next_run_works": "faults",
    "integration/test_import_reliability.py::test_autovacuum_cleaning_mas_after_an_aborted_run_does_not_refuse_the_next_run":
        "faults",
    "integration/test_import_reliability.py::test_autovacuum_on_synapse_after_a_big_change_does_not_refuse_the_import":
        "faults",
    "integration/test_import_reliability.py::test_an_autovacuum_holding_on_past_the_bound_is_named_as_autovacuum":
        "faults",
    "integration/test_import_reliability.py::test_a_signal_mid_import_ends_with_one_line_and_exit_130_and_the_next_run_works":
        "faults",
    "integration/test_import_safety.py::test_killing_the_importer_mid_load_leaves_mas_as_it_was": "faults",
    "integration/test_import_safety.py::test_losing_the_mas_connection_mid_load_leaves_mas_as_it_was": "faults",
    "integration/test_import_safety.py::test_synapse_writes_during_the_snapshot_are_blocked_not_lost": "faults",
    "integration/test_verify.py::test_module_in_check_mode_and_for_real_fails_on_damage_only": "playbook",
    "integration/test_verify.py::test_module_refuses_data_without_mas_database": "playbook",
}

FAST_TIERS = ("unit", "database")
# What makes a test slow (SLOW_CALLS: a function it calls, or a command it names -> the tier it belongs to).
SLOW_CALLS = {"bulk_homeserver": "faults", "start_slow_autovacuum": "faults", "run_tasks": "playbook",
              "ansible-playbook": "playbook"}
# What makes a test slow when it does it in a loop (a `for`, `while` or comprehension of the test or of a
# helper of its file): the helpers that run the `syn2mas` command as a process -> the tier it belongs to.
SLOW_IN_A_LOOP = {"syn2mas": "cli", "verify_cli": "cli"}
SLOW = {**SLOW_CALLS, **{f"{name} in a loop": tier for name, tier in SLOW_IN_A_LOOP.items()}}

# The longest files, longest first (measured, see README): the workers start with them and the short files fill
# in at the end (tests/conftest.py orders the run by tier, then by this list).
LONGEST_FIRST = (
    "integration/test_fleet_ssh.py",
    "integration/test_runbook_e2e.py",
    "integration/test_reverse_proxy_e2e.py",
    "integration/test_runbook_rollbacks_e2e.py",
    "integration/test_bench_runbook.py",
    "integration/test_runtime_discovery.py",
    "integration/test_advisor_interfaces.py",
    "integration/test_config_edit_on_host.py",
    "integration/test_config_modules.py",
    "integration/test_sanity.py",
)


def _relative(path: str) -> str:
    path = path.replace(os.sep, "/")
    return path[len("tests/"):] if path.startswith("tests/") else path


def tier_of(path: str, function: str | None = None) -> str:
    """The tier of a test file given relative to the repository root, or of its test `function`."""
    rel = _relative(path)
    return "unit" if rel.startswith("unit/") else TESTS.get(f"{rel}::{function}", FILES[rel])


def test_files(tests_dir: str) -> list:
    """Every file pytest collects under tests/ (test_*.py), relative to tests/."""
    found = []
    for folder, dirs, files in os.walk(tests_dir):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "support", "fixtures")]
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(folder, name), tests_dir).replace(os.sep, "/"))
    return sorted(found)


def _called(call: ast.Call) -> str | None:
    return call.func.id if isinstance(call.func, ast.Name) else \
        call.func.attr if isinstance(call.func, ast.Attribute) else None


def _looped_calls(node) -> set:
    """The names of SLOW_IN_A_LOOP a function calls inside a loop (keys of SLOW, "<name> in a loop")."""
    loops = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
    return {f"{_called(sub)} in a loop" for loop in ast.walk(node) if isinstance(loop, loops)
            for sub in ast.walk(loop) if isinstance(sub, ast.Call) and _called(sub) in SLOW_IN_A_LOOP}


def _test_functions(source: str) -> dict:
    """A test file's module-level functions: name -> what of SLOW each does, itself or through another
    function of the file it calls (a call by name, a string naming the command, or a command run in a loop)."""
    functions = {node.name: node for node in ast.parse(source).body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    direct, calls = {}, {}
    for name, node in functions.items():
        direct[name], calls[name] = _looped_calls(node), set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                called = _called(sub)
                if called in SLOW_CALLS:
                    direct[name].add(called)
                elif called in functions and called != name:
                    calls[name].add(called)
            elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                direct[name] |= {what for what in SLOW_CALLS if what in sub.value}
    does = {name: set(found) for name, found in direct.items()}
    changed = True
    while changed:  # through helpers calling helpers
        changed = False
        for name in functions:
            more = set().union(*(does[callee] for callee in calls[name])) - does[name]
            if more:
                does[name] |= more
                changed = True
    return {name: found for name, found in does.items() if name.startswith("test_")}


def check_tiers(tests_dir: str) -> list:
    """What is wrong with FILES and TESTS against the test files on disk (empty when every file has exactly one
    tier and every fast test is fast by the rule in this module's docstring)."""
    on_disk = set(test_files(tests_dir))
    problems = [f"{rel} has no tier (add it to FILES)" for rel in sorted(on_disk)
                if not rel.startswith("unit/") and rel not in FILES]
    problems += [f"{rel} is listed but does not exist" for rel in sorted(set(FILES) - on_disk)]
    problems += [f"{rel} is a unit test by its folder and must not be listed" for rel in sorted(FILES)
                 if rel.startswith("unit/")]
    problems += [f"{rel}: unknown tier {tier!r}" for rel, tier in sorted({**FILES, **TESTS}.items())
                 if tier not in TIERS]
    problems += [f"{rel} is in LONGEST_FIRST but not in FILES" for rel in LONGEST_FIRST if rel not in FILES]
    functions = {}
    for rel in sorted(on_disk & (set(FILES) | {key.split("::")[0] for key in TESTS})):
        with open(os.path.join(tests_dir, rel)) as handle:
            functions[rel] = _test_functions(handle.read())
    for key, tier in sorted(TESTS.items()):
        rel, sep, name = key.partition("::")
        if not sep or rel not in functions or name not in functions[rel]:
            problems.append(f"{key} is in TESTS but no such test exists")
        elif tier == FILES.get(rel):
            problems.append(f"{key} is in TESTS with its file's own tier {tier!r}")
    for rel, tests in sorted(functions.items()):
        for name, does in sorted(tests.items()):
            tier = tier_of(rel, name)
            if tier in FAST_TIERS and does:
                belongs = sorted({SLOW[what] for what in does})
                problems.append(f"{rel}::{name} is in the fast tier {tier!r} but is slow ({', '.join(sorted(does))}): "
                                f"give it tier {' or '.join(belongs)} in TESTS")
    return problems
