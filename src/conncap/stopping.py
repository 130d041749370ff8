"""SIGINT and SIGTERM as a request to stop: every command that measures installs one
:class:`SignalStop`, its measurement watches :attr:`SignalStop.event`, stops at its next look,
cleans up and writes what it measured; the exit status is then 128 + the first signal
(:func:`conncap.exitcodes.signal_exit`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from conncap.exitcodes import signal_exit

#: The signals that ask a measurement to stop.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    """While installed, SIGINT and SIGTERM set :attr:`event` and are recorded in
    :attr:`signals` (``tell`` hears each one too: the event stream). With ``second_raises``, a
    signal after the first raises KeyboardInterrupt: stop waiting, the clean-up still runs."""

    def __init__(
        self, tell: Callable[[int], None] | None = None, *, second_raises: bool = False
    ) -> None:
        self.event = threading.Event()
        self.signals: list[int] = []
        self._tell = tell
        self._second_raises = second_raises
        self._old: dict[signal.Signals, Any] = {}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self._tell is not None:
            self._tell(signum)
        if self._second_raises and self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()

    def install(self) -> None:
        self._old = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    def restore(self) -> None:
        """The handlers as they were before :meth:`install` (idempotent)."""
        old, self._old = self._old, {}
        for s, h in old.items():
            signal.signal(s, h)

    def __enter__(self) -> SignalStop:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    def exit_status(self, otherwise: int) -> int:
        """128 + the first signal that came, else ``otherwise``."""
        return signal_exit(self.signals[0]) if self.signals else otherwise
