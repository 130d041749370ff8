"""The engine's one door to the error catalogue: errno numbers -> names and causes, and the
advice for a cause on this OS (all from :mod:`conncap.catalogue`)."""

from __future__ import annotations

import errno as _errno
import sys
from dataclasses import dataclass

from conncap import catalogue
from conncap.catalogue import Cause

#: The counter key for "the peer closed" (an EOF carries no errno).
EOF_NAME = "EOF"


def errno_name(number: int) -> str:
    """``EADDRNOTAVAIL`` for 99 on Linux; ``E<n>`` for numbers this OS does not name."""
    if number == 0:
        return EOF_NAME
    return catalogue.errno_name(number)


def errno_number(name: str) -> int | None:
    """Inverse of :func:`errno_name` for this OS (None when unknown)."""
    if name == EOF_NAME:
        return 0
    value = getattr(_errno, name, None)
    if isinstance(value, int):
        return value
    if name.startswith("E") and name[1:].isdigit():
        return int(name[1:])
    return None


def classify(number: int, op: str) -> Cause:
    """The cause id of an errno seen in ``op`` (connect, bind, socket, accept, timeout)."""
    if number == 0:
        return Cause.SERVER_CLOSED
    if op == "timeout":
        return Cause.TIMEOUT
    return catalogue.classify(number, op=op, platform=sys.platform)


@dataclass(frozen=True, slots=True)
class Advice:
    """How to raise the limit behind a cause (empty for a cause the catalogue has no fix for)."""

    knob: str
    commands: tuple[str, ...]
    windows: str


def advice(cause: Cause) -> Advice:
    """The catalogue's advice for ``cause`` on this OS; empty for a cause it has no fix for
    (unknown) or an OS it does not know."""
    os_name = "linux" if sys.platform.startswith("linux") else sys.platform
    try:
        a = catalogue.advice(cause, os_name)
    except (KeyError, ValueError):
        return Advice(knob="", commands=(), windows="")
    return Advice(knob=a.knob, commands=tuple(a.commands), windows=a.windows)


def by_name(counts: dict[str, int]) -> dict[str, int]:
    """Worker counters keyed by errno number (as text) -> keyed by errno name."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        name = errno_name(int(key))
        out[name] = out.get(name, 0) + int(n)
    return out


def by_cause(counts: dict[str, int], op: str) -> dict[str, int]:
    """Worker counters keyed by errno number (as text) -> keyed by cause id."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        cause = str(classify(int(key), op))
        out[cause] = out.get(cause, 0) + int(n)
    return out
