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

from ..errors import ConfigError

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


class FilesRead:
    """Files as another host holds them, read there beforehand (see `read_files`): MAS's config for
    the modules that run on Synapse's host, Synapse's config for the edits of MAS's config that run
    against MAS's host. Paths are that host's; errors name them and the host. A path that was not
    read there goes to `fallback` (the reader of the host the code runs against), or is an error.
    """

    def __init__(self, host: str, files: dict, dirs: dict | None = None, errors: dict | None = None,
                 fallback=None):
        self.host = host
        self._files = dict(files or {})
        self._dirs = {path: list(names) for path, names in (dirs or {}).items()}
        self._errors = dict(errors or {})
        self._fallback = fallback

    def _holds(self, path: str) -> bool:
        return path in self._files or path in self._dirs or path in self._errors

    def is_dir(self, path: str) -> bool:
        if self._holds(path):
            return path in self._dirs
        return self._fallback.is_dir(path) if self._fallback else False

    def is_file(self, path: str) -> bool:
        if self._holds(path):
            return path in self._files
        return self._fallback.is_file(path) if self._fallback else False

    def list_dir(self, path: str) -> list[str]:
        if path in self._dirs:
            return list(self._dirs[path])
        if self._fallback and not self._holds(path):
            return self._fallback.list_dir(path)
        raise ConfigError(f"{path}: cannot list the directory on {self.host}: {self._why(path)}")

    def _why(self, path: str) -> str:
        return self._errors.get(path) or "it was not read there"

    def read_bytes(self, path: str) -> bytes:
        return self.read_text(path).encode("utf-8")

    def read_text(self, path: str) -> str:
        if path in self._files:
            return self._files[path]
        if path in self._dirs:
            raise ConfigError(f"{path}: is a directory on {self.host}, expected a file")
        if path in self._errors or not self._fallback:
            why = self._why(path)
            if why.endswith("file not found"):
                raise ConfigFileMissing(f"{path}: file not found on {self.host}")
            raise ConfigError(f"{path}: cannot read it on {self.host}: {why}")
        return self._fallback.read_text(path)

    def same_file(self, first: str, second: str) -> bool:
        if os.path.normpath(first) == os.path.normpath(second):
            return True
        if self._fallback and not (self._holds(first) or self._holds(second)):
            return self._fallback.same_file(first, second)
        return False


def read_files(paths, reader=LOCAL_FILES) -> dict:
    """Reads `paths` for a FilesRead on another host: {files: {path: text}, dirs: {path: [names]},
    errors: {path: message}}. A directory stands for its `*.yaml` files, as Synapse reads a
    `--config-path` directory; its other entries are neither listed nor read."""
    files, dirs, errors = {}, {}, {}
    for path in paths:
        if reader.is_dir(path):
            try:
                names = sorted(name for name in reader.list_dir(path)
                               if name.endswith(".yaml") and reader.is_file(os.path.join(path, name)))
            except ConfigError as exc:
                errors[path] = _reason(path, exc)
                continue
            dirs[path] = names
            targets = [os.path.join(path, name) for name in names]
        else:
            targets = [path]
        for target in targets:
            try:
                files[target] = reader.read_text(target)
            except ConfigError as exc:
                errors[target] = _reason(target, exc)
    return {"files": files, "dirs": dirs, "errors": errors}


def _reason(path: str, exc: ConfigError) -> str:
    """An error's message without the path it starts with (FilesRead names the path and host again)."""
    message = str(exc)
    return message[len(path) + 2:] if message.startswith(path + ": ") else message
