"""Signals while a topology is alive: SIGTERM and SIGHUP become an exception (so ``with`` blocks
unwind and remove namespaces, as Ctrl-C already does), and during teardown every such signal
is held back until the namespaces are gone.

Python can only install handlers in the main thread; elsewhere these helpers do nothing and
the caller's main thread must turn signals into exceptions itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

CONVERTED: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
DEFERRED: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a topology was alive.

    A KeyboardInterrupt, so every path that cleans up after Ctrl-C (and the CLI's one line
    and exit 130) handles it the same way.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


_lock = threading.Lock()
_depth = 0
_owner_pid = 0
_saved: dict[int, Handler] = {}


def _restore(sig: int, handler: Handler) -> None:
    # signal.signal() returns None for a handler not set from Python: put back the default.
    signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _owner_pid:
        # A forked child inherited this handler: it owns no topology, so die as usual.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


@contextmanager
def terminate_raises() -> Iterator[None]:
    """While active, SIGTERM/SIGHUP raise :class:`Terminated`; nests; restores on exit."""
    global _depth, _owner_pid
    if not _in_main_thread():
        yield
        return
    with _lock:
        if _depth == 0:
            _owner_pid = os.getpid()
            for sig in CONVERTED:
                _saved[sig] = signal.signal(sig, _raise_terminated)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for sig in CONVERTED:
                    _restore(sig, _saved.pop(sig, None))


@contextmanager
def held_back() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM/SIGHUP instead of acting on them; yields the list of those
    received. The caller re-raises them when its critical section is done."""
    got: list[int] = []
    if not _in_main_thread():
        yield got
        return

    def record(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in DEFERRED}
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            _restore(sig, handler)


def exception_for(signums: list[int]) -> BaseException | None:
    """The exception a held-back signal would have raised (first one wins)."""
    for signum in signums:
        if signum == signal.SIGINT:
            return KeyboardInterrupt()
        return Terminated(signum)
    return None
