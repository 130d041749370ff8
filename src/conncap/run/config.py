"""What ``conncap run`` is asked (:class:`RunConfig`), its defaults, and the small interfaces
the experiment talks through: the observer (the terminal view) and the sampler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from conncap.errors import UsageError
from conncap.limits import HostLimits
from conncap.result import JsonValue
from conncap.run import steps as st

#: Connections a default run asks for: well past a default Linux port range (28,232), so the
#: first ceiling is found and step 2 lifts it, in about 20 s on a 2-core host.
DEFAULT_COUNT = 100_000
DEFAULT_MAX_DURATION = 120.0
DEFAULT_MEMORY_GUARD = 0.25
DEFAULT_TIMEOUT = 3.0
#: Seconds each step's level is held (and sampled) before the next step or the end: the
#: plateau on the held curve.
DEFAULT_PLATEAU = 1.5
#: Samples per second while a step ramps, and while levels are held.
RAMP_HZ = 10.0
HOLD_HZ = 4.0


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What ``conncap run`` was asked. ``None`` workers: as many as descriptors require;
    ``None`` source IPs / ports (step 2): as many as keep each new port pool at most half full
    (:func:`conncap.run.steps.auto_fanout`).

    ``server_netns``/``client_netns`` and ``*_nofile`` are passed to the pools as they are
    (``--isolated`` runs each side in its own namespace and gives the experiment an
    :class:`IsolatedSides` too).
    """

    count: int = DEFAULT_COUNT
    max_duration: float = DEFAULT_MAX_DURATION
    memory_guard: float = DEFAULT_MEMORY_GUARD
    escalate: bool = True
    source_ips: int | None = None
    ports: int | None = None
    client_workers: int | None = None
    server_workers: int | None = None
    rate: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT
    host: str = "127.0.0.1"
    plateau_s: float = DEFAULT_PLATEAU
    ramp_hz: float = RAMP_HZ
    hold_hz: float = HOLD_HZ
    server_netns: str | None = None
    client_netns: str | None = None
    server_nofile: int | None = None
    client_nofile: int | None = None
    #: ``--target HOST:PORT``: a server conncap does not start (``host`` is then its host).
    target_port: int | None = None
    #: ``--churn``: a churn step after the others (``conncap.run.churn``).
    churn: bool = False
    #: Step 2's source addresses as given (a cluster node's own, found on that node); None:
    #: counted up from ``host`` (loopback) or the isolated client's.
    sources: tuple[str, ...] | None = None

    def check(self) -> None:
        """UsageError for values no run can use (one line each)."""
        if self.count < 1:
            raise UsageError("--count must be at least 1")
        if not self.max_duration > 0:
            raise UsageError("--max-duration must be positive")
        if not 0 <= self.memory_guard < 1:
            raise UsageError("--memory-guard is a fraction of MemAvailable, from 0 to below 1")
        if (self.source_ips is not None and self.source_ips < 1) or (
            self.ports is not None and self.ports < 1
        ):
            raise UsageError("--source-ips and --ports must be at least 1 (or auto)")
        if self.ports is not None and self.ports > 1000:
            raise UsageError("--ports: at most 1000 server ports")
        for name, v in (
            ("--client-workers", self.client_workers),
            ("--server-workers", self.server_workers),
        ):
            if v is not None and v < 1:
                raise UsageError(f"{name} must be at least 1 (or auto)")
        if self.client_workers is not None and self.client_workers > self.count:
            raise UsageError(
                f"--client-workers {self.client_workers} is more than --count {self.count}"
            )
        if self.rate is not None and not self.rate > 0:
            raise UsageError("--rate must be positive")
        if not self.timeout_s > 0:
            raise UsageError("--timeout must be positive")
        if self.plateau_s < 0:
            raise UsageError("--plateau must be 0 or more")
        for name, n in (
            ("--server-nofile", self.server_nofile),
            ("--client-nofile", self.client_nofile),
        ):
            if n is not None and n < 64:
                raise UsageError(f"{name} must be at least 64")
        if self.target_port is not None:
            if not 1 <= self.target_port <= 65535:
                raise UsageError(f"--target: port {self.target_port} is not 1-65535")
            for flag, value in (
                ("--ports", self.ports),
                ("--server-workers", self.server_workers),
                ("--server-nofile", self.server_nofile),
                ("--isolated", self.server_netns),
            ):
                if value is not None:
                    raise UsageError(
                        f"{flag} is for conncap's own server; --target measures a server "
                        "conncap does not start"
                    )
        if self.churn and self.target_port is not None:
            raise UsageError("--churn opens against conncap's own server, not --target")
        if self.sources is not None and not self.sources:
            raise UsageError("no source address for step 2")
        if (
            self.escalate
            and self.source_ips is not None
            and self.client_netns is None
            and self.sources is None
        ):
            st.source_addresses(self.host, self.source_ips)  # raises for a bad combination

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "count": self.count,
            "max_duration": self.max_duration,
            "memory_guard": self.memory_guard,
            "escalate": self.escalate,
            "source_ips": self.source_ips,
            "ports": self.ports,
            "client_workers": self.client_workers,
            "server_workers": self.server_workers,
            "rate": self.rate,
            "timeout_s": self.timeout_s,
            "host": self.host,
            "plateau_s": self.plateau_s,
            "server_netns": self.server_netns,
            "client_netns": self.client_netns,
            "server_nofile": self.server_nofile,
            "client_nofile": self.client_nofile,
            "target_port": self.target_port,
            "churn": self.churn,
            "sources": list(self.sources) if self.sources is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """What the live view shows, once per sample."""

    step_index: int
    step_count: int
    step_name: str
    step_title: str
    phase: str  # "ramp" | "hold"
    held: int
    count: int
    rate: float
    failures_by_cause: Mapping[str, int]
    kernel_bytes: int | None
    kernel_bytes_start: int | None
    mem_available: int | None
    guard_bytes: int | None
    server_held: int
    elapsed: float
    max_duration: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    """Connect latency of the handshakes completed since the last sample."""


class Observer(Protocol):
    """Receives the run's events (one line each) and its progress (every sample)."""

    def event(self, text: str) -> None: ...
    def progress(self, p: Progress) -> None: ...


class Silent:
    """An observer that shows nothing."""

    def event(self, text: str) -> None:
        pass

    def progress(self, p: Progress) -> None:
        pass


class SamplerLike(Protocol):
    """What the experiment needs of :class:`conncap.probes.Sampler` (fakes in tests)."""

    @property
    def kernel_source(self) -> str | None: ...
    @property
    def user_method(self) -> dict[str, str]: ...
    @property
    def problems(self) -> dict[str, str]: ...

    def set_pids(self, *, client: Any = None, server: Any = None) -> None: ...

    def sample(
        self,
        *,
        held: int,
        rate: float,
        failures: int = 0,
        failures_by_cause: Mapping[str, int] | None = None,
        step: str | None = None,
        t: float | None = None,
    ) -> dict[str, JsonValue]: ...


class IsolatedSides(Protocol):
    """What the experiment needs of ``--isolated``'s two namespaces
    (:class:`conncap.scenarios.isolated.IsolatedPair`; fakes in tests)."""

    def add_source_ips(self, n: int) -> tuple[str, ...]: ...
    def client_limits(self, base: HostLimits | None = None) -> HostLimits: ...
    def server_limits(self, base: HostLimits | None = None) -> HostLimits: ...
    def client_reader(self) -> Callable[[str], str]: ...
    def server_reader(self) -> Callable[[str], str]: ...
    def describe(self) -> list[str]: ...
    def to_json(self) -> dict[str, JsonValue]: ...
