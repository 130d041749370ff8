"""Exceptions that the CLI turns into one readable line and an exit code."""

from __future__ import annotations

from conncap.exitcodes import ExitStatus


class ConncapError(Exception):
    """An error a person reads: what happened, why, what to do. Exit 1 by default."""

    exit_status: ExitStatus = ExitStatus.FAILURE


class UsageError(ConncapError):
    """Bad usage or bad input (a flag, a code, a file): exit 2."""

    exit_status = ExitStatus.USAGE


class RunFailed(ConncapError):
    """The run could not be carried out (a worker died, a namespace could not be made): exit 1."""

    exit_status = ExitStatus.FAILURE
