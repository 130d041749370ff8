"""From one :class:`Reading` to the nearest ceilings: pure (no I/O), ranked by headroom.

Every ceiling names the catalogue's cause id, the side it binds, the evidence in numbers and
the catalogue's advice for this OS. ``time-wait`` is a cause the catalogue is gaining; until it
has it, :func:`advice_for` gives the doctor's own advice for it (one place, easy to drop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from conncap import catalogue
from conncap.doctor.pools import (
    PortPool,
    PortUsage,
    TimeWaitPressure,
    port_usage,
    time_wait_pressure,
)
from conncap.doctor.reading import Owner, Reading
from conncap.doctor.sockdiag import Listener
from conncap.model.churn import LINUX_TIME_WAIT_S
from conncap.result import JsonValue

#: A ceiling this full (used ÷ limit) is "near".
NEAR = 0.8
#: How many of the fullest pools / processes become ceilings.
TOP_POOLS = 20
TOP_PROCESSES = 5
#: Values at least this large mean "no practical limit" (systemd sets fs.file-max to LONG_MAX).
_HUGE = 1 << 62

#: A source IP's bind() pool becomes a (conditional) ceiling only from this fill on.
CONDITIONAL_SHOWN = 0.5

TIME_WAIT_CAUSE = str(catalogue.Cause.TIME_WAIT)

Side = Literal["client", "server", "process", "host"]


@dataclass(frozen=True, slots=True)
class Fix:
    """How to raise one limit on this OS (the catalogue's :class:`~conncap.catalogue.Advice`)."""

    knob: str
    commands: tuple[str, ...]
    checks: tuple[str, ...]
    note: str

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "knob": self.knob,
            "commands": list(self.commands),
            "checks": list(self.checks),
            "note": self.note,
        }


def advice_for(cause: str, os_name: str = "linux") -> Fix:
    """The catalogue's advice for ``cause`` on ``os_name`` (none for a cause it does not
    know)."""
    try:
        a = catalogue.advice(catalogue.Cause(cause), os_name)
    except (ValueError, KeyError):
        return Fix(knob="", commands=(), checks=(), note="")
    return Fix(knob=a.knob, commands=a.commands, checks=a.checks, note=a.note)


@dataclass(frozen=True, slots=True)
class NearCeiling:
    """One limit and how close this host is to it."""

    cause: str
    side: Side
    subject: str
    used: int
    limit: int
    evidence: str
    fix: Fix
    #: True when it binds only if the program works a certain way (bind() without
    #: IP_BIND_ADDRESS_NO_PORT), which the kernel's tables cannot show.
    conditional: bool = False
    details: dict[str, JsonValue] = field(default_factory=dict)

    @property
    def fill(self) -> float:
        return self.used / self.limit if self.limit > 0 else 1.0

    @property
    def headroom(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates between two readings of the counters (None: unknown)."""

    interval_s: float | None = None
    listen_overflows: float | None = None
    listen_drops: float | None = None
    conntrack_insert_failed: float | None = None
    conntrack_drop: float | None = None


@dataclass(frozen=True, slots=True)
class ListenerView:
    listener: Listener
    owner: Owner | None

    @property
    def fill(self) -> float | None:
        b = self.listener.backlog
        return self.listener.accept_queue / b if b > 0 else None


@dataclass(frozen=True, slots=True)
class PoolTrend:
    """How fast a pool fills between two readings, and when it would be full."""

    per_s: float
    seconds_to_full: float | None  # None: not filling


@dataclass(frozen=True, slots=True)
class Report:
    """A reading judged: pools, TIME_WAIT, listeners, rates, and the ranked ceilings."""

    reading: Reading
    ports: PortUsage | None
    time_wait: tuple[TimeWaitPressure, ...]
    listeners: tuple[ListenerView, ...]
    rates: Rates
    ceilings: tuple[NearCeiling, ...]
    near: float
    trends: dict[tuple[int, str, str, int], PoolTrend] = field(default_factory=dict)

    @property
    def nearest(self) -> tuple[NearCeiling, ...]:
        """Ceilings at least ``near`` full (the conditional ones too), nearest first."""
        return tuple(c for c in self.ceilings if c.fill >= self.near)

    @property
    def headline(self) -> str:
        firm = [c for c in self.ceilings if not c.conditional]
        near = [c for c in firm if c.fill >= self.near]
        if near:
            c = near[0]
            return f"nearest ceiling: {c.cause} ({c.side}) {c.subject}: {c.evidence}"
        if not firm:
            return "nothing near a ceiling (nothing could be measured)"
        c = firm[0]
        return (
            f"nothing near a ceiling: the fullest is {c.cause} {c.subject} at "
            f"{c.fill:.1%} ({c.used:,} of {c.limit:,})"
        )


def rates(reading: Reading) -> Rates:
    """Counter deltas over the time between ``reading.baseline`` and ``reading.counters``."""
    base, now = reading.baseline, reading.counters
    if base is None or now.at <= base.at:
        return Rates()
    dt = now.at - base.at

    def rate(a: int | None, b: int | None) -> float | None:
        return None if a is None or b is None else max(b - a, 0) / dt

    return Rates(
        interval_s=dt,
        listen_overflows=rate(base.listen_overflows, now.listen_overflows),
        listen_drops=rate(base.listen_drops, now.listen_drops),
        conntrack_insert_failed=rate(base.conntrack_insert_failed, now.conntrack_insert_failed),
        conntrack_drop=rate(base.conntrack_drop, now.conntrack_drop),
    )


def _key(p: PortPool) -> tuple[int, str, str, int]:
    return (p.family, p.src, p.dst, p.dport)


def analyse(reading: Reading, previous: Report | None = None, *, near: float = NEAR) -> Report:
    """Judge ``reading``; with ``previous`` (watch), add each pool's fill rate and time to full."""
    limits = reading.limits
    os_name = reading.os
    ports: PortUsage | None = None
    rng = limits.port_range.value
    if reading.sockets is not None and rng is not None:
        ports = port_usage(reading.sockets, rng, limits.reserved_ports.value or ())
    tw_reuse = limits.tcp_tw_reuse.value
    r = rates(reading)
    ceilings: list[NearCeiling] = []
    pressures: list[TimeWaitPressure] = []

    trends: dict[tuple[int, str, str, int], PoolTrend] = {}
    if ports is not None:
        for pool in ports.pools[:TOP_POOLS]:
            tw = time_wait_pressure(pool, tw_reuse)
            if pool.time_wait:
                pressures.append(tw)
            ceilings.append(_pool_ceiling(pool, tw, os_name))
        ceilings.extend(_source_ceilings(ports, os_name))
        if previous is not None and previous.ports is not None:
            trends = _trends(previous, ports, reading)

    if reading.descriptors is not None:
        for proc in reading.descriptors.processes[:TOP_PROCESSES]:
            if proc.fill is None or proc.fds is None or proc.soft is None:
                continue
            hard = "unlimited" if proc.hard is None else f"{proc.hard:,}"
            ceilings.append(
                NearCeiling(
                    cause="file-descriptors",
                    side="process",
                    subject=f"{proc.name} (pid {proc.pid})",
                    used=proc.fds,
                    limit=proc.soft,
                    evidence=f"{proc.fds:,} of {proc.soft:,} descriptors open "
                    f"({proc.fill:.1%}; hard limit {hard})",
                    fix=advice_for("file-descriptors", os_name),
                    details={"pid": proc.pid, "name": proc.name, "hard": proc.hard},
                )
            )

    fo, fm = limits.files_open.value, limits.files_max.value
    if fo is not None and fm is not None and 0 < fm < _HUGE:
        ceilings.append(
            NearCeiling(
                cause="system-file-table",
                side="host",
                subject="fs.file-max",
                used=fo,
                limit=fm,
                evidence=f"{fo:,} of {fm:,} files open system-wide ({fo / fm:.1%})",
                fix=advice_for("system-file-table", os_name),
            )
        )

    owners = reading.listener_owners
    views: list[ListenerView] = []
    if reading.sockets is not None:
        for lst in reading.sockets.listeners:
            views.append(ListenerView(lst, owners.get(lst.inode)))
        views.sort(key=lambda v: (-(v.fill or 0.0), v.listener.port, v.listener.addr))
        for v in views:
            if v.listener.backlog <= 0:
                continue
            ceilings.append(_listener_ceiling(v, r, os_name))

    ct = reading.conntrack
    if ct.count is not None and ct.max is not None and ct.max > 0:
        ev = f"{ct.count:,} of {ct.max:,} entries ({ct.count / ct.max:.1%})"
        if r.conntrack_insert_failed:
            ev += f"; insert_failed {r.conntrack_insert_failed:,.1f}/s (SNAT ports, not the table)"
        if r.conntrack_drop:
            ev += f"; {r.conntrack_drop:,.1f} packets/s dropped: table full"
        ceilings.append(
            NearCeiling(
                cause="conntrack",
                side="host",
                subject="nf_conntrack_max",
                used=ct.count,
                limit=ct.max,
                evidence=ev,
                fix=advice_for("conntrack", os_name),
            )
        )

    tcp_mem = limits.tcp_mem.value
    if reading.tcp_mem_bytes is not None and tcp_mem is not None and tcp_mem[2] > 0:
        used, (_, pressure, hi) = reading.tcp_mem_bytes, tcp_mem
        ceilings.append(
            NearCeiling(
                cause="memory",
                side="host",
                subject="net.ipv4.tcp_mem",
                used=used,
                limit=hi,
                evidence=f"{_mib(used)} of {_mib(hi)} socket-buffer memory "
                f"({used / hi:.1%}; pressure from {_mib(pressure)})",
                fix=advice_for("memory", os_name),
            )
        )

    order = {id(c): i for i, c in enumerate(ceilings)}
    ceilings.sort(key=lambda c: (-c.fill, c.conditional, order[id(c)]))
    return Report(
        reading=reading,
        ports=ports,
        time_wait=tuple(pressures),
        listeners=tuple(views),
        rates=r,
        ceilings=tuple(ceilings),
        near=near,
        trends=trends,
    )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _pool_ceiling(pool: PortPool, tw: TimeWaitPressure, os_name: str) -> NearCeiling:
    evidence = (
        f"{pool.in_use:,} of {pool.usable:,} ports in use ({pool.fill:.1%}), "
        f"{pool.time_wait:,} of them TIME_WAIT"
    )
    if pool.held_by_listeners:
        evidence += f" ({pool.held_by_listeners:,} held by listeners)"
    open_ports = pool.in_use - pool.time_wait
    tw_bound = pool.time_wait > open_ports
    used = pool.in_use
    if pool.time_wait:
        evidence += (
            f"; churn {tw.churn_per_s:,.1f}/s against {tw.sustainable_per_s:,.1f}/s sustainable "
            f"(TIME_WAIT {LINUX_TIME_WAIT_S:.0f} s)"
        )
        if tw.reuse:
            used = open_ports
            evidence += "; tcp_tw_reuse applies: TIME_WAIT ports are reused after 1 s"
        elif tw.reuse is False:
            evidence += (
                f"; tcp_tw_reuse=1 would reuse them after 1 s "
                f"(≈ {tw.sustainable_with_reuse_per_s:,.0f}/s)"
            )
    cause = TIME_WAIT_CAUSE if tw_bound and not tw.reuse else "ephemeral-ports"
    return NearCeiling(
        cause=cause,
        side="client",
        subject=pool.label,
        used=used,
        limit=pool.usable,
        evidence=evidence,
        fix=advice_for(cause, os_name),
        details={
            "pool": {"src": pool.src, "dst": pool.dst, "dport": pool.dport},
            "ports_in_use": pool.in_use,
            "time_wait": pool.time_wait,
        },
    )


def _source_ceilings(ports: PortUsage, os_name: str) -> list[NearCeiling]:
    """A source IP whose ports, summed over destinations, fill more of the range than any one
    pool: a ceiling only for programs that bind(ip, 0) without IP_BIND_ADDRESS_NO_PORT."""
    fullest: dict[tuple[int, str], float] = {}
    for p in ports.pools:
        fullest.setdefault((p.family, p.src), p.fill)
    out = []
    for s in ports.sources:
        if (
            s.pools < 2
            or s.fill < CONDITIONAL_SHOWN
            or s.fill <= fullest.get((s.family, s.src), 0.0)
        ):
            continue
        out.append(
            NearCeiling(
                cause="ephemeral-ports",
                side="client",
                subject=f"{s.src} (any destination, if bound with bind())",
                used=s.ports,
                limit=s.usable,
                evidence=f"{s.ports:,} of {s.usable:,} local ports of {s.src} in use across "
                f"{s.pools:,} destinations ({s.fill:.1%}); binds only sockets bound with "
                "bind(ip, 0) without IP_BIND_ADDRESS_NO_PORT (the kernel's tables cannot "
                "tell them apart)",
                fix=advice_for("ephemeral-ports", os_name),
                conditional=True,
                details={"source": s.src, "time_wait": s.time_wait},
            )
        )
    return out


def _listener_ceiling(v: ListenerView, r: Rates, os_name: str) -> NearCeiling:
    lst = v.listener
    addr = f"[{lst.addr}]" if ":" in lst.addr else lst.addr
    who = f" ({v.owner.name} pid {v.owner.pid})" if v.owner else ""
    evidence = f"accept queue {lst.accept_queue:,} of backlog {lst.backlog:,}"
    if lst.accept_queue >= lst.backlog:
        evidence += " (full: new SYNs are dropped)"
    if r.listen_overflows is not None:
        evidence += (
            f"; ListenOverflows {r.listen_overflows:,.1f}/s, ListenDrops "
            f"{(r.listen_drops or 0.0):,.1f}/s in this namespace"
        )
    return NearCeiling(
        cause="server-backlog",
        side="server",
        subject=f"listener {addr}:{lst.port}{who}",
        used=min(lst.accept_queue, lst.backlog),
        limit=lst.backlog,
        evidence=evidence,
        fix=advice_for("server-backlog", os_name),
        details={
            "addr": lst.addr,
            "port": lst.port,
            "accept_queue": lst.accept_queue,
            "backlog": lst.backlog,
            "pid": v.owner.pid if v.owner else None,
        },
    )


def _trends(previous: Report, ports: PortUsage, reading: Reading) -> dict[Any, PoolTrend]:
    assert previous.ports is not None
    dt = reading.taken_at - previous.reading.taken_at
    if dt <= 0:
        return {}
    before = {_key(p): p.in_use for p in previous.ports.pools}
    out: dict[Any, PoolTrend] = {}
    for p in ports.pools[:TOP_POOLS]:
        per_s = (p.in_use - before.get(_key(p), 0)) / dt
        out[_key(p)] = PoolTrend(per_s, p.free / per_s if per_s > 0 else None)
    return out
