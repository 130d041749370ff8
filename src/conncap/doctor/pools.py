"""Ephemeral port pools and TIME_WAIT pressure: pure functions of a :class:`SocketCounts` and
the host's limits (no I/O).

Linux keeps one pool of ephemeral ports per (source IP, destination IP, destination port) for
connect() on an unbound socket (``__inet_hash_connect`` accepts a port when the 4-tuple is
unique), and one per source IP for sockets bound with ``bind(ip, 0)`` without
``IP_BIND_ADDRESS_NO_PORT`` (bind() must pick the port before the destination is known).
A port held by bind() (a listener, or a client that bound) is skipped by connect() for every
destination (its bind bucket has ``fastreuse >= 0``): listeners' ports inside the range count
against every pool. sock_diag does not say how a client socket got its port, so the per-source
pools are shown as what they would be *if* the program binds (docs/doctor.md).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from conncap.doctor.sockdiag import SocketCounts, decode_pool_key, decode_source
from conncap.model.churn import LINUX_TIME_WAIT_S

#: With tcp_tw_reuse, connect() may take a TIME_WAIT port once it is this old
#: (net.ipv4.tcp_tw_reuse_delay, 1,000 ms by default, since 6.13; fixed at 1 s before).
TW_REUSE_DELAY_S = 1.0


# --- churn per pool (conncap.model.churn owns TIME_WAIT's length per OS) -------------------------


def time_wait_churn_rate(time_wait: int, time_wait_s: float = LINUX_TIME_WAIT_S) -> float:
    """Connections closed per second that keep ``time_wait`` sockets in TIME_WAIT in steady
    state (Little's law: count = rate × time in TIME_WAIT)."""
    return time_wait / time_wait_s if time_wait_s > 0 else 0.0


def sustainable_churn_rate(ports: int, time_wait_s: float = LINUX_TIME_WAIT_S) -> float:
    """New connections per second one pool of ``ports`` free ports can sustain when every
    connection closes at once from this side and keeps its port ``time_wait_s`` in TIME_WAIT."""
    return max(ports, 0) / time_wait_s if time_wait_s > 0 else float("inf")


def tw_reuse_applies(tw_reuse: int | None, src: str, dst: str) -> bool | None:
    """Whether net.ipv4.tcp_tw_reuse lets connect() reuse this pool's TIME_WAIT ports:
    1 everywhere, 2 (the default since 4.19) only when both ends are loopback. None: unknown."""
    if tw_reuse is None:
        return None
    if tw_reuse == 1:
        return True
    if tw_reuse == 2:
        return _loopback(src) and _loopback(dst)
    return False


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


# --- pools --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortPool:
    """One (source IP, destination IP, destination port) pool: ``sockets`` client sockets hold
    a port of it (``time_wait`` of them in TIME_WAIT), ``held_by_listeners`` more ports are
    bound by listeners, out of ``usable``."""

    family: int
    src: str
    dst: str
    dport: int
    sockets: int
    time_wait: int
    held_by_listeners: int
    usable: int

    @property
    def in_use(self) -> int:
        return self.sockets + self.held_by_listeners

    @property
    def fill(self) -> float:
        return self.in_use / self.usable if self.usable > 0 else 1.0

    @property
    def free(self) -> int:
        return max(self.usable - self.in_use, 0)

    @property
    def label(self) -> str:
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        return f"{self.src} → {dst}:{self.dport}"


@dataclass(frozen=True, slots=True)
class SourcePool:
    """One source IP's ports (the bind() pool): ``ports`` distinct local ports of the range
    in use on it, across ``pools`` destinations."""

    family: int
    src: str
    ports: int
    time_wait: int
    pools: int
    usable: int

    @property
    def fill(self) -> float:
        return self.ports / self.usable if self.usable > 0 else 1.0


@dataclass(frozen=True, slots=True)
class PortUsage:
    """Every pool of the host, fullest first."""

    port_range: tuple[int, int]
    usable: int
    listener_ports_in_range: int
    pools: tuple[PortPool, ...]
    sources: tuple[SourcePool, ...]
    client_sockets: int
    server_sockets: int
    outside_range: int
    time_wait: int  # client TIME_WAIT sockets inside the range


def usable_count(ephemeral_range: tuple[int, int], reserved: tuple[tuple[int, int], ...]) -> int:
    lo, hi = ephemeral_range
    taken = bytearray(hi - lo + 1)
    for a, b in reserved:
        a, b = max(a, lo), min(b, hi)
        if a <= b:
            taken[a - lo : b - lo + 1] = b"\1" * (b - a + 1)
    return len(taken) - taken.count(1)


def port_usage(
    counts: SocketCounts,
    port_range: tuple[int, int],
    reserved: tuple[tuple[int, int], ...] = (),
) -> PortUsage:
    """Group ``counts`` into pools against the usable range, fullest first (ties: more
    TIME_WAIT first, then by label, so the order is stable)."""
    usable = usable_count(port_range, reserved)
    lo, hi = port_range
    reserved_ports = {p for a, b in reserved for p in range(max(a, lo), min(b, hi) + 1)}
    in_range = sorted(
        {
            lst.port
            for lst in counts.listeners
            if lo <= lst.port <= hi and lst.port not in reserved_ports
        }
    )
    held = len(in_range)

    merged: dict[tuple[int, str, str, int], list[int]] = {}
    for family, table in counts.pools.items():
        for key, (n, tw) in table.items():
            src, dst, dport = decode_pool_key(family, key)
            fam = 4 if "." in src and ":" not in src else 6
            slot = merged.setdefault((fam, src, dst, dport), [0, 0])
            slot[0] += n
            slot[1] += tw
    pools = [
        PortPool(fam, src, dst, dport, n, tw, held, usable)
        for (fam, src, dst, dport), (n, tw) in merged.items()
    ]
    pools.sort(key=lambda p: (-p.fill, -p.time_wait, p.family, p.src, p.dst, p.dport))

    by_src: dict[tuple[int, str], bytearray] = {}
    for family, sources_of in counts.sources.items():
        for raw, ports in sources_of.items():
            src = decode_source(family, raw)
            fam = 4 if "." in src and ":" not in src else 6
            have = by_src.get((fam, src))
            if have is None:
                by_src[(fam, src)] = bytearray(ports)
            else:  # an IPv4-mapped IPv6 source: the same pool as the IPv4 address
                both = int.from_bytes(have, "big") | int.from_bytes(ports, "big")
                have[:] = both.to_bytes(65536, "big")
    tw_by_src: dict[tuple[int, str], int] = {}
    n_by_src: dict[tuple[int, str], int] = {}
    for p in pools:
        tw_by_src[(p.family, p.src)] = tw_by_src.get((p.family, p.src), 0) + p.time_wait
        n_by_src[(p.family, p.src)] = n_by_src.get((p.family, p.src), 0) + 1
    sources = []
    for (fam, src), bitmap in by_src.items():
        for lst in counts.listeners:
            if lst.port in in_range and lst.addr in (src, "0.0.0.0", "::"):
                bitmap[lst.port] = 1
        sources.append(
            SourcePool(
                fam,
                src,
                bitmap.count(1),
                tw_by_src.get((fam, src), 0),
                n_by_src.get((fam, src), 0),
                usable,
            )
        )
    sources.sort(key=lambda s: (-s.fill, s.family, s.src))
    client = sum(p.sockets for p in pools)
    return PortUsage(
        port_range=port_range,
        usable=usable,
        listener_ports_in_range=held,
        pools=tuple(pools),
        sources=tuple(sources),
        client_sockets=client,
        server_sockets=sum(counts.server_side.values()),
        outside_range=counts.outside_range,
        time_wait=sum(p.time_wait for p in pools),
    )


@dataclass(frozen=True, slots=True)
class TimeWaitPressure:
    """TIME_WAIT in one pool: the churn it implies and what the pool can sustain."""

    pool: PortPool
    churn_per_s: float
    sustainable_per_s: float
    reuse: bool | None  # tcp_tw_reuse applies to this pool (None: unknown)
    sustainable_with_reuse_per_s: float


def time_wait_pressure(
    pool: PortPool, tw_reuse: int | None, time_wait_s: float = LINUX_TIME_WAIT_S
) -> TimeWaitPressure:
    """The pool's churn (TIME_WAIT ÷ 60 s) against what its ports sustain: the ports not held
    by open connections, each reusable after TIME_WAIT (or after 1 s with tcp_tw_reuse)."""
    churnable = pool.usable - (pool.in_use - pool.time_wait)
    return TimeWaitPressure(
        pool=pool,
        churn_per_s=time_wait_churn_rate(pool.time_wait, time_wait_s),
        sustainable_per_s=sustainable_churn_rate(churnable, time_wait_s),
        reuse=tw_reuse_applies(tw_reuse, pool.src, pool.dst),
        sustainable_with_reuse_per_s=sustainable_churn_rate(churnable, TW_REUSE_DELAY_S),
    )
