"""The module syn2mas_service_command, run by ansible-playbook on a host Python with nothing added (Debian's, as the
runbook runs the operator's stop and start commands on MAS's host, where no interpreter was chosen): the command's
code and output in the result, a non-zero code and an outlived timeout failing the task (no process of the command
left running), and nothing run in check mode."""

from __future__ import annotations

import os

from tests.support.ansible_run import run_tasks
from tests.support.processes import running

BARE_PYTHON = "/usr/bin/python3"
HANGS = "sleep 3594"  # a duration no other test sleeps, to find the process again


def tasks(marker):
    return [
        {"matrix.syn2mas.syn2mas_service_command": {"cmd": f"touch {marker}; echo stopped", "timeout": 30}},
        {"matrix.syn2mas.syn2mas_service_command": {"cmd": "echo 'no such unit' >&2; exit 5", "timeout": 30}},
        {"matrix.syn2mas.syn2mas_service_command": {"cmd": f"{HANGS}", "timeout": 1}},
    ]


def test_the_command_runs_bounded_and_its_failures_fail_the_task(tmp_path):
    marker = tmp_path / "ran"
    run = run_tasks(tmp_path, tasks(marker), interpreter=BARE_PYTHON)
    ended, failed, hung = run.results
    assert marker.exists()
    assert (bool(ended.get("failed")), ended["changed"], ended["rc"], ended["stdout"], ended["timed_out"]) == \
        (False, True, 0, "stopped\n", False), ended
    assert failed["failed"] is True and failed["rc"] == 5 and failed["stderr"] == "no such unit\n", failed
    assert failed["msg"] == "non-zero return code"
    assert hung["failed"] is True and hung["timed_out"] is True and "rc" not in hung, hung
    assert hung["msg"].startswith("Timeout exceeded: the command was still running after 1 s"), hung["msg"]
    assert running(HANGS) == []


def test_check_mode_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    run = run_tasks(tmp_path, tasks(marker)[:1], check=True, interpreter=BARE_PYTHON)
    assert run.result.get("skipped") is True and not run.result.get("changed"), run.result
    assert not os.path.exists(marker)
