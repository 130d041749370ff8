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
    """Stopped by Ctrl-C (SIGINT, 128 + 2), after cleaning up and writing what was measured."""
    TERMINATED = 143
    """Stopped by SIGTERM (128 + 15), after cleaning up and writing what was measured."""


def signal_exit(signum: int) -> int:
    """The exit status for a run stopped by signal ``signum``: the shell's 128 + N rule, the
    same in every command (SIGINT 130, SIGTERM 143, SIGHUP 129)."""
    return 128 + int(signum)
