"""The live figures a run exposes (the Prometheus collector reads them; docs/metrics.md): one
immutable snapshot, replaced at every sample of the measurement loop, so a scrape never
touches the pools and never sees half an update. Pure: built from a sample and the client's
totals, or from the server's stats."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from conncap.latency import Histogram
from conncap.result import Sample


@dataclass(frozen=True, slots=True)
class Figures:
    """What ``/metrics`` shows; None: not measured by this command (the metric is left out)."""

    command: str
    held: int | None = None
    established: int | None = None
    attempts: int | None = None
    failures_by_cause: Mapping[str, int] = field(default_factory=dict)
    server_held: int | None = None
    accepted: int | None = None
    server_errors_by_cause: Mapping[str, int] | None = None
    time_wait: int | None = None
    latency: Histogram | None = None
    memory_bytes: Mapping[str, int] = field(default_factory=dict)
    """By part: ``client`` and ``server`` (the workers' resident memory), ``kernel`` (the
    kernel's socket memory, ``run`` only)."""


def from_sample(
    command: str,
    sample: Sample,
    *,
    attempts: int | None,
    latency: Histogram | None,
    client_rss: int | None = None,
    time_wait: int | None = None,
) -> Figures:
    """The figures of ``open`` and ``run`` at one sample; ``time_wait`` where the sample has
    none (read by the caller from the client's namespace)."""
    memory: dict[str, int] = {}
    client = sample.user_bytes_client if sample.user_bytes_client is not None else client_rss
    if client is not None:
        memory["client"] = int(client)
    if sample.user_bytes_server is not None:
        memory["server"] = int(sample.user_bytes_server)
    if sample.kernel_bytes is not None:
        memory["kernel"] = int(sample.kernel_bytes)
    tw = next((v for v in (sample.time_wait, sample.sock_tw, time_wait) if v is not None), None)
    return Figures(
        command=command,
        held=sample.held,
        established=sample.established,
        attempts=attempts,
        failures_by_cause=dict(sample.failures_by_cause),
        server_held=sample.server_held,
        accepted=sample.server_accepted,
        server_errors_by_cause=dict(sample.server_errors)
        if sample.server_errors is not None
        else None,
        time_wait=tw,
        latency=latency,
        memory_bytes=memory,
    )


def from_server(
    *,
    held: int,
    accepted: int,
    errors_by_cause: Mapping[str, int],
    rss_bytes: int,
    time_wait: int | None,
) -> Figures:
    """The figures of ``serve``."""
    return Figures(
        command="serve",
        server_held=held,
        accepted=accepted,
        server_errors_by_cause=dict(errors_by_cause),
        time_wait=time_wait,
        memory_bytes={"server": int(rss_bytes)},
    )


class Latest:
    """The last figures, shared between the loop (which sets them) and the scrape thread."""

    def __init__(self, first: Figures) -> None:
        self._lock = threading.Lock()
        self._figures = first

    def set(self, figures: Figures) -> None:
        with self._lock:
            self._figures = figures

    def get(self) -> Figures:
        with self._lock:
            return self._figures
