"""Run a system command for a limits reader (macOS ``sysctl``/``vm_stat``, Windows ``netsh``).

The readers take a :data:`Runner` so tests feed recorded output; :func:`run_command` is the
default that runs the real command. A command that cannot give its output raises
:class:`CommandFailed` with one line saying why, which the reader turns into an unknown fact.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

#: Runs ``argv`` and returns its standard output; raises :class:`CommandFailed` otherwise.
Runner = Callable[[Sequence[str]], str]

#: No limits command should take long; a hung one must not hang ``conncap limits``.
DEFAULT_TIMEOUT_S = 10.0


class CommandFailed(Exception):
    """A command could not be run or exited non-zero; the message is one line."""


def run_command(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Run ``argv`` (no shell) and return its stdout, or raise :class:`CommandFailed`."""
    shown = " ".join(argv)
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",  # netsh/reg print in the OEM code page; the numbers are ASCII
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise CommandFailed(f"`{argv[0]}` not found") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"`{shown}` timed out after {timeout:g} s") from None
    except OSError as exc:
        raise CommandFailed(f"`{shown}` could not run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        # netsh and reg print their errors on stdout; sysctl on stderr.
        text = (done.stderr or done.stdout).strip()
        first = text.splitlines()[0].strip() if text else "no output"
        raise CommandFailed(f"`{shown}` failed (exit {done.returncode}): {first}")
    return done.stdout
