"""``ServerPool``: worker processes that accept and hold connections on one or many ports.

Workers share a port through SO_REUSEPORT (the kernel spreads new connections over them),
so each is bound by its own RLIMIT_NOFILE and together they hold what one process cannot.
With many ports (more than :data:`SHARE_MAX`), the ports are split over the workers instead.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from conncap.engine import classify as cl
from conncap.engine.procs import WorkerSet
from conncap.engine.protocol import ServerConfig, ServerSnapshot
from conncap.errors import RunFailed, UsageError
from conncap.result import ServerFigures

#: Up to this many ports, every worker listens on every port; above, ports are split.
SHARE_MAX = 64


class ServerExtra(TypedDict, total=False):
    """``ServerStats.extra``: with ``close_after``, the connections the server closed first."""

    closed_first: int


@dataclass(frozen=True, slots=True)
class ServerStats:
    """The pool's counters summed over its workers (``per_source_ip``: connections held)."""

    t: float
    held: int
    accepted: int
    closed: int
    resets: int
    errors: dict[str, int]
    errors_by_cause: dict[str, int]
    per_source_ip: dict[str, int]
    pids: list[int]
    ports: list[int]
    rss_bytes: int
    backoffs: int
    paused_workers: int
    workers: int = 0
    extra: ServerExtra = field(default_factory=ServerExtra)

    def figures(self, errors_during_step: Mapping[str, int] | None = None) -> ServerFigures:
        """The result's ``server`` object (``errors_during_step``: a step's accept errors)."""
        return ServerFigures(
            held=self.held,
            accepted=self.accepted,
            closed=self.closed,
            resets=self.resets,
            errors=dict(self.errors_by_cause),
            errors_by_errno=dict(self.errors),
            per_source_ip=dict(self.per_source_ip),
            workers=self.workers,
            ports=tuple(self.ports),
            rss_bytes=self.rss_bytes,
            backoffs=self.backoffs,
            closed_first=self.extra.get("closed_first"),
            errors_during_step=errors_during_step,
        )


def listen_counts(pid: int, bind: str, root: str = "/proc") -> dict[int, int]:
    """Listening sockets per port on ``bind`` (or a wildcard address) in the network
    namespace of process ``pid`` (/proc/PID/net/tcp and tcp6); {} where unreadable."""
    counts: dict[int, int] = {}
    want: set[str] = set()
    try:
        if ":" not in bind:
            want = {socket.inet_aton(bind)[::-1].hex().upper(), "00000000"}
    except OSError:
        pass
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{root}/{pid}/net/{name}", encoding="ascii", errors="replace") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[3] != "0A":  # 0A: LISTEN
                continue
            addr, _, port_hex = parts[1].partition(":")
            if want and addr not in want:
                continue
            try:
                port = int(port_hex, 16)
            except ValueError:
                continue
            counts[port] = counts.get(port, 0) + 1
    return counts


class ServerPool:
    """Holding server over ``workers`` processes (see docs/engine.md)."""

    def __init__(
        self,
        *,
        bind: str = "127.0.0.1",
        ports: Sequence[int] = (0,),
        workers: int = 1,
        backlog: int | None = None,
        mode: str = "hold",
        nofile: int | None = None,
        netns: str | None = None,
        coalesce: float | None = None,
        close_after: float | None = None,
    ) -> None:
        if workers < 1:
            raise UsageError("--workers must be at least 1")
        if mode not in ("hold", "echo"):
            raise UsageError(f"--mode must be hold or echo, not {mode!r}")
        if not ports:
            raise UsageError("no port to listen on")
        if close_after is not None and not (math.isfinite(close_after) and close_after >= 0):
            raise UsageError(f"--close-after must be 0 or more seconds, not {close_after}")
        if any(not 0 <= p <= 65535 for p in ports):
            raise UsageError("ports are 0-65535 (0 = the kernel picks one)")
        self.bind = bind
        self.requested_ports = list(ports)
        self.workers = workers
        self.backlog = backlog
        self.mode = mode
        self.nofile = nofile
        self.netns = netns
        self.coalesce = coalesce
        self.close_after = close_after
        self.ports: list[int] = []
        self._set: WorkerSet[ServerSnapshot] = WorkerSet()
        self._t0 = 0.0
        self._final: ServerStats | None = None

    def _config(self, ports: list[int], *, exclusive: bool = False) -> ServerConfig:
        config: ServerConfig = {
            "role": "server",
            "bind": self.bind,
            "ports": ports,
            "backlog": self.backlog,
            "mode": self.mode,
            "nofile": self.nofile,
            "reuseport": True,
            # the first worker on a port refuses one that another process listens on
            "exclusive": exclusive,
        }
        if self.coalesce is not None:
            config["coalesce"] = self.coalesce
        if self.close_after is not None:
            config["close_after"] = self.close_after
        return config

    def start(self) -> None:
        """Start the workers; returns once every one listens (``.ports`` has real ports)."""
        self._t0 = time.monotonic()
        try:
            ports = self.requested_ports
            split = self.workers > 1 and len(ports) > SHARE_MAX and 0 not in ports
            if split:
                shares = [ports[i :: self.workers] for i in range(self.workers)]
                started = [
                    self._set.spawn(self._config(s, exclusive=True), self.netns)
                    for s in shares
                    if s
                ]
                self._set.wait_ready(started)
                self.ports = sorted(
                    p for w in started if w.ready is not None for p in w.ready["ports"]
                )
                self._check_sole_listener(started[0].pid, 1)
                return
            first = self._set.spawn(self._config(ports, exclusive=True), self.netns)
            self._set.wait_ready([first])
            assert first.ready is not None
            self.ports = [int(p) for p in first.ready["ports"]]
            rest = [
                self._set.spawn(self._config(self.ports), self.netns)
                for _ in range(self.workers - 1)
            ]
            self._set.wait_ready(rest)
            self._check_sole_listener(first.pid, self.workers)
        except BaseException:
            self._set.stop(timeout=1.0)
            raise

    def _check_sole_listener(self, pid: int, per_port: int) -> None:
        """RunFailed when a port has more listening sockets than our workers opened on it:
        another process joined through SO_REUSEPORT between our first worker's check and
        its bind (or we joined it). Read from the worker's own network namespace."""
        if len(self.ports) > SHARE_MAX:
            return  # split ports: each checked by its worker's exclusive bind
        counts = listen_counts(pid, self.bind)
        for port in self.ports:
            found = counts.get(port, 0)
            if found > per_port:
                raise RunFailed(
                    f"{self.bind} port {port}: {found} listening sockets where conncap opened "
                    f"{per_port}; another process listens on it too (SO_REUSEPORT), and "
                    "conncap never shares a port: give another port, or 0 for any free one"
                )

    def pids(self) -> list[int]:
        return self._set.pids()

    def stats(self) -> ServerStats:
        if self._final is not None:
            return self._final
        return self._aggregate(self._set.snapshot())

    def _aggregate(self, snaps: list[ServerSnapshot]) -> ServerStats:
        errors: dict[str, int] = {}
        per_ip: dict[str, int] = {}
        for s in snaps:
            for k, n in s.get("errors", {}).items():
                errors[k] = errors.get(k, 0) + n
            for ip, n in s.get("per_ip", {}).items():
                per_ip[ip] = per_ip.get(ip, 0) + n
        return ServerStats(
            t=time.monotonic() - self._t0,
            held=sum(s.get("held", 0) for s in snaps),
            accepted=sum(s.get("accepted", 0) for s in snaps),
            closed=sum(s.get("closed", 0) for s in snaps),
            resets=sum(s.get("resets", 0) for s in snaps),
            errors=cl.by_name(errors),
            errors_by_cause=cl.by_cause(errors, "accept"),
            per_source_ip=dict(sorted(per_ip.items())),
            pids=self._set.pids(),
            ports=list(self.ports),
            rss_bytes=sum(s.get("rss", 0) for s in snaps),
            backoffs=sum(s.get("backoffs", 0) for s in snaps),
            paused_workers=sum(1 for s in snaps if s.get("paused")),
            workers=len(snaps),
            extra=(
                {"closed_first": sum(s.get("expired", 0) for s in snaps)}
                if self.close_after is not None
                else {}
            ),
        )

    def quiet(self) -> None:
        """The run is ending: workers stop watching their connections (no wakeup for each
        client reset) and keep their counts as they are; ``stop`` then closes everything."""
        if self._final is None:
            self._set.broadcast("quiet")

    def request_stop(self) -> None:
        """Tell every worker to close its connections now, without waiting (``stop`` reaps)."""
        if self._final is None:
            self._set.request_stop()

    def stop(self, timeout: float = 2.0) -> ServerStats:
        """Close everything and reap the workers (killing our own stragglers at ``timeout``)."""
        if self._final is not None:
            return self._final
        self._set.stop(timeout)
        self._final = self._aggregate(self._set.snapshot())
        return self._final

    def __enter__(self) -> ServerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
