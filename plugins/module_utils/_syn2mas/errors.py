# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors the library raises, and the one redaction every message goes through.

Each error's message is meant to be shown to an operator as it is: it is redacted when the error
is made, so no path (CLI, module result, advisor finding, log, report) can show a credential.
"""

from __future__ import annotations

import re

MASK = "********"

# Secrets the library has seen this run (database passwords, password files' contents): masked
# wherever they appear, however the text that quotes them was produced.
_KNOWN_SECRETS: set = set()

# A password written out in a URI: everything between `user:` and the URI's LAST `@`, so a password
# holding `@` or `/` is masked whole (one with a space is a remembered secret: see db.parsed).
_URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']*:)[^\s\"']*@", re.IGNORECASE)
# ...and as a keyword (password=..., sslpassword=...), quoted or not, or a URI query parameter.
_KEYWORD_PASSWORD = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"&]+)", re.IGNORECASE)


def remember_secret(value) -> None:
    """Marks a value as a secret: redact() masks it from now on (values under 3 characters would
    mask ordinary words, and such passwords are not worth protecting this way)."""
    if value is not None and len(str(value)) >= 3:
        _KNOWN_SECRETS.add(str(value))


def redact(text, secrets=()) -> str:
    """`text` with every known secret, every URI password and every password keyword masked."""
    text = str(text)
    for secret in sorted(set(_KNOWN_SECRETS) | {str(s) for s in secrets if s and len(str(s)) >= 3},
                         key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def redact_data(value):
    """A result (dicts, lists, strings) with every string redacted: for module results and JSON."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


class Syn2masError(Exception):
    """Base class: the message says what is wrong, where (file, key, table or row) and what to do."""

    def __init__(self, message="", *args):
        super().__init__(redact(message), *args)


def with_result(exc: Syn2masError, result: dict) -> Syn2masError:
    """`exc` carrying the partial result, for the module to return along with the failure."""
    exc.result = result
    return exc


class ConfigError(Syn2masError):
    """A configuration file is missing, malformed, or lacks a value the migration needs."""


class DatabaseError(Syn2masError):
    """A database cannot be reached or answered with an error."""


class ConnectionLostError(DatabaseError):
    """A database connection was lost mid-run (server restart, terminated backend, network)."""


class PrivilegeError(DatabaseError):
    """The database role lacks a privilege the run needs."""


class RefusedError(Syn2masError):
    """A precondition does not hold, so the migration refuses to start (nothing was written)."""


class DataError(Syn2masError):
    """Synapse holds data the migration cannot carry over as it is (nothing was written)."""


class Interrupted(BaseException):
    """A signal (INT, TERM, HUP) asked the run to stop; a BaseException so no `except Exception` eats it."""

    def __init__(self, signum: int = 2):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


# Signals: the CLI's handlers call request_interrupt(). Until the MAS commit starts, that raises
# Interrupted at once (MAS is then left as it was); from the commit on, the run is finishing and
# its outcome is MAS's, so the signal is only noted and the run reports what it committed.
_INTERRUPTS = {"pending": None, "deferred": False}


def request_interrupt(signum: int) -> None:
    _INTERRUPTS["pending"] = signum
    if not _INTERRUPTS["deferred"]:
        raise Interrupted(signum)


def pending_interrupt():
    """The signal number received during this run, if any."""
    return _INTERRUPTS["pending"]


def defer_interrupts(deferred: bool = True) -> None:
    _INTERRUPTS["deferred"] = deferred


def reset_interrupts() -> None:
    _INTERRUPTS["pending"] = None
    _INTERRUPTS["deferred"] = False
