# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Editing operators' hand-written YAML files without disturbing them.

A file is loaded with ruamel.yaml's round-trip loader and edited as a tree. When it is written
back, every top-level section the edit did not touch is copied from the original text byte for
byte; only the sections that changed are re-emitted by ruamel.yaml (with the indentation style
guessed from that very section, and with their comments). A removed top-level section leaves a
one-line comment saying why, and keeps the comment lines that introduce the next section.

A document is read through a reader (files.py), so the action plugins edit a managed host's
file on the controller and write it back with Ansible's copy. `commit` writes on this machine
(for the modules and the CLI): atomic (a temporary file in the same directory, then
os.replace), keeping the file's owner and mode, optionally keeping a timestamped backup, and
creating new files holding secrets with mode 0600. Diff text shown to users has secret values
replaced by a placeholder.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import time
from collections import Counter

from ..errors import ConfigError
from .files import LOCAL_FILES, ConfigFileMissing

try:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError as RuamelYAMLError

    HAS_RUAMEL = True
    RUAMEL_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by the adapters with missing_required_lib
    import traceback

    YAML = None
    CommentedMap = dict
    CommentedSeq = list
    RuamelYAMLError = Exception
    HAS_RUAMEL = False
    RUAMEL_IMPORT_ERROR = traceback.format_exc()

try:
    import yaml as pyyaml
except ImportError:  # pragma: no cover
    pyyaml = None

REDACTED = "<redacted>"

# Keys whose values are secrets, wherever they appear (homeserver.yaml, MAS config.yaml).
_SECRET_KEY_RE = re.compile(
    r"^(?:.*_)?(?:secret|secrets|password|pepper|token|secret_key|private_key|encryption|key|jwk)$",
    re.IGNORECASE,
)
# ... except these, which name files, lifetimes, or other non-secret things.
_NOT_SECRET_KEY_RE = re.compile(
    r"(?:_path|_file|_lifetime|_endpoint|_method|_alg|_algorithm|_enabled|_uri|_url|_header|_payload|_id)$"
    r"|^(?:signing_key|old_signing_keys|key_servers|trusted_key_servers|kid)$",
    re.IGNORECASE,
)
_URI_PASSWORD_RE = re.compile(r"(://[^/\s:@]*:)([^@\s/]+)(@)")


# --------------------------------------------------------------------------------------------
# Loading


def _indent_style(text: str, default=(2, 2, 0)) -> tuple:
    """(mapping indent, sequence indent, dash offset) most used in `text`, for ruamel's indent()."""
    mapping = Counter()
    seq = Counter()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    block_start = re.compile(r"^(\s*)(?:-\s+)?[^\s#'\"][^:#]*:\s*(?:#.*)?$")
    for current, nxt in zip(lines, lines[1:]):
        match = block_start.match(current)
        if not match:
            continue
        col = len(match.group(1))
        if current.lstrip().startswith("- "):
            col = col + (len(current.lstrip()) - len(current.lstrip()[1:].lstrip()))
        ncol = len(nxt) - len(nxt.lstrip())
        stripped = nxt.lstrip()
        if stripped.startswith("- ") or stripped == "-":
            offset = ncol - col
            after = stripped[1:]
            content = offset + 1 + (len(after) - len(after.lstrip()))
            if offset >= 0 and content >= offset + 2:
                seq[(content, offset)] += 1
        elif ncol > col:
            mapping[ncol - col] += 1
    m = mapping.most_common(1)[0][0] if mapping else default[0]
    if seq:
        s, o = seq.most_common(1)[0][0]
    else:
        s, o = default[1], default[2]
    return m, max(s, o + 2), o


def _new_yaml(style) -> "YAML":
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.allow_unicode = True
    mapping, sequence, offset = style
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    return y


def _yaml_error(path: str, exc) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    return ConfigError(f"{path}: invalid YAML{where}: {problem}")


def _require_ruamel():
    if not HAS_RUAMEL:
        raise ConfigError("ruamel.yaml is required to edit configuration files")


class YamlDocument:
    """A YAML file (or text) loaded for round-trip editing; `data` is the tree to edit."""

    def __init__(self, text: str, path: str = "<text>", exists: bool = True, default_style=(2, 2, 0)):
        _require_ruamel()
        self.path = path
        self.exists = exists
        self.original_text = text
        self.style = _indent_style(text, default_style) if text.strip() else default_style
        self._removed_notes: dict = {}
        self.data = self._parse(text)
        self._pristine = self._parse(text)

    def _parse(self, text: str):
        y = _new_yaml(self.style)
        try:
            data = y.load(text)
        except RuamelYAMLError as exc:
            raise _yaml_error(self.path, exc) from None
        if data is None:
            return CommentedMap()
        if not isinstance(data, CommentedMap):
            raise ConfigError(
                f"{self.path}: expected a mapping of settings at the top level, found {type(data).__name__}"
            )
        return data

    @classmethod
    def load(cls, path: str, missing_ok: bool = False, default_style=(2, 2, 0), reader=LOCAL_FILES) -> "YamlDocument":
        """The file at `path`, read with `reader` (this machine's files by default)."""
        try:
            text = reader.read_text(path)
        except ConfigFileMissing:
            if missing_ok:
                return cls("", path=path, exists=False, default_style=default_style)
            raise
        return cls(text, path=path, exists=True, default_style=default_style)

    # ---------------------------------------------------------------------------- editing helpers

    def remove_top_level(self, key: str, note: str) -> bool:
        """Removes a top-level key; the written file keeps a comment `# key: <note>` in its place."""
        if key not in self.data:
            return False
        del self.data[key]
        self._removed_notes[key] = note
        return True

    # ---------------------------------------------------------------------------- rendering

    def _dump(self, data, style) -> str:
        stream = io.StringIO()
        _new_yaml(style).dump(data, stream)
        return stream.getvalue()

    def _dump_key(self, mapping, key, style) -> str:
        single = CommentedMap()
        single[key] = mapping[key]
        if key in mapping.ca.items:
            single.ca.items[key] = mapping.ca.items[key]
        return self._dump(single, style)

    def _splice_possible(self) -> bool:
        if not self.original_text.strip() or not len(self._pristine):
            return False
        if self._pristine.fa.flow_style():
            return False
        # Anchors and aliases may cross sections: then the whole file is re-emitted.
        if re.search(r"(^|[\s\[{,:-])[&*][^\s,\]}]+", self._strip_scalars_and_comments()):
            try:
                events = list(_new_yaml(self.style).parse(self.original_text))
            except RuamelYAMLError:
                return False
            if any(type(e).__name__ == "AliasEvent" for e in events):
                return False
        return True

    def _strip_scalars_and_comments(self) -> str:
        return "\n".join(ln.split("#", 1)[0] for ln in self.original_text.splitlines())

    def render(self) -> str:
        """The new file text: untouched top-level sections verbatim, changed ones re-emitted."""
        if not len(self._pristine) and self.original_text.strip() and not self.original_text.lstrip().startswith("{"):
            # Only comments so far (e.g. a new file's header): keep them, add the keys after.
            if not len(self.data):
                return self.original_text
            head = self.original_text if self.original_text.endswith("\n") else self.original_text + "\n"
            return head + self._dump(self.data, self.style)
        if not self._splice_possible():
            if not len(self.data):
                return "" if not self.original_text.strip() else "{}\n"
            return self._dump(self.data, self.style)
        lines = self.original_text.splitlines(keepends=True)
        orig = self._pristine
        keys = list(orig.keys())
        starts = [orig.lc.key(k)[0] for k in keys]
        spans = {}
        for i, key in enumerate(keys):
            end = starts[i + 1] if i + 1 < len(keys) else len(lines)
            spans[key] = "".join(lines[starts[i]:end])
        prefix = "".join(lines[:starts[0]])

        out = [prefix]

        def emit(chunk: str):
            if out and out[-1] and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.append(chunk)

        new_keys = list(self.data.keys())
        emitted = set()
        pointer = 0
        for key in keys:
            if key not in self.data:
                content, trailing = _split_trailing(spans[key])
                indent = ""
                note = self._removed_notes.get(key, "removed by matrix.syn2mas")
                emit(f"{indent}# {key}: {note}\n" + trailing)
                continue
            while pointer < len(new_keys) and new_keys[pointer] != key:
                self._emit_new_or_changed(new_keys[pointer], spans, emitted, emit)
                pointer += 1
            self._emit_new_or_changed(key, spans, emitted, emit)
            pointer += 1
        for key in new_keys[pointer:]:
            self._emit_new_or_changed(key, spans, emitted, emit)
        return "".join(out)

    def _emit_new_or_changed(self, key, spans, emitted, emit):
        if key in emitted:
            return
        emitted.add(key)
        if key in spans:
            span = spans[key]
            style = _indent_style(span, self.style)
            if self._dump_key(self._pristine, key, style) == self._dump_key(self.data, key, style):
                emit(span)
                return
            _span_content, trailing = _split_trailing(span)
            content, _new_trailing = _split_trailing(self._dump_key(self.data, key, style))
            emit(content + trailing)
            return
        content, trailing = _split_trailing(self._dump_key(self.data, key, self.style))
        if self.original_text.strip():
            emit("\n" + content + trailing)
        else:
            emit(content + trailing)

    def changed(self) -> bool:
        return self.render() != self.original_text


def _split_trailing(chunk: str) -> tuple:
    """(content, trailing) where trailing is the run of blank and column-0 comment lines at the end.

    Those trailing lines introduce the next section, so they stay whatever happens to this one.
    """
    lines = chunk.splitlines(keepends=True)
    cut = len(lines)
    while cut > 0 and (not lines[cut - 1].strip() or lines[cut - 1].startswith("#")):
        cut -= 1
    content = "".join(lines[:cut])
    if content and not content.endswith("\n"):
        content += "\n"
    return content, "".join(lines[cut:])


# --------------------------------------------------------------------------------------------
# Tree helpers (work on ruamel's CommentedMap/CommentedSeq and on plain dicts/lists)


def ensure_mapping(parent, key: str, where: str):
    """parent[key] as a mapping, created (at the end) when absent or empty."""
    value = parent.get(key)
    if value is None:
        value = CommentedMap()
        parent[key] = value
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__}")
    return value


def set_value(mapping, key: str, value) -> bool:
    """Sets mapping[key] unless it already holds an equal value (keeps quoting and comments)."""
    if key in mapping and same(mapping[key], value):
        return False
    mapping[key] = to_commented(value)
    return True


def same(a, b) -> bool:
    """Equality that tells booleans from numbers (YAML `true` is not `1`)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return set(map(str, a.keys())) == set(map(str, b.keys())) and all(
            same(a[k], b[k]) for k in a.keys())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list, tuple)) or isinstance(b, (dict, list, tuple)):
        return False
    return plain(a) == plain(b) and (a is None) == (b is None)


def delete_key(mapping, key: str) -> bool:
    """Deletes mapping[key], moving the comment lines that followed its value to its predecessor."""
    if key not in mapping:
        return False
    keys = list(mapping.keys())
    index = keys.index(key)
    trailing = _take_trailing_comment(mapping, key)
    del mapping[key]
    if trailing is not None and index > 0:
        _append_trailing_comment(mapping, keys[index - 1], trailing)
    elif trailing is not None and len(mapping):
        # The deleted key was the first: its trailing lines introduced the next key.
        _comment_before(mapping, list(mapping.keys())[0], trailing)
    return True


def _comment_before(mapping, key, token):
    lines = [ln.strip() for ln in token.value.splitlines()]
    lines = [ln[1:].lstrip(" ") if ln.startswith("#") else None for ln in lines if ln]
    lines = [ln for ln in lines if ln is not None]
    if not lines:
        return
    column = getattr(token, "column", None)
    if column is None:
        column = token.start_mark.column if getattr(token, "start_mark", None) else 0
    mapping.yaml_set_comment_before_after_key(key, before="\n".join(lines), indent=column)


def _take_trailing_comment(container, key):
    """Detaches the comment token after container[key]'s last scalar (None when there is none)."""
    value = container[key]
    if isinstance(value, CommentedMap) and len(value):
        return _take_trailing_comment(value, list(value.keys())[-1])
    if isinstance(value, CommentedSeq) and len(value):
        return _take_trailing_comment(value, len(value) - 1)
    items = getattr(container, "ca", None)
    if items is None:
        return None
    entry = container.ca.items.get(key)
    if not entry:
        return None
    slot = 0 if isinstance(container, CommentedSeq) else 2
    token = entry[slot] if len(entry) > slot else None
    if token is None:
        return None
    entry[slot] = None
    return token


def _append_trailing_comment(container, key, token):
    value = container[key]
    if isinstance(value, CommentedMap) and len(value):
        return _append_trailing_comment(value, list(value.keys())[-1], token)
    if isinstance(value, CommentedSeq) and len(value):
        return _append_trailing_comment(value, len(value) - 1, token)
    slot = 0 if isinstance(container, CommentedSeq) else 2
    entry = container.ca.items.setdefault(key, [None, None, None, None])
    while len(entry) <= slot:
        entry.append(None)
    existing = entry[slot]
    if existing is None:
        entry[slot] = token
    else:
        # Keep the predecessor's own comment and add the moved lines after it.
        moved = token.value
        existing.value = existing.value.rstrip("\n") + "\n" + moved.lstrip("\n") if existing.value.strip() else (
            existing.value + moved
        )
    return None


def plain(value):
    """A plain-Python copy (dict/list/scalars) for comparisons."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def to_commented(value):
    """Plain dicts/lists converted to ruamel's commented types, so they dump in block style."""
    if isinstance(value, CommentedMap) or isinstance(value, CommentedSeq):
        return value
    if isinstance(value, dict):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = to_commented(v)
        return out
    if isinstance(value, (list, tuple)):
        out = CommentedSeq()
        for v in value:
            out.append(to_commented(v))
        return out
    return value


# --------------------------------------------------------------------------------------------
# Writing


def backup_file(path: str) -> str:
    """Copies `path` to `path.<timestamp>~` (same owner and mode) and returns the copy's name."""
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S")
    candidate = f"{path}.{stamp}~"
    counter = 1
    while os.path.exists(candidate):
        candidate = f"{path}.{stamp}.{counter}~"
        counter += 1
    try:
        shutil.copy2(path, candidate)
        st = os.stat(path)
        try:
            os.chown(candidate, st.st_uid, st.st_gid)
        except PermissionError:
            pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the backup {candidate}: {exc.strerror}") from None
    return candidate


# Longer than a screen: the durable-write sequence (temporary file, fsync, mode and owner, backup,
# rename, fsync of the directory) reads best as one list of steps.
def atomic_write(path: str, text: str, backup: bool = False, new_file_mode: int = 0o600) -> str | None:
    """Replaces `path` with `text` atomically; returns the backup's path (or None).

    An existing file keeps its owner, group and mode (a symlink is followed: its target is
    replaced). A new file gets `new_file_mode` (0600 by default, as these files hold secrets).
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise ConfigError(f"{path}: directory {directory} does not exist")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    backup_path = backup_file(target) if (backup and st is not None) else None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".syn2mas.tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create a temporary file in {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except PermissionError:
                    raise ConfigError(
                        f"{path}: cannot keep the file's owner {st.st_uid}:{st.st_gid} (run as root or as its owner)"
                    ) from None
        else:
            os.chmod(tmp, new_file_mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return backup_path


# --------------------------------------------------------------------------------------------
# Showing changes without secrets


def is_secret_key(key) -> bool:
    key = str(key)
    return bool(_SECRET_KEY_RE.match(key)) and not _NOT_SECRET_KEY_RE.search(key)


def redact_text(text: str, extra_secrets=()) -> str:
    """YAML text with every secret value replaced by a placeholder, formatting otherwise kept.

    Values of secret-looking keys (secret, password, pepper, *_token, ...) are found with
    PyYAML's node positions; passwords inside URIs and any `extra_secrets` are replaced too.
    """
    spans = []
    if pyyaml is not None and text.strip():
        try:
            node = pyyaml.compose(text, Loader=pyyaml.SafeLoader)
        except pyyaml.YAMLError:
            node = None
        stack = [(node, False)] if node is not None else []
        while stack:
            current, secret = stack.pop()
            if isinstance(current, pyyaml.MappingNode):
                for key_node, value_node in current.value:
                    key_secret = isinstance(key_node, pyyaml.ScalarNode) and is_secret_key(key_node.value)
                    stack.append((value_node, secret or key_secret))
            elif isinstance(current, pyyaml.SequenceNode):
                for item in current.value:
                    stack.append((item, secret))
            elif isinstance(current, pyyaml.ScalarNode) and secret and current.value not in ("", None):
                spans.append((current.start_mark.index, current.end_mark.index))
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + REDACTED + text[end:]
    text = _URI_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    for secret in sorted((s for s in extra_secrets if s), key=len, reverse=True):
        if len(str(secret)) >= 4:
            text = text.replace(str(secret), REDACTED)
    return text


def change_report(doc: YamlDocument, new_text: str, secrets=(), want_diff: bool = True) -> dict:
    """`changed` (the text differs, or the file is new) and, when wanted, `diff` with before/after
    texts whose secret values are replaced by a placeholder."""
    before = doc.original_text if doc.exists else ""
    result: dict = {"changed": new_text != before or not doc.exists}
    if want_diff:
        result["diff"] = {
            "before": redact_text(before, secrets), "after": redact_text(new_text, secrets),
            "before_header": doc.path if doc.exists else "(absent)", "after_header": doc.path,
        }
    return result


def commit(doc: YamlDocument, new_text: str, check_mode: bool, backup: bool = False, secrets=(),
           want_diff: bool = True, new_file_mode: int = 0o600) -> dict:
    """Writes `new_text` to the document's file on this machine unless unchanged or in check mode.

    Returns change_report()'s `changed` and `diff`, and `backup_file` when one was made.
    """
    result = change_report(doc, new_text, secrets, want_diff)
    if result["changed"] and not check_mode:
        backup_path = atomic_write(doc.path, new_text, backup=backup, new_file_mode=new_file_mode)
        if backup_path:
            result["backup_file"] = backup_path
    return result
