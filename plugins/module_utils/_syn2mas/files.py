# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the library reads configuration files from.

The CLI and the modules read the files of the machine they run on (`LocalFiles`). The action
plugins run the library on the Ansible controller and pass a reader of the managed host's files
instead (it fetches each file over Ansible's connection). Both have the methods below and raise
the same errors, naming the file by its path on the machine that holds it.
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigError

_SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def refuse_special_file(path: str) -> None:
    """Refuses a FIFO, socket or device before it is opened: reading one may block for ever (a
    FIFO nobody writes to) or never end. Missing files are left to the caller's open()."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            raise ConfigError(f"{path}: is {kind}, not a regular file; give the path of the file itself")


class ConfigFileMissing(ConfigError):
    """The file does not exist (callers that may create it catch this one)."""


def decode_text(path: str, data: bytes) -> str:
    """A file's bytes as text, or a ConfigError naming the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class LocalFiles:
    """The files of the machine this code runs on."""

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        """A regular file, or a symbolic link to one (as os.path.isfile)."""
        return os.path.isfile(path)

    def list_dir(self, path: str) -> list[str]:
        """The names of a directory's entries."""
        try:
            return os.listdir(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot list the directory: {exc.strerror}") from None

    def read_bytes(self, path: str) -> bytes:
        refuse_special_file(path)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ConfigFileMissing(f"{path}: file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: permission denied (run as a user that can read it)") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, expected a file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None

    def read_text(self, path: str) -> str:
        return decode_text(path, self.read_bytes(path))

    def same_file(self, first: str, second: str) -> bool:
        """Whether two paths name the same file (links followed; for absent files, the same path)."""
        try:
            return os.path.samefile(first, second)
        except OSError:
            return os.path.realpath(first) == os.path.realpath(second)


LOCAL_FILES = LocalFiles()
