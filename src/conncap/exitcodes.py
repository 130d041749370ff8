"""Documented process exit codes (httpie's ``ExitStatus`` shape)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """What ``conncap`` returns to the shell."""

    SUCCESS = 0
    """The command did what was asked (a ceiling found is a success, not a failure)."""
    FAILURE = 1
    """The run itself failed: a worker died, a measurement could not be taken."""
    USAGE = 2
    """Bad usage or bad input: an unknown flag, code or file, a malformed recorded output."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT), after cleaning up and writing what was measured."""
