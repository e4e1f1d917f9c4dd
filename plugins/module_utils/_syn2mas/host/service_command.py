# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An operator's command that stops or starts a service (Synapse, its workers, MAS), bounded in time.

A stop that hangs must fail its step within the operator's timeout, not hold the downtime window open. The
command runs in a session of its own, so that when it outlives its timeout every process it started goes with
it (TERM, then KILL after a grace), none left running. Its output goes to files, not pipes: a daemon that a
start command leaves running may keep them open, and the command has ended all the same.

Standard library only: the module that wraps it runs on whatever Python the host has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

# After the TERM sent at the timeout, how long the command's processes get to end before KILL.
GRACE_SECONDS = 5.0
# After KILL, how long to wait for the command's processes to be gone.
KILL_WAIT_SECONDS = 2.0
# What a result keeps of each output stream (an operator's command may be verbose).
OUTPUT_LIMIT = 64 * 1024


@dataclass
class CommandRun:
    rc: int | None  # None: the command outlived its timeout and was stopped
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def run(command: str, timeout: float, shell: str = "/bin/sh", grace: float = GRACE_SECONDS) -> CommandRun:
    """Runs `command` with `shell -c`, waiting at most `timeout` seconds for it to end."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([shell, "-c", command], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            _stop_session(proc, grace)
        seconds = time.monotonic() - started
        return CommandRun(rc, _read(out), _read(err), round(seconds, 3), rc is None)


def _stop_session(proc: subprocess.Popen, grace: float) -> None:
    """TERM to every process of the command's session (its process group), KILL to those left after `grace`."""
    _signal_group(proc.pid, signal.SIGTERM)
    _wait_gone(proc, grace)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    # KILL is delivered asynchronously: until the group is gone (briefly; an orphan may wait to be reaped).
    _wait_gone(proc, KILL_WAIT_SECONDS)


def _wait_gone(proc: subprocess.Popen, seconds: float) -> None:
    """Waits at most `seconds` for no process of the command's group to be left."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _group_alive(proc):
        time.sleep(0.02)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reaps the shell once it ended, so that it does not count as alive
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group changed user: still there
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read(handle) -> str:
    handle.seek(0)
    data = handle.read(OUTPUT_LIMIT + 1)
    text = data[:OUTPUT_LIMIT].decode("utf-8", errors="replace")
    return text + ("\n[output cut at 64 KiB]" if len(data) > OUTPUT_LIMIT else "")
