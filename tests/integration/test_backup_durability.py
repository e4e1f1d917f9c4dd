"""A backup counts as verified only once it is on disk: every dump, every copied file and the manifest are
fsynced, then the directories holding them, before the backup is renamed into place and reported.

fsync itself cannot be observed from here (that would take a power cut); what is observed is every
os.fsync call the backup makes, each resolved to the file it was made on, in order with the rename."""

from __future__ import annotations

import os

from _syn2mas.host import backup
from _syn2mas.host.probe import database_targets


def test_every_file_of_a_backup_and_its_directories_are_fsynced_before_it_counts(env, tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(src), str(dst)))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    dest = tmp_path / "backups" / "syn2mas"  # neither directory exists yet
    well_known = tmp_path / "client"
    well_known.write_text("{}")
    targets = database_targets([env.homeserver_yaml], [env.mas_yaml])
    result = backup.make_backup(str(dest), "20260101T000000Z", targets,
                                [env.homeserver_yaml, env.mas_yaml, str(well_known), str(tmp_path / "absent")],
                                bindir=env.pg.bindir)

    assert result["verified"] is True and result["changed"] is True
    renames = [e for e in events if e[0] == "rename"]
    assert len(renames) == 1 and renames[0][2] == result["path"]
    partial = renames[0][1]
    before = [e[1] for e in events[:events.index(renames[0])]]
    after = [e[1] for e in events[events.index(renames[0]) + 1:]]
    manifest = result["manifest"]
    stored = [entry["stored_as"] for entry in manifest["databases"] + manifest["files"] if not entry.get("absent")]
    assert sorted(stored) == ["files/client", "files/homeserver.yaml", "files/mas.yaml", "mas.pgdump",
                              "synapse.pgdump"]
    for name in stored + ["manifest.json"]:
        assert os.path.join(partial, name) in before, name
    # each directory after the entries made in it: files/, then the backup's own, then (after the rename) dest
    assert before.index(os.path.join(partial, "files")) > max(before.index(os.path.join(partial, n))
                                                              for n in stored if n.startswith("files/"))
    assert before.index(partial) > max(before.index(os.path.join(partial, n)) for n in stored + ["manifest.json"])
    assert after == [str(dest)]
    # the directories made for dest are durable in their parents
    assert str(tmp_path) in before and str(tmp_path / "backups") in before
    assert sorted(os.listdir(result["path"])) == ["files", "manifest.json", "mas.pgdump", "synapse.pgdump"]
