"""kill -9 at every named point of the import, and a lost connection at the commit (issue 9).

The importer has a test-only hook (importer._test_point): SYN2MAS_TEST_KILL_AT=<point> makes the
run SIGKILL itself there, SYN2MAS_TEST_PAUSE_AT=<point> makes it SIGSTOP itself so that the test can
cut its connection at that exact moment. Each case checks MAS and Synapse by dump and that the
next run imports. A handful of points run every time; all of them under `make reliability`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.import_load import wait_until_no_importer
from tests.support.pgcluster import wait_for
from tests.support.reliability import cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGES = ["users", "passwords", "emails", "other_threepids", "upstream_links", "device_sessions",
          "deviceless_sessions", "access_tokens", "refresh_tokens"]
# Rebuild steps of MAS 1.22's schema: the first index, a primary key, a unique constraint, a foreign
# key, and the last foreign key.
REBUILD = ["rebuild-compat_access_tokens_session_fk", "rebuild-users_pkey", "rebuild-users_username_unique",
           "rebuild-compat_access_tokens_compat_session_id_fkey",
           "rebuild-user_unsupported_third_party_ids_user_id_fkey"]
POINTS = (["mas-checked", "synapse-locked", "mas-locked", "constraints-dropped"]
          + [f"{step}-{stage}" for stage in STAGES for step in ("copying", "copied")]
          + REBUILD + ["rebuilt", "marker-written", "before-commit"])
IN_THE_TEST_RUN = {"synapse-locked", "constraints-dropped", "copying-device_sessions", "copied-access_tokens",
                   "rebuild-users_pkey", "before-commit"}


def every_stage_homeserver(env):
    """A few rows in every stage's source, so that every stage copies something."""
    with env.populate() as s:
        alice = s.user("alice", admin=True)
        s.threepid(alice, "email", "alice@example.test")
        s.threepid(alice, "msisdn", "447700900123")
        s.login(alice, "PHONE", ip="192.0.2.1")
        s.login(alice, "LAPTOP", with_refresh=True)
        s.access_token(alice, None)
        bob = s.user("bob")
        s.login(bob, "BOBDEV")
        sso = s.user("sso", password_hash=None)
        s.external_id(sso, "oidc-google", "sub-1")


def migrate(env, extra_env=None):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bin", "syn2mas"), "--command", "migrate",
         "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(extra_env or {})})


def assert_next_run_imports(env):
    rerun = migrate(env)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "MAS was filled" not in out
    assert env.mas("SELECT count(*) FROM users") == [(3,)]
    assert env.mas("SELECT count(*) FROM compat_refresh_tokens") == [(1,)]


def run_with_session_ended_at_the_commit(env, dbname):
    """A run stopped (SIGSTOP) just before its COMMIT, its session on `dbname` ended from outside,
    as a DBA or a failover would, then let go on: (the finished process, stdout, stderr)."""
    proc = migrate(env, {"SYN2MAS_TEST_PAUSE_AT": "before-commit"})
    try:
        _pid, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), "the run did not reach the commit"
        (backend,), = env.pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'syn2mas' "
            "AND backend_type = 'client backend'", params=(dbname,))
        env.pg.execute("SELECT pg_terminate_backend(%s)", params=(backend,))
        assert wait_for(lambda: not env.pg.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                                   params=(backend,)), timeout=30)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, out, err


@pytest.mark.parametrize("point", cases(POINTS, IN_THE_TEST_RUN))
def test_kill_9_at_any_point_leaves_both_databases_as_they_were_and_the_next_run_imports(env, point):
    every_stage_homeserver(env)
    mas_before, synapse_before = env.mas_dump(), env.synapse_dump()
    proc = migrate(env, {"SYN2MAS_TEST_KILL_AT": point})
    _out, err = proc.communicate(timeout=300)
    # killed there, not finished nor failed before it
    assert proc.returncode == -signal.SIGKILL, f"the run did not reach {point}: {err}"
    wait_until_no_importer(env)
    assert env.mas_dump() == mas_before
    assert env.synapse_dump() == synapse_before
    assert_next_run_imports(env)


def test_kill_9_right_after_the_commit_leaves_the_import_in_mas_and_the_next_run_says_so(env):
    every_stage_homeserver(env)
    synapse_before = env.synapse_dump()
    proc = migrate(env, {"SYN2MAS_TEST_KILL_AT": "committed"})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert env.synapse_dump() == synapse_before
    assert env.mas("SELECT count(*) FROM users") == [(3,)]
    rerun = env.run()
    assert rerun["already_imported"] is True and rerun["synapse_changed_since_import"] is False


def test_the_mas_connection_lost_at_the_commit_is_reported_as_not_committed_and_the_next_run_imports(env):
    """The run stops itself just before COMMIT; the test ends its MAS session from outside, as a DBA
    or a failover would; COMMIT then meets a lost connection and the run looks up what MAS holds."""
    every_stage_homeserver(env)
    mas_before, synapse_before = env.mas_dump(), env.synapse_dump()
    proc, out, err = run_with_session_ended_at_the_commit(env, env.mas_db)
    assert proc.returncode == 1, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("syn2mas:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("syn2mas: error: lost the connection to MAS's database at the commit (")
    assert lines[0].endswith("the import was not committed, and MAS was left as it was: run the import again")
    assert "Traceback" not in err
    # what it reports is what MAS holds
    assert env.mas_dump() == mas_before
    assert env.synapse_dump() == synapse_before
    assert_next_run_imports(env)


def test_the_synapse_connection_lost_at_the_commit_still_reports_the_committed_import_truthfully(env):
    """Synapse's session ends (a DBA, a failover) once the run checked it and is about to commit:
    everything was read and checked, so MAS commits, and the run says it imported, with a note."""
    every_stage_homeserver(env)
    synapse_before = env.synapse_dump()
    proc, out, err = run_with_session_ended_at_the_commit(env, env.synapse_db)
    assert proc.returncode == 0, (out, err)
    assert "the connection to Synapse's database was lost after the import committed (harmless" in out + err
    assert "Traceback" not in err
    # what it reports is what MAS holds: the whole import
    assert env.mas("SELECT count(*) FROM users") == [(3,)]
    assert env.mas("SELECT count(*) FROM compat_refresh_tokens") == [(1,)]
    assert env.synapse_dump() == synapse_before
    rerun = env.run()
    assert rerun["already_imported"] is True and rerun["synapse_changed_since_import"] is False
