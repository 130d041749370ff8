"""Readiness polling: ``select.epoll`` on Linux (the hot path), a ``selectors`` stand-in
with the same small API elsewhere (macOS kqueue, Windows select: slower, level-triggered).

Event bits are epoll's numbers on every OS so the loops test one set of constants.
"""

from __future__ import annotations

import contextlib
import select
import selectors
from typing import Protocol

IN = 0x001
OUT = 0x004
ERR = 0x008
HUP = 0x010
RDHUP = 0x2000
#: Edge-triggered; the stand-in ignores it (the loops handle level-triggered too).
ET = 1 << 31

HAVE_EPOLL = hasattr(select, "epoll")


class Poller(Protocol):
    """The part of ``select.epoll`` the engine uses."""

    def register(self, fd: int, eventmask: int = ...) -> None: ...
    def modify(self, fd: int, eventmask: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: float | None = ..., maxevents: int = ...) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...


class SelectorPoller:
    """epoll's API over ``selectors.DefaultSelector`` (level-triggered, for non-Linux)."""

    edge_triggered = False

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    @staticmethod
    def _mask(eventmask: int) -> int:
        mask = 0
        if eventmask & (IN | RDHUP):
            mask |= selectors.EVENT_READ
        if eventmask & OUT:
            mask |= selectors.EVENT_WRITE
        return mask

    def register(self, fd: int, eventmask: int = IN) -> None:
        mask = self._mask(eventmask)
        if mask:
            self._sel.register(fd, mask)

    def modify(self, fd: int, eventmask: int) -> None:
        mask = self._mask(eventmask)
        try:
            self._sel.get_key(fd)
        except KeyError:
            if mask:
                self._sel.register(fd, mask)
            return
        if mask:
            self._sel.modify(fd, mask)
        else:
            self._sel.unregister(fd)

    def unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(fd)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        if not self._sel.get_map():
            if timeout is not None and timeout > 0:
                import time

                time.sleep(timeout)
            return []
        out: list[tuple[int, int]] = []
        for key, mask in self._sel.select(timeout):
            ev = 0
            if mask & selectors.EVENT_READ:
                ev |= IN
            if mask & selectors.EVENT_WRITE:
                ev |= OUT
            out.append((int(key.fd), ev))
        return out

    def close(self) -> None:
        self._sel.close()


def new_poller() -> Poller:
    """epoll where there is one, else the selectors stand-in."""
    if HAVE_EPOLL:
        return select.epoll()
    return SelectorPoller()


def is_edge_triggered(poller: object) -> bool:
    """Whether ``ET`` registrations behave edge-triggered on this poller."""
    return HAVE_EPOLL and isinstance(poller, select.epoll)
