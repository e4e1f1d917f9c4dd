"""The collection as users get it: the tarball `ansible-galaxy collection build` makes from this checkout,
its metadata, and the changelog as antsibull-changelog keeps it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")

# What an installed collection consists of: its content, its documentation and galaxy's own files.
SHIPPED_TOP_LEVEL = {"plugins", "roles", "playbooks", "meta", "bin", "changelogs", "docs", "README.md", "CHANGELOG.rst",
                     "requirements.txt", "requirements-controller.txt", "MANIFEST.json", "FILES.json"}
# For developing and testing the collection only (each exists in a checkout after setup and the tests).
NOT_SHIPPED = ("tests/", "bench/", "molecule/", "scripts/", ".ci/", ".venv", ".ansible/", ".git",
               "requirements-test.txt", "requirements-bench.txt", "Makefile", "pytest.ini", "ansible.cfg",
               ".ansible-lint", "changelogs/.plugin-cache.yaml")


def galaxy() -> dict:
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    tarball = out / f"matrix-syn2mas-{galaxy()['version']}.tar.gz"
    assert tarball.exists(), run.stdout
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        # Extracted as a user's tar would: only files and folders, all inside the target (the "data" filter, on a
        # Python that has it: Debian 12's 3.11.2 has not, it came in 3.11.4).
        if hasattr(tarfile, "data_filter"):
            tar.extractall(out / "collection", filter="data")
        else:
            unsafe = [m.name for m in members.values() if not (m.isfile() or m.isdir()) or os.path.isabs(m.name)
                      or ".." in m.name.split("/")]
            assert not unsafe, f"the tarball holds links, devices or paths outside it: {unsafe}"
            tar.extractall(out / "collection")  # checked just above
    return members, out / "collection"


def test_the_tarball_holds_the_collection(built):
    members = built[0]
    files = {name for name, m in members.items() if m.isfile()}
    for name in ("README.md", "CHANGELOG.rst", "changelogs/changelog.yaml", "requirements.txt", "MANIFEST.json",
                 "FILES.json", "bin/syn2mas", "meta/runtime.yml", "meta/execution-environment.yml"):
        assert name in files, name
    # module_utils with its subfolders: the library's rooms (migration/, config/, host/, ...) ship too.
    for folder, wanted in (("plugins/modules", ".py"), ("plugins/module_utils", ".py"),
                           ("plugins/doc_fragments", ".py"), ("playbooks", ".yml")):
        for top, _dirs, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                path = os.path.relpath(os.path.join(top, name), ROOT)
                if name.endswith(wanted):
                    assert path in files, path
    for role in os.listdir(os.path.join(ROOT, "roles")):
        assert f"roles/{role}/tasks/main.yml" in files and f"roles/{role}/meta/argument_specs.yml" in files, role
    assert members["bin/syn2mas"].mode & 0o111 == 0o111  # still a command


def test_the_tarball_holds_nothing_for_development(built):
    members = built[0]
    leaked = sorted(name for name in members if name.startswith(NOT_SHIPPED) or name in NOT_SHIPPED)
    assert leaked == []
    assert sorted({name.split("/")[0] for name in members} - SHIPPED_TOP_LEVEL) == []
    assert not [name for name in members if "__pycache__" in name or name.endswith((".pyc", ".tar.gz"))]


def test_manifest_has_the_version_and_no_placeholder_link(built):
    members, collection = built
    manifest = json.loads((collection / "MANIFEST.json").read_text())
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("matrix", "syn2mas", galaxy()["version"])
    for key in ("repository", "documentation", "homepage", "issues"):
        value = info.get(key) or ""
        assert "example" not in value and "invalid" not in value, (key, value)
    listed = {entry["name"] for entry in json.loads((collection / "FILES.json").read_text())["files"]
              if entry["ftype"] == "file"}
    assert listed == {name for name, m in members.items() if m.isfile()} - {"MANIFEST.json", "FILES.json"}


def test_the_built_command_reports_the_collections_version_on_a_bare_python(built):
    """Debian's own python3 (no psycopg2, no PyYAML) runs `syn2mas --version` from the installed tarball."""
    collection = built[1]
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
    run = subprocess.run([python, str(collection / "bin" / "syn2mas"), "--version"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"syn2mas {galaxy()['version']}\n", "")


def test_changelog_fragments_and_changelog_lint_with_antsibull_changelog():
    tool = os.path.join(BIN, "antsibull-changelog")
    if not os.path.exists(tool):
        pytest.skip("antsibull-changelog is not installed in .venv (requirements-test.txt)")
    for args in (["lint"], ["lint-changelog-yaml", "changelogs/changelog.yaml"]):
        run = subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert (run.returncode, run.stdout) == (0, ""), run.stdout + run.stderr
    with open(os.path.join(ROOT, "changelogs", "changelog.yaml")) as handle:
        releases = yaml.safe_load(handle)["releases"]
    with open(os.path.join(ROOT, "CHANGELOG.rst")) as handle:
        rendered = handle.read()
    for version in releases:
        assert f"\nv{version}\n" in rendered, version  # CHANGELOG.rst is rendered from changelog.yaml


def test_the_execution_environment_installs_the_built_tarball(built, tmp_path):
    """`ansible-builder create` makes the build context from meta/execution-environment.yml and the tarball
    `ansible-galaxy collection build` wrote beside it; its galaxy stage, replayed here without a container
    runtime, installs this collection from that tarball (Galaxy is never asked)."""
    tarball = built[1].parent / f"matrix-syn2mas-{galaxy()['version']}.tar.gz"
    (tmp_path / "meta").mkdir()
    for name in ("execution-environment.yml", "ee-requirements.txt", "ee-bindep.txt"):
        shutil.copy(os.path.join(ROOT, "meta", name), tmp_path / "meta" / name)
    shutil.copy(tarball, tmp_path / tarball.name)
    run = subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", "meta/execution-environment.yml",
                          "-c", "context", "--output-filename", "Containerfile"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    context = tmp_path / "context"
    assert os.listdir(context / "_build" / "collection") == [tarball.name]
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "/build/collection/matrix-syn2mas.tar.gz", "type": "file"}]}
    galaxy_stage = (context / "Containerfile").read_text().split("FROM base AS galaxy", 1)[1].split("\nFROM ", 1)[0]
    steps = [line for line in galaxy_stage.splitlines() if line.startswith(("COPY", "RUN"))]
    renames = [line[len("RUN "):] for line in steps if "mv matrix-syn2mas-" in line]
    install = next(i for i, line in enumerate(steps) if "ansible-galaxy collection install" in line)
    assert len(renames) == 1 and steps.index("RUN " + renames[0]) < install, steps
    # The stage as the container runs it, with /build here: the rename, then the collection install.
    build = tmp_path / "build"
    shutil.copytree(context / "_build", build)
    rename = subprocess.run(["sh", "-c", renames[0].replace("/build", str(build))], capture_output=True, text=True,
                            check=False)
    assert rename.returncode == 0, rename.stderr
    (build / "requirements.yml").write_text(yaml.safe_dump(
        {"collections": [dict(c, name=c["name"].replace("/build", str(build))) for c in requirements["collections"]]}))
    install = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--force", "-r", "requirements.yml",
                              "-p", str(tmp_path / "collections")], cwd=build, capture_output=True, text=True,
                             timeout=300, check=False, env=dict(os.environ, ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/"))
    assert install.returncode == 0, install.stdout + install.stderr
    manifest = json.loads((tmp_path / "collections" / "ansible_collections" / "matrix" / "syn2mas" /
                           "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == galaxy()["version"]
