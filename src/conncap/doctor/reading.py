"""One reading of a live host, as data: what ``conncap.doctor.collect`` read, before any
judgement. Pure types; ``pools`` and ``verdict`` turn a reading into ceilings.

Anything that could not be read is ``None`` (unknown) with the reason in
:attr:`Reading.unknown`, never a guess (STYLE.md 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conncap.doctor.sockdiag import SocketCounts
from conncap.limits import HostLimits


@dataclass(frozen=True, slots=True)
class ProcessFds:
    """One process's descriptors against its RLIMIT_NOFILE; None where it could not be read
    (another user's process without privilege). ``soft``/``hard`` None with
    ``unlimited=True`` mean RLIM_INFINITY."""

    pid: int
    name: str
    fds: int | None
    soft: int | None
    hard: int | None
    unlimited: bool = False

    @property
    def fill(self) -> float | None:
        if self.fds is None or self.soft is None or self.soft <= 0:
            return None
        return self.fds / self.soft


@dataclass(frozen=True, slots=True)
class Descriptors:
    """The processes closest to their descriptor limit (``processes``, fullest first) out of
    ``scanned``; ``unknown`` of them could not be read."""

    processes: tuple[ProcessFds, ...]
    scanned: int
    unknown: int
    scope: str  # "host" or "network namespace NAME"
    #: With a namespace scope: processes whose /proc/PID/ns/net could not be read, so it is
    #: not known whether they are in the namespace (left out).
    outside_unknown: int = 0


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters read at ``at`` (time.monotonic()); None when not readable."""

    at: float
    listen_overflows: int | None = None
    listen_drops: int | None = None
    conntrack_insert_failed: int | None = None
    conntrack_drop: int | None = None


@dataclass(frozen=True, slots=True)
class Conntrack:
    """nf_conntrack fill; both None when the module is not loaded."""

    count: int | None
    max: int | None


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    name: str


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything one look at the host gathered.

    ``baseline`` is an earlier read of the counters (doctor's short second reading, or the
    previous reading in ``watch``): rates come from ``counters`` − ``baseline``.
    """

    taken_at: float  # time.time()
    os: str
    netns: str | None
    limits: HostLimits
    sockets: SocketCounts | None
    descriptors: Descriptors | None
    counters: Counters
    baseline: Counters | None
    conntrack: Conntrack
    #: TCP socket-buffer memory now, bytes (sockstat ``mem`` pages × page size).
    tcp_mem_bytes: int | None
    #: Listener socket inode -> the process holding it (resolved for the fullest listeners).
    listener_owners: dict[int, Owner] = field(default_factory=dict)
    #: Seconds each part took: sockets, processes, total.
    read_s: dict[str, float] = field(default_factory=dict)
    #: What could not be read, one line each.
    unknown: tuple[str, ...] = ()
