# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's files on the controller: `<report dir>/<run id>/<name>.json` and `.md` (what the action
syn2mas_report writes).

The directories made are 0700 and the files 0600 (a report names hosts, paths and findings: for the operator
only). Each file is written whole into a temporary file beside it and renamed over it, so a run interrupted
mid-write leaves the previous report or the new one, never half of one (and the temporary file's name is no
report name: fleet_report.latest_predicted reads `*/<name>.json` only).
"""

from __future__ import annotations

import json
import os
import tempfile

from .fleet_report import render_markdown

DIR_MODE = 0o700
FILE_MODE = 0o600
EXTENSIONS = ("json", "md")


class ReportWriteError(OSError):
    """A report file or directory that could not be written: names the path and why."""


def report_json(report: dict) -> str:
    """The report as its .json file holds it (as to_nice_json(indent=2) writes it): two-space indent, keys sorted,
    non-ASCII characters escaped, a final newline."""
    return json.dumps(report, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"


def report_texts(report: dict) -> dict:
    """{extension: the file's text} for each file of the report."""
    return {"json": report_json(report), "md": render_markdown(report)}


def _make_dirs(path: str) -> None:
    """`path` and its missing parents made 0700 (as ansible.builtin.file makes them); `path` itself set 0700."""
    missing = []
    at = path
    while at and not os.path.isdir(at):
        missing.append(at)
        parent = os.path.dirname(at)
        if parent == at:
            break
        at = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise ReportWriteError(f"{directory}: exists and is not a directory") from None
        except OSError as exc:
            raise ReportWriteError(f"{directory}: cannot make the report directory: {exc.strerror}") from exc
    try:
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise ReportWriteError(f"{path}: cannot set the report directory's mode: {exc.strerror}") from exc


def write_atomically(path: str, text: str, mode: int = FILE_MODE) -> None:
    """`text` (UTF-8) at `path` with `mode`, whole or not at all: a temporary file in the same directory,
    synced, then renamed over `path`."""
    directory, base = os.path.split(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory or ".")
    except OSError as exc:
        raise ReportWriteError(f"{path}: cannot write the report: {exc.strerror}") from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise ReportWriteError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc


def write_report(report: dict, report_dir: str, run_id: str, name: str = "migrate") -> dict:
    """Writes `report` as `<report_dir>/<run_id>/<name>.json` and `.md`; returns {extension: path written}.
    Both texts are made before anything is written, so a report that cannot be rendered writes nothing."""
    for label, value in (("run id", run_id), ("report name", name)):
        if not value:
            raise ValueError(f"the {label} is empty: it names the report's directory and files")
    texts = report_texts(report)
    directory = os.path.join(report_dir, run_id)
    _make_dirs(directory)
    paths = {}
    for ext in EXTENSIONS:
        paths[ext] = os.path.join(directory, f"{name}.{ext}")
        write_atomically(paths[ext], texts[ext])
    return paths
