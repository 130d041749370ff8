"""One command's observers: the event stream and the metrics endpoint, driven by the
command and by the measurement loop's callbacks (``on_sample``, ``on_event``)."""

from __future__ import annotations

import argparse
import signal as _signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from conncap import __version__
from conncap.observe.events import EventWriter
from conncap.observe.figures import Figures, Latest, from_sample
from conncap.result import Sample

Say = Callable[[str], None]


class Observers:
    """``--events`` and ``--metrics`` of one command (either, both or none: then every
    method does nothing). :meth:`close` always runs (``with``)."""

    def __init__(
        self,
        command: str,
        *,
        events: str | None = None,
        metrics: str | None = None,
        say: Say = lambda line: print(line, file=sys.stderr),
    ) -> None:
        """Checks both flags before anything starts: a bad one is a UsageError line."""
        self.command = command
        self.say = say
        self.latest = Latest(Figures(command=command))
        self._exporter: Any = None
        if metrics:
            from conncap.observe import metrics as prom

            prom.require()
            host, port = prom.parse_address(metrics)
            self._exporter = prom.Exporter(self.latest.get, host, port)
            self._loopback = prom.is_loopback(host)
        self.events = EventWriter.to(events) if events else None
        self._read_tw: Callable[[], int | None] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str, say: Say | None = None) -> Observers:
        kw: dict[str, Any] = {} if say is None else {"say": say}
        return cls(
            command,
            events=getattr(args, "events", None),
            metrics=getattr(args, "metrics", None),
            **kw,
        )

    @property
    def active(self) -> bool:
        return self.events is not None or self._exporter is not None

    def start(self, argv: Sequence[str] = (), **fields: object) -> None:
        """Listen for scrapes (the URL is said on stderr) and write ``run-start``."""
        if self._exporter is not None:
            url = self._exporter.start()
            self.say(f"conncap: metrics at {url}")
            if not self._loopback:
                self.say(
                    f"conncap: warning: --metrics listens on {self._exporter.host}, not "
                    "loopback: anyone who can reach it can read these figures"
                )
        self.write(
            "run-start", command=self.command, version=__version__, argv=list(argv), **fields
        )

    def write(self, kind: str, **fields: object) -> None:
        if self.events is not None:
            self.events.write(kind, fields)

    def on_event(self, kind: str, fields: Mapping[str, object]) -> None:
        """The measurement loop's events (``step-start``, ``ceiling``, ``step-end``)."""
        if self.events is not None:
            self.events.write(kind, fields)

    def message(self, text: str) -> None:
        """A line the command says (a server's message, a step's verdict)."""
        self.write("message", text=text)

    def on_signal(self, signum: int) -> None:
        """From a signal handler: queued, written before the next event."""
        if self.events is not None:
            try:
                name = _signal.Signals(signum).name
            except ValueError:
                name = str(signum)
            self.events.later("signal", signal=name)

    def on_sample(self, sample: Sample, totals: Any = None) -> None:
        """One sample of the loop: a ``sample`` event, and the figures for the next scrape
        (``totals``: the loop's ClientTotals at that sample)."""
        if self.events is not None:
            self.events.sample(sample)
        if self._exporter is not None:
            tw = None
            if sample.time_wait is None and sample.sock_tw is None:
                tw = self._time_wait()
            self.latest.set(
                from_sample(
                    self.command,
                    sample,
                    attempts=getattr(totals, "attempts", None),
                    latency=getattr(totals, "latency", None),
                    client_rss=getattr(totals, "rss_bytes", None),
                    time_wait=tw,
                )
            )

    def set_figures(self, figures: Figures) -> None:
        """``serve``'s figures (it has no measurement loop)."""
        if self._exporter is not None:
            self.latest.set(figures)

    @property
    def metrics_on(self) -> bool:
        return self._exporter is not None

    def _time_wait(self) -> int | None:
        if self._read_tw is None:
            from conncap.engine.portrange import read_time_wait

            self._read_tw = read_time_wait
        return self._read_tw()

    def close(self, **fields: object) -> None:
        """Write ``run-end`` (with ``fields``), close the stream, stop the endpoint."""
        try:
            if fields or self.events is not None:
                self.write("run-end", **fields)
        finally:
            if self.events is not None:
                self.events.close()
            if self._exporter is not None:
                self._exporter.stop()
