"""What one step of a measurement is made of: a :class:`Launch` per client pool, the
:class:`MeasuredStep` the loop keeps, the client's :class:`ClientTotals`, and the interfaces
the loop talks to (client pools, a server, a probe)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from conncap.latency import Histogram, merge_all
from conncap.measure.verdict import StepFacts, Verdict


class Probe(Protocol):
    """Figures sampled beside the pools' counts (kernel memory, TCP counters, conntrack…),
    given the sample so far (``t``, ``held``, …). ``force``: read now even if the probe
    rate-limits itself (a step's first and last sample)."""

    def read(
        self, sample: Mapping[str, object], *, force: bool = False
    ) -> Mapping[str, object]: ...


class ClientPoolLike(Protocol):
    def start(self) -> None: ...
    def stats(self) -> Any: ...
    def ramp_over(self) -> bool: ...
    def pids(self) -> list[int]: ...
    def pause(self) -> None: ...
    def stop(self, timeout: float = 2.0) -> Any: ...


class ServerLike(Protocol):
    def stats(self) -> Any: ...
    def pids(self) -> list[int]: ...
    def stop(self, timeout: float = 2.0) -> Any: ...


@dataclass(frozen=True)
class Launch:
    """One client pool of a step: its plan, the namespace it runs in, its descriptor limit."""

    plan: Any  # conncap.engine.OpenPlan (kept out of this module's imports: the engine is heavy)
    netns: str | None = None
    nofile: int | None = None


@dataclass(slots=True)
class ClientTotals:
    """The client side summed over every pool the measurement launched (released ones too:
    their failures stay counted)."""

    held: int = 0
    established: int = 0
    attempts: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    closed: int | None = None
    """Churn: connections the client closed at their lifetime (None: no churn pool)."""
    time_wait: int | None = None
    """Churn: sockets in TIME_WAIT in the client's namespace (the largest a pool read)."""
    latency: Histogram = field(default_factory=Histogram)
    """Connect latency, cumulative (``conncap.latency``)."""
    rss_bytes: int = 0
    """The live pools' workers' resident memory."""


@dataclass(slots=True)
class MeasuredStep:
    """One step: its pools (holding until :meth:`Measurement.release`), where it sits in the
    timeline, and once concluded what it reached."""

    name: str
    launches: tuple[Launch, ...]
    pools: list[ClientPoolLike]
    t_start: float
    i_start: int
    server_errors_start: dict[str, int]
    server_errnos_start: dict[str, int]
    outcome: str | None = None
    t_end: float | None = None
    i_end: int | None = None
    facts: StepFacts | None = None
    verdict: Verdict | None = None
    server: Any = None  # the server's stats once settled (None: no server)

    @property
    def requested(self) -> int:
        return sum(int(la.plan.count) for la in self.launches)

    def client_stats(self) -> list[Any]:
        return [p.stats() for p in self.pools]

    def latency(self) -> Histogram:
        """Connect latency of this step's pools (their connections only)."""
        return merge_all(latency_of(cs) for cs in self.client_stats())


def latency_of(stats: Any) -> Histogram:
    """A pool's latency histogram (a pool that measures none: empty)."""
    h = getattr(stats, "latency", None)
    return h if isinstance(h, Histogram) else Histogram()


#: An event of the measurement for the event stream: its type and its fields.
OnEvent = Callable[[str, Mapping[str, object]], None]
