"""Backups and their restore (the rollback's ground): a conf.d directory is kept as Synapse reads it,
and a restore puts back exactly what was there - files the run created are removed."""

from __future__ import annotations

import json
import os
import subprocess

from _syn2mas import backup
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


def test_a_yaml_file_created_in_conf_d_after_the_backup_is_removed_by_the_restore(env, tmp_path):
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


def test_a_symlinked_file_is_restored_through_its_link(env, tmp_path):
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
