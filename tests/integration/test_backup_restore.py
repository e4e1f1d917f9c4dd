"""Backups and their restore (the rollback's ground): a conf.d directory is kept as Synapse reads it,
and a restore puts back exactly what was there - files the run created are removed."""

from __future__ import annotations

import json
import os
import subprocess

from _syn2mas.host import backup
from _syn2mas.db import database_conninfo
from _syn2mas.config import load_synapse_config


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def test_a_config_directory_is_restored_as_synapse_read_it(env, tmp_path):
    etc = tmp_path / "etc"
    confd = etc / "conf.d"
    write(str(confd / "10-server.yaml"), "server_name: example.test\n")
    write(str(confd / "README"), "not read by Synapse\n")
    override = str(confd / "zz-mas.yaml")
    well_known = str(tmp_path / "www" / "client")
    targets = {"synapse": database_conninfo(load_synapse_config([env.homeserver_yaml]), None)}

    made = backup.make_backup(str(tmp_path / "backups"), "run1", targets,
                              [env.homeserver_yaml, str(confd), override, well_known])
    assert made["verified"] is True
    manifest = made["manifest"]
    assert manifest["directories"] == [{"path": str(confd), "members": ["10-server.yaml"]}]
    assert {e["path"] for e in manifest["files"] if e.get("absent")} == {override, well_known}

    # What a migration run does: an override in conf.d, a changed file, a new .well-known.
    write(override, "matrix_authentication_service: {enabled: true}\n")
    write(str(confd / "10-server.yaml"), "server_name: changed.test\n")
    write(well_known, "{}\n")
    write(str(confd / "notes.txt"), "an operator's file, not Synapse's\n")

    assert sorted(backup.restore_files(made["path"], check_mode=True)) == sorted(
        [override, well_known, str(confd / "10-server.yaml")])
    assert os.path.exists(override)  # check mode changes nothing
    changed = backup.restore_files(made["path"])
    assert sorted(changed) == sorted([override, well_known, str(confd / "10-server.yaml")])
    assert sorted(os.listdir(confd)) == ["10-server.yaml", "README", "notes.txt"]
    assert open(confd / "10-server.yaml").read() == "server_name: example.test\n"
    assert not os.path.exists(well_known)
    assert backup.restore_files(made["path"]) == []  # a second restore has nothing to do


def test_a_yaml_file_created_in_conf_d_after_the_backup_is_removed_by_the_restore(tmp_path):
    confd = tmp_path / "conf.d"
    write(str(confd / "a.yaml"), "a: 1\n")
    made = backup.make_backup(str(tmp_path / "backups"), "run1", {}, [str(confd)])
    write(str(confd / "b.yaml"), "b: 2\n")  # created by the run, not named to the backup
    assert backup.restore_files(made["path"]) == [str(confd / "b.yaml")]
    assert os.listdir(confd) == ["a.yaml"]


def test_a_restore_of_files_does_not_need_the_configs_it_puts_back(env, tmp_path):
    """A failed run may leave MAS's config unparseable: restoring the files must still work."""
    env.write_configs()
    made = backup.make_backup(str(tmp_path / "backups"), "run1", {}, [env.homeserver_yaml, env.mas_yaml])
    good = open(env.mas_yaml).read()
    with open(env.mas_yaml, "a") as handle:
        handle.write("matrix: [unclosed\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = {"ANSIBLE_MODULE_ARGS": {"state": "restored", "dest": str(tmp_path / "backups"), "run_id": "run1",
                                    "synapse_config": [env.homeserver_yaml], "mas_config": [env.mas_yaml]}}
    proc = subprocess.run([os.path.join(root, ".venv", "bin", "python"), "-m",
                           "ansible_collections.matrix.syn2mas.plugins.modules.syn2mas_backup"],
                          input=json.dumps(args), capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=os.path.join(root, ".venv", "collections")))
    result = json.loads(proc.stdout)
    assert not result.get("failed"), result
    assert result["restored_files"] == [env.mas_yaml] and made["verified"]
    assert open(env.mas_yaml).read() == good


def test_a_symlinked_file_is_restored_through_its_link(tmp_path):
    # sites-enabled/matrix -> ../sites-available/matrix: the restore puts the target back, the link stays.
    target = tmp_path / "sites-available" / "matrix"
    write(str(target), "server { listen 80; }\n")
    os.chmod(target, 0o640)
    link = tmp_path / "sites-enabled" / "matrix"
    os.makedirs(link.parent)
    link.symlink_to("../sites-available/matrix")
    made = backup.make_backup(str(tmp_path / "backups"), "run1", {}, [str(link)])
    write(str(target), "server { listen 80; location /x {} }\n")  # the run's edit, through the link
    assert backup.restore_files(made["path"]) == [str(link)]
    assert os.readlink(link) == "../sites-available/matrix"
    assert target.read_text() == "server { listen 80; }\n"
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(link.parent)) == ["matrix"] and sorted(os.listdir(target.parent)) == ["matrix"]


def test_backups_are_purged_through_the_module_once_the_migration_is_accepted(env, tmp_path):
    """syn2mas_backup state=absent: check mode shows what would go, the run removes the backups (and an
    interrupted one's leftovers, not an operator's own files), a second run changes nothing."""
    from tests.support.ansible_run import run_tasks

    dest = tmp_path / "backups"
    write(str(tmp_path / "etc" / "hs.yaml"), "server_name: example.test\n")
    for run_id in ("20260101T000000Z", "20260102T000000Z"):
        assert backup.make_backup(str(dest), run_id, {}, [str(tmp_path / "etc" / "hs.yaml")])["verified"]
    os.makedirs(dest / ".20260103T000000Z.abc123")  # what an interrupted backup left
    write(str(dest / "operator-notes.txt"), "mine\n")
    os.makedirs(dest / "operator-dir")
    task = {"matrix.syn2mas.syn2mas_backup": {"state": "absent", "dest": str(dest)}}
    run = run_tasks(tmp_path, [task, {"matrix.syn2mas.syn2mas_backup": {
        "state": "absent", "dest": str(dest), "run_id": "20260101T000000Z"}}], check=True)
    expected = sorted(str(dest / d) for d in (".20260103T000000Z.abc123", "20260101T000000Z", "20260102T000000Z"))
    assert run.results[0]["changed"] is True and sorted(run.results[0]["removed"]) == expected, run.stdout
    assert run.results[1]["removed"] == [str(dest / "20260101T000000Z")]
    assert len(os.listdir(dest)) == 5  # check mode removed nothing
    run = run_tasks(tmp_path, [task, task])
    assert sorted(run.results[0]["removed"]) == expected, run.stdout
    assert run.results[1]["changed"] is False and run.results[1]["removed"] == []
    assert sorted(os.listdir(dest)) == ["operator-dir", "operator-notes.txt"]
