"""The event stream (``--events FILE``, ``-`` for stdout; docs/events.md): one JSON object
per line, per timeline sample and per event (run and step start and end, a ceiling, a
server's message, a signal), each with ``ts`` (UTC, ISO 8601), ``t`` (seconds since the
stream began) and ``type``. Every line is flushed as it is written, so ``tail -f`` and
``jq`` see it at once. Bounded: samples come at the measurement loop's rate (4 a second).

A signal handler must not write (it may interrupt a write in progress): it calls
:meth:`EventWriter.later`, and the event is written before the next one, in order.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO

from conncap.errors import UsageError
from conncap.result import Sample, part_to_json

#: The event types, in the order a run writes them (docs/events.md).
TYPES: tuple[str, ...] = (
    "run-start",
    "step-start",
    "sample",
    "message",
    "ceiling",
    "signal",
    "step-end",
    "run-end",
)


def open_stream(path: str) -> tuple[IO[str], bool]:
    """The stream for ``path`` (``-``: stdout) and whether we opened it (and so close it);
    a file that cannot be opened is a UsageError line."""
    if path == "-":
        return sys.stdout, False
    try:
        return open(path, "w", encoding="utf-8"), True
    except OSError as exc:
        raise UsageError(f"--events {path}: cannot write it ({exc.strerror or exc})") from None


class EventWriter:
    """Writes the event stream; thread-safe (the metrics never write, the loop and the
    command do)."""

    def __init__(
        self,
        stream: IO[str],
        *,
        owned: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._out = stream
        self._owned = owned
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._lock = threading.Lock()
        self._pending: list[tuple[str, dict[str, object]]] = []
        self._closed = False

    @classmethod
    def to(cls, path: str) -> EventWriter:
        stream, owned = open_stream(path)
        return cls(stream, owned=owned)

    def later(self, kind: str, **fields: object) -> None:
        """Queue an event (from a signal handler); written before the next one."""
        self._pending.append((kind, fields))

    def write(self, kind: str, fields: Mapping[str, object] | None = None) -> None:
        """One event line, after any queued ones."""
        with self._lock:
            if self._closed:
                return
            while self._pending:
                k, f = self._pending.pop(0)
                self._line(k, f)
            self._line(kind, fields or {})

    def sample(self, sample: Sample) -> None:
        """A timeline sample as one ``sample`` event: its figures, with ``sample_t``, the
        sample's time in the result's timeline (measured from the loop's start)."""
        body = part_to_json(sample)
        assert isinstance(body, Mapping)
        fields = {("sample_t" if k == "t" else k): v for k, v in body.items()}
        self.write("sample", fields)

    def _line(self, kind: str, fields: Mapping[str, object]) -> None:
        head = {
            "ts": self._wall().astimezone(dt.UTC).isoformat(timespec="milliseconds"),
            "t": round(self._clock() - self._t0, 3),
            "type": kind,
        }
        body = {k: v for k, v in fields.items() if k not in head}
        try:
            text = json.dumps({**head, **body}, default=str, allow_nan=False)
        except ValueError:  # a NaN or an infinity: written as null rather than lost
            text = json.dumps({**head, **_finite(body)}, default=str)
        try:
            self._out.write(text + "\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):
            self._closed = True  # the reader went away (`| head`): stop writing, keep running

    def close(self) -> None:
        with self._lock:
            while self._pending and not self._closed:
                k, f = self._pending.pop(0)
                self._line(k, f)
            self._closed = True
            if self._owned:
                self._out.close()


def _finite(fields: Mapping[str, object]) -> dict[str, object]:
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()
    }
