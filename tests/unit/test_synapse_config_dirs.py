"""Synapse config directories (`--config-path conf.d/`) read exactly as Synapse reads them: the same
files in the same order, compared with Synapse's own find_config_files and read_config_files."""

from __future__ import annotations

import json
import subprocess

import pytest

from _syn2mas.config import load_synapse_config, synapse_config_files
from _syn2mas.errors import ConfigError
from tests.support.synapse_schema import LATEST, synapse_python


def synapse_reads(paths) -> tuple[list, dict]:
    """The files and the merged config the real Synapse (its own code) reads for these config paths."""
    code = ("import json, sys\n"
            "from synapse.config._base import find_config_files, read_config_files\n"
            "files = find_config_files(sys.argv[1:])\n"
            "print(json.dumps({'files': files, 'config': read_config_files(files)}))\n")
    proc = subprocess.run([synapse_python(LATEST), "-c", code, *map(str, paths)], capture_output=True, text=True,
                          check=True, timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["files"], out["config"]


@pytest.fixture
def confd(tmp_path):
    """homeserver.yaml plus a conf.d holding everything Synapse treats specially."""
    hs = tmp_path / "homeserver.yaml"
    hs.write_text("server_name: example.com\nreport_stats: false\npublic_baseurl: https://hs/\nmedia: main\n")
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "20-db.yaml").write_text("database: {name: psycopg2, args: {dbname: later}}\nmedia: from-20\n")
    (d / "10-db.yaml").write_text("database: {name: psycopg2, args: {dbname: earlier}}\n")
    (d / "B-upper.yaml").write_text("media: from-B\n")        # sorts before lower-case names
    (d / ".hidden.yaml").write_text("hidden: read-too\n")      # Synapse skips no dot files
    (d / "old.yml").write_text("media: from-yml-ignored\n")    # only *.yaml
    (d / "README").write_text("not yaml: [\n")
    (d / "sub.yaml").mkdir()                                   # a directory, even named *.yaml, is skipped
    (d / "sub.yaml" / "deep.yaml").write_text("media: from-subdirectory-ignored\n")
    outside = tmp_path / "shared-oidc.yaml"
    outside.write_text("oidc_providers: [{idp_id: dex, issuer: 'https://dex/', client_id: c}]\n")
    (d / "30-oidc.yaml").symlink_to(outside)                   # a link to a file counts as a file
    (d / "40-dangling.yaml").symlink_to(tmp_path / "gone.yaml")  # a dangling link does not
    return hs, d


def test_directory_gives_the_files_synapse_reads_in_its_order(confd):
    hs, d = confd
    files = synapse_reads([hs, d])[0]
    assert synapse_config_files([str(hs), str(d)]) == files
    names = [f.rsplit("/", 1)[1] for f in files[1:]]
    assert names == [".hidden.yaml", "10-db.yaml", "20-db.yaml", "30-oidc.yaml", "B-upper.yaml"]


def test_directory_merges_to_what_synapse_reads(confd):
    hs, d = confd
    synapse_config = synapse_reads([hs, d])[1]
    ours = load_synapse_config([str(hs), str(d)])
    assert ours.raw == synapse_config
    assert ours.raw["media"] == "from-B" and ours.database_conninfo() == {"dbname": "later"}
    assert ours.where("database") == f"{d}/20-db.yaml: database"
    # A directory listed before a file: the file wins, as in Synapse.
    synapse_config = synapse_reads([d, hs])[1]
    assert load_synapse_config([str(d), str(hs)]).raw == synapse_config and synapse_config["media"] == "main"


def test_excluded_file_inside_a_listed_directory_is_not_read(confd):
    hs, d = confd
    ours = load_synapse_config([str(hs), str(d)], exclude=[str(d / "20-db.yaml")])
    assert ours.database_conninfo() == {"dbname": "earlier"}
    assert str(d / "20-db.yaml") not in ours.files


def test_empty_directory_alone_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no Synapse configuration file found there"):
        load_synapse_config([str(tmp_path)])
