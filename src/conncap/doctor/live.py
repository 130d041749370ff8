"""The ``watch`` loop: a reading every interval, judged against the previous one (rates,
time to full), handed to sinks. Sinks are the seam for other outputs (:class:`MetricsSink`,
the Prometheus exporter of ``watch --metrics``, is one); the loop itself does no I/O but
sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from conncap.doctor.reading import Counters, Reading
from conncap.doctor.verdict import Report, analyse
from conncap.observe import metrics as prom

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live


class Sink(Protocol):
    """Where each judged reading goes."""

    def show(self, report: Report) -> None: ...

    def close(self, last: Report | None, interrupted: bool) -> None: ...


#: Takes one reading; ``baseline`` is the previous reading's counters (None the first time).
Take = Callable[[Counters | None], Reading]


def watch(
    take: Take,
    sinks: Sequence[Sink],
    *,
    interval_s: float,
    count: int | None = None,
    duration_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Report | None, bool]:
    """Read, judge and show until ``count`` readings or ``duration_s`` seconds (whichever comes
    first; forever without either) or Ctrl-C. Returns the last report and whether Ctrl-C
    ended it; every sink is closed with the last report either way."""
    start = clock()
    last: Report | None = None
    interrupted = False
    n = 0
    try:
        while True:
            tick = clock()
            reading = take(last.reading.counters if last is not None else None)
            last = analyse(reading, last)
            n += 1
            for sink in sinks:
                sink.show(last)
            if count is not None and n >= count:
                break
            wait = interval_s - (clock() - tick)
            if duration_s is not None:
                left = duration_s - (clock() - start)
                if left <= max(wait, 0.0):
                    break
            if wait > 0:
                sleep(wait)
    except KeyboardInterrupt:
        interrupted = True
    for sink in sinks:
        sink.close(last, interrupted)
    return last, interrupted


class TerminalSink:
    """A rich Live display redrawn in place; on close it is cleared and the last reading is
    printed once, whole (so Ctrl-C leaves a clean last reading on screen)."""

    def __init__(self, console: Console, top: int) -> None:
        self.console = console
        self.top = top
        self._live: Live | None = None

    def show(self, report: Report) -> None:
        from rich.console import Group
        from rich.live import Live

        from conncap.doctor.render import renderables

        view = Group(*renderables(report, self.top))
        if self._live is None:
            self._live = Live(
                view, console=self.console, transient=True, auto_refresh=False,
                redirect_stdout=False, vertical_overflow="crop",
            )  # fmt: skip
            self._live.start()
        self._live.update(view, refresh=True)

    def close(self, last: Report | None, interrupted: bool) -> None:
        from conncap.doctor.render import renderables

        if self._live is not None:
            self._live.stop()
            self._live = None
        if last is not None:
            for item in renderables(last, self.top):
                self.console.print(item)


class PlainSink:
    """Not a terminal: each reading printed in full, one after another."""

    def __init__(self, console: Console, top: int) -> None:
        self.console = console
        self.top = top

    def show(self, report: Report) -> None:
        from conncap.doctor.render import renderables

        for item in renderables(report, self.top):
            self.console.print(item)
        self.console.rule()

    def close(self, last: Report | None, interrupted: bool) -> None:
        return None


class JsonLinesSink:
    """One ``conncap.doctor/1`` document per line per reading (``watch --json``)."""

    def __init__(self, write: Callable[[str], object], top: int) -> None:
        self.write = write
        self.top = top

    def show(self, report: Report) -> None:
        import json

        from conncap.doctor.render import to_json

        self.write(json.dumps(to_json(report, self.top), allow_nan=False) + "\n")

    def close(self, last: Report | None, interrupted: bool) -> None:
        return None


class MetricsSink:
    """``watch --metrics ADDR:PORT``: each judged reading served for Prometheus at
    ``/metrics`` (``conncap.observe.metrics.doctor_families``; docs/metrics.md) until the
    watch ends. :meth:`start` listens and returns the URL (a bad address is a UsageError line,
    before the first reading)."""

    def __init__(self, address: str, top: int) -> None:
        prom.require()
        host, port = prom.parse_address(address)
        self.loopback = prom.is_loopback(host)
        self.host = host
        self.top = top
        self._last: Report | None = None
        self._lock = threading.Lock()
        self._exporter = prom.Exporter(
            self._latest, host, port, collect=lambda r: prom.doctor_families(r, top)
        )

    def _latest(self) -> Report | None:
        with self._lock:
            return self._last

    def start(self) -> str:
        return str(self._exporter.start())

    def show(self, report: Report) -> None:
        with self._lock:
            self._last = report

    def close(self, last: Report | None, interrupted: bool) -> None:
        self._exporter.stop()
