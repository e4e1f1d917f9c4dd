"""System accounts for the tests (useradd, groupadd, usermod, userdel), one command at a time across the
pytest-xdist workers: shadow's tools lock /etc/passwd and /etc/group and fail at once, rather than wait, when
another process holds the lock. A lock file taken around each command lets the files that create users run
on both workers."""

from __future__ import annotations

import fcntl
import subprocess

LOCK_FILE = "/tmp/syn2mas-tests-accounts.lock"


def run(cmd: list, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, check=check, **kw) while no other test process runs an account command."""
    with open(LOCK_FILE, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return subprocess.run(cmd, check=check, **kw)
