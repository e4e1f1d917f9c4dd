"""An operator's stop or start command, bounded (host/service_command.py): it returns when the command ends,
and a command that outlives its timeout is stopped with every process it started."""

from __future__ import annotations

import os
import signal
import time

from _syn2mas.host import service_command
from tests.support.processes import running


def test_a_command_that_ends_returns_its_code_and_output():
    ran = service_command.run("echo stopped; echo 'a warning' >&2", timeout=30)
    assert (ran.rc, ran.stdout, ran.stderr, ran.timed_out) == (0, "stopped\n", "a warning\n", False)
    failed = service_command.run("echo nope >&2; exit 3", timeout=30)
    assert (failed.rc, failed.stderr, failed.timed_out) == (3, "nope\n", False)


def test_a_command_that_outlives_its_timeout_is_stopped_with_every_process_it_started():
    marker = "sleep 3597"  # a duration no other test sleeps, to find the processes again
    ran = service_command.run(f"{marker} & {marker}", timeout=1)
    assert ran.timed_out and ran.rc is None
    assert 1 <= ran.seconds < 1 + service_command.GRACE_SECONDS
    assert running(marker) == []


def test_processes_that_ignore_term_are_killed_after_the_grace():
    marker = "sleep 3596"
    started = time.monotonic()
    ran = service_command.run(f"trap '' TERM; {marker}", timeout=1, grace=0.5)
    assert ran.timed_out and time.monotonic() - started < 5
    assert running(marker) == []


def test_a_daemon_left_running_by_a_start_command_does_not_hold_it():
    marker = "sleep 3595"
    # The daemon keeps the command's output open: a reader waiting for the end of it would wait for the daemon.
    ran = service_command.run(f"{marker} & echo started", timeout=20)
    try:
        assert (ran.rc, ran.stdout, ran.timed_out) == (0, "started\n", False)
        assert ran.seconds < 10
        assert len(running(marker)) == 1  # a start command's daemon keeps running
    finally:
        for pid in running(marker):
            os.kill(pid, signal.SIGKILL)


def test_output_is_cut_at_its_limit():
    ran = service_command.run(f"head -c {service_command.OUTPUT_LIMIT + 10} /dev/zero | tr '\\0' x", timeout=30)
    assert ran.rc == 0
    assert ran.stdout.startswith("x" * service_command.OUTPUT_LIMIT)
    assert ran.stdout.endswith("[output cut at 64 KiB]")
