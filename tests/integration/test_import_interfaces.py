"""The two ways operators run the import: `syn2mas --command migrate` and the syn2mas_import module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import yaml

from tests.support.ansible_run import HARNESS_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def homeserver(env):
    with env.populate() as s:
        alice = s.user("alice")
        s.threepid(alice, "email", "alice@example.test")
        s.login(alice, "PHONE")
        sso = s.user("sso", password_hash=None)
        s.external_id(sso, "oidc-google", "sub")
        s.user("bridge", appservice_id="irc")


def syn2mas(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "syn2mas"), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_migrate_dry_run_then_real_then_nothing_to_do(env):
    homeserver(env)
    common = ["--command", "migrate", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml]
    dry = syn2mas(*common, "--dryRun")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Dry run (rolled back, nothing kept): example.test into MAS 1.22.0")
    assert "skipped 1: appservice user (not migrated) (e.g. @bridge:example.test)" in dry.stdout
    assert env.mas("SELECT count(*) FROM users") == [(0,)]
    # progress per stage goes to stderr
    assert "users: 2 rows in" in dry.stderr

    real = syn2mas(*common, "--dryRun", "false")
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("Import committed: example.test")
    assert env.mas("SELECT count(*) FROM users") == [(2,)]

    again = syn2mas("migrate", "--synapseConfigFile=" + env.homeserver_yaml, "--masConfigFile=" + env.mas_yaml,
                    "--output", "json")
    assert again.returncode == 0
    result = json.loads(again.stdout)
    assert result["already_imported"] is True and result["changed"] is False
    assert result["counts"]["users"]["migrated"] == 2


def test_cli_migrate_with_output_json_shows_progress_on_stderr_only(env):
    homeserver(env)
    run = syn2mas("--command", "migrate", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile",
                  env.mas_yaml, "--dryRun", "--output", "json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["dry_run"] is True and result["counts"]["users"]["migrated"] == 2
    # An operator watching the run sees each stage end, with its rows, on stderr.
    for stage in ("users", "passwords", "device_sessions", "access_tokens", "refresh_tokens"):
        assert f"{stage}: {result['counts'][stage]['migrated']:,} rows in " in run.stderr, stage


def test_cli_failure_is_one_clear_line_and_non_zero(env):
    homeserver(env)
    env.write_configs(mas_extra={"matrix": {"homeserver": "elsewhere.example"}})
    run = syn2mas("--command", "migrate", "--synapseConfigFile", env.homeserver_yaml,
                  "--masConfigFile", env.mas_yaml)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("syn2mas: error: ") and "matrix.homeserver" in run.stderr
    missing = syn2mas("--command", "migrate", "--synapseConfigFile", "/nonexistent/homeserver.yaml",
                      "--masConfigFile", env.mas_yaml)
    assert missing.returncode == 1
    assert missing.stderr == "syn2mas: error: /nonexistent/homeserver.yaml: file not found\n"


def test_cli_failure_with_output_json_is_json_on_stdout_too(env):
    homeserver(env)
    env.write_configs(mas_extra={"matrix": {"homeserver": "elsewhere.example"}})
    run = syn2mas("--command", "migrate", "--synapseConfigFile", env.homeserver_yaml,
                  "--masConfigFile", env.mas_yaml, "--output", "json")
    assert run.returncode == 1
    result = json.loads(run.stdout)
    assert result["ok"] is False and result["command"] == "migrate" and result["exit_code"] == 1
    assert "matrix.homeserver" in result["error"]
    assert run.stderr == f"syn2mas: error: {result['error']}\n"
    assert env.mas("SELECT count(*) FROM users") == [(0,)]


def test_cli_upstream_provider_mapping_flag(env):
    from tests.support.migration_env import LEGACY_ID

    homeserver(env)
    with env.populate() as s:
        s.external_id("@alice:example.test", "cas", "alice-cas")
    common = ["--command", "migrate", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile", env.mas_yaml]
    refused = syn2mas(*common)
    assert refused.returncode == 1 and "1 user link of auth_provider 'cas' (CAS login)" in refused.stderr
    ok = syn2mas(*common, "--upstreamProviderMapping", f"cas:{LEGACY_ID}")
    assert ok.returncode == 0, ok.stderr
    assert env.mas("SELECT subject FROM upstream_oauth_links WHERE upstream_oauth_provider_id = %s",
                   (LEGACY_ID,)) == [("alice-cas",)]


def test_cli_secrets_never_printed(env, tmp_path):
    homeserver(env)
    env.pg.execute("ALTER USER postgres PASSWORD 'Sup3rS3cretPw'")
    mas = yaml.safe_load(open(env.mas_yaml))
    mas["database"] = {"uri": f"postgresql://postgres:Sup3rS3cretPw@localhost:1/{env.mas_db}"}
    with open(env.mas_yaml, "w") as handle:
        yaml.safe_dump(mas, handle)
    run = syn2mas("--command", "migrate", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile",
                  env.mas_yaml)
    assert run.returncode == 1
    assert "cannot connect to the MAS database (host=localhost port=1" in run.stderr
    assert "Sup3rS3cretPw" not in run.stderr + run.stdout
    as_json = syn2mas("--command", "migrate", "--synapseConfigFile", env.homeserver_yaml, "--masConfigFile",
                      env.mas_yaml, "--output", "json", "--synapseDatabaseUri",
                      f"postgresql://postgres:Sup3rS3cretPw@localhost:1/{env.synapse_db}")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"].startswith("cannot connect to the ")
    assert "Sup3rS3cretPw" not in as_json.stderr + as_json.stdout


def playbook(env, tmp_path, *extra, check=False):
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "import", "matrix.syn2mas.syn2mas_import": {
            "synapse_config": [env.homeserver_yaml], "mas_config": [env.mas_yaml]}, "register": "r"},
            {"name": "show",  # save_result: the harness's action (HARNESS_ENV)
             "save_result": {"content": "{{ r | to_json }}", "dest": str(tmp_path / "result.json")},
             "check_mode": False, "changed_when": False}],
    }]))
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={VENV_PYTHON}", str(book), *extra]
    if check:
        cmd.append("--check")
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                         env=dict(os.environ, **HARNESS_ENV))
    result = json.loads((tmp_path / "result.json").read_text()) if (tmp_path / "result.json").exists() else None
    return run, result


def test_module_check_mode_then_real_then_idempotent(env, tmp_path):
    homeserver(env)
    mas_before = env.mas_dump()
    run, result = playbook(env, tmp_path, check=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert result["dry_run"] is True and result["changed"] is True
    assert result["counts"]["users"]["migrated"] == 2
    assert env.mas_dump() == mas_before

    run, result = playbook(env, tmp_path)
    assert run.returncode == 0, run.stdout
    assert result["changed"] is True and result["dry_run"] is False
    assert result["mas_schema"]["release"] == "1.22.0"
    assert env.mas("SELECT username FROM users ORDER BY 1") == [("alice",), ("sso",)]

    run, result = playbook(env, tmp_path)
    assert run.returncode == 0
    assert result["changed"] is False and result["already_imported"] is True
    assert "changed=0" in run.stdout.replace(" ", "")


def test_module_failure_message_and_no_secret_in_verbose_output(env, tmp_path):
    homeserver(env)
    with env.populate() as s:
        s.user("mallory", server_name="other.example")
    run, _result = playbook(env, tmp_path, "-vvv")
    assert run.returncode == 2
    assert "@mallory:other.example" in run.stdout
    assert "shared-secret" not in run.stdout + run.stderr


def test_the_import_role_in_a_users_play_gives_each_module_its_connection_once(env, tmp_path):
    """The import role's modules get MAS's and Synapse's connections from the role's module_defaults, whether a
    user's play runs the role (`roles:`) or one entry point of it (`include_role`). An unset database URI is
    omitted (each module reads its database from the configs), as in a call without it; a set one reaches them."""
    homeserver(env)
    state_file = tmp_path / "state.json"
    result_file = tmp_path / "result.json"
    role_vars = {"syn2mas_synapse_config": [env.homeserver_yaml], "syn2mas_mas_config": [env.mas_yaml],
                 "syn2mas_state_file": str(state_file), "import_require_backup": False}
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([
        {"name": "A user's play with the role", "hosts": "localhost", "gather_facts": False,
         "roles": [{"role": "matrix.syn2mas.import", "vars": role_vars}]},
        {"name": "A user's play with one entry point", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "Verify the import", "ansible.builtin.include_role": {
                "name": "matrix.syn2mas.import", "tasks_from": "verify"},
             "vars": {**role_vars, "import_verify_live": False}},
            {"name": "Keep the result", "save_result": {"content": "{{ import_result | to_json }}",
                                                        "dest": str(result_file)}}]}]))

    def play(*extra):
        return subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               "-e", f"ansible_python_interpreter={VENV_PYTHON}", str(book), *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, check=False,
                              env=dict(os.environ, ANSIBLE_NOCOLOR="1", **HARNESS_ENV))

    # A MAS database given by URI that does not exist: the first module of the role (the state check) is refused
    # it, so the URI reached it; nothing was imported and no state was recorded.
    missing = env.pg.uri("no_such_mas_db", password="Sup3rS3cretPw")
    run = play("-e", f"syn2mas_mas_database_uri={missing}")
    assert run.returncode == 2, run.stdout + run.stderr
    before_failure = run.stdout.split("\nfatal: [localhost]: FAILED!")[0]
    failed_task = re.findall(r"^TASK \[(.*)\]", before_failure, re.M)[-1]
    assert failed_task.endswith("Check that the import may run (refused after users logged in through MAS)"), run.stdout
    assert "cannot connect to the MAS database" in run.stdout and "no_such_mas_db" in run.stdout, run.stdout
    assert "Sup3rS3cretPw" not in run.stdout + run.stderr
    assert env.mas("SELECT count(*) FROM users") == [(0,)] and not state_file.exists()

    run = play()
    assert run.returncode == 0, run.stdout + run.stderr
    assert env.mas("SELECT username FROM users ORDER BY 1") == [("alice",), ("sso",)]
    assert json.loads(state_file.read_text())["state"] == "migrated"
    verified = json.loads(result_file.read_text())["verify"]
    assert verified["ok"] is True and verified["totals"]["missing"] == 0 < verified["totals"]["found"], verified
    assert env.mas_db in verified["mas_database"], verified["mas_database"]  # the config's, no URI given
