# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors the library raises: each message is meant to be shown to an operator as it is."""

from __future__ import annotations


class Syn2masError(Exception):
    """Base class: the message says what is wrong, where (file, key, table or row) and what to do."""


class ConfigError(Syn2masError):
    """A configuration file is missing, malformed, or lacks a value the migration needs."""


class DatabaseError(Syn2masError):
    """A database cannot be reached or answered with an error."""


class RefusedError(Syn2masError):
    """A precondition does not hold, so the migration refuses to start (nothing was written)."""


class DataError(Syn2masError):
    """Synapse holds data the migration cannot carry over as it is (nothing was written)."""
