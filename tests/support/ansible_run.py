"""Runs modules of this checkout for real: a small playbook in a temporary directory, run by
`ansible-playbook` from the repository root (so ansible.cfg maps matrix.syn2mas to the checkout).
Each task's registered result is saved as JSON next to the playbook."""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import subprocess
from dataclasses import dataclass

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_runs = itertools.count()
# ansible-playbook's environment for the tests' own playbooks: finds the harness's `save_result` action
# (tests/support/action_plugins/save_result.py), which writes a registered result to a file on the controller.
HARNESS_ENV = {"ANSIBLE_ACTION_PLUGINS": os.path.join(ROOT, "tests", "support", "action_plugins")}


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    results: list

    @property
    def result(self) -> dict:
        return self.results[0]


def run_tasks(tmp_path, tasks: list, check: bool = False, diff: bool = False, verbose: bool = True,
              interpreter: str | None = None, env: dict | None = None) -> PlaybookRun:
    """Runs `tasks` on localhost; `interpreter` is the host's Python (this repository's .venv unless
    given), `env` is added to ansible-playbook's environment (the controller's)."""
    n = next(_runs)
    workdir = tmp_path / f"play-{n}"
    workdir.mkdir()
    play_tasks = []
    for i, task in enumerate(tasks):
        play_tasks.append({**task, "register": f"result_{i}", "ignore_errors": True})
        play_tasks.append({
            "name": f"save result {i}",
            "save_result": {"content": "{{ result_%d | to_json }}" % i, "dest": str(workdir / f"{i}.json")},
            "check_mode": False, "diff": False, "no_log": True,
        })
    playbook = [{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks,
                 "vars": {"ansible_python_interpreter": interpreter or os.path.join(ROOT, ".venv", "bin", "python")}}]
    path = workdir / "playbook.yml"
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local", str(path)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbose:
        cmd.append("-v")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0", **HARNESS_ENV,
               **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    results = []
    for i in range(len(tasks)):
        out = workdir / f"{i}.json"
        if not out.exists():
            raise AssertionError(f"task {i} left no result; ansible-playbook said:\n{proc.stdout}\n{proc.stderr}")
        results.append(json.loads(out.read_text()))
    return PlaybookRun(rc=proc.returncode, stdout=proc.stdout + proc.stderr, results=results)


def recap(stdout: str) -> dict:
    """ansible-playbook's PLAY RECAP: host -> {ok, changed, failed}."""
    found = {}
    for host, ok, changed, failed in re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+"
                                                r"failed=(\d+)", stdout, re.M):
        found[host] = {"ok": int(ok), "changed": int(changed), "failed": int(failed)}
    return found


def latest_report(fleet, name: str = "migrate") -> dict:
    """The newest fleet report (JSON) a playbook wrote into fleet.report_dir."""
    paths = sorted(glob.glob(os.path.join(fleet.report_dir, "*", f"{name}.json")), key=os.path.getmtime)
    assert paths, f"no {name} report in {fleet.report_dir}"
    with open(paths[-1]) as handle:
        return json.load(handle)


def shown_diff(out: str, path: str) -> str:
    """The diff a --diff run showed for the file at `path`: from its `--- before:` line (`--- before: <path>`, or
    `--- before: (absent)` above `+++ after: <path>` for a new file) to the next task or diff; empty without one."""
    at = out.find(f"--- before: {path}\n")
    if at == -1:
        after = out.find(f"+++ after: {path}\n")
        if after == -1:
            return ""  # no diff of it
        at = out.rfind("--- before:", 0, after)
    ends = [i for i in (out.find("\nTASK [", at), out.find("\n--- before:", at + 1)) if i != -1]
    return out[at:min(ends, default=len(out))]


def window_tasks(out: str) -> list:
    """Per wave of a migrate.yml run, the tasks ansible-playbook showed from the mark before Synapse's stop until
    the mark of Synapse healthy again: the downtime window's tasks (those of the last wave last)."""
    found = []
    for start in [m.start() for m in re.finditer(r"^TASK \[Phase synapse_stop", out, re.M)]:
        end = out.index("TASK [Synapse healthy again", start)
        found.append(re.findall(r"^TASK \[(.*?)\] \**$", out[start:end], re.M))
    return found
