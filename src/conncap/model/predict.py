"""The ceiling model: which limit will stop a plan, and at how many connections. Pure functions
of :class:`~conncap.limits.HostLimits` and a :class:`Plan`; no I/O (h11's habit).

Each limit becomes a :class:`Bound` (a count, or None with the reason it is unknown); a side's
:class:`PredictedCeiling` is the smallest known bound. The semantics per OS are in docs/model.md:

* ports: one pool of usable ephemeral ports per (source IP, destination) on Linux without
  bind(); one pool per source IP for all destinations after bind(ip, 0), on Windows and macOS;
  the 4-tuple rule again with IP_BIND_ADDRESS_NO_PORT or explicit ports;
* descriptors: RLIMIT_NOFILE per process, and the system file table, where a loopback
  connection costs two descriptors;
* memory: available memory (or the cgroup's room) over bytes per connection;
* conntrack: free entries in the table; the listen backlog is a burst limit, so a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conncap import result
from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.limits._common import Fact, HostLimits, PortRange
from conncap.model.plan import (
    DEFAULT_PORT_RANGE,
    KERNEL_BYTES_PER_SOCKET,
    WINDOWS_OLD_FIRST_PORT,
    WINDOWS_OLD_MAX_USER_PORT,
    OsName,
    Plan,
    Side,
)
from conncap.model.plan import OS_LABEL as _OS_LABEL
from conncap.model.plan import os_name as _os_name
from conncap.result import JsonValue


@dataclass(frozen=True, slots=True)
class Bound:
    """One limit's verdict: at most ``count`` connections (None: unknown, never binds)."""

    cause: Cause
    count: int | None
    detail: str
    estimate: bool = False
    knob: str = ""

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "cause": str(self.cause),
            "count": self.count,
            "detail": self.detail,
            "estimate": self.estimate,
            "knob": self.knob,
        }


@dataclass(frozen=True, slots=True)
class PredictedCeiling:
    """One side's ceiling: the smallest known bound (the first listed wins a tie)."""

    side: Side
    count: int | None
    cause: Cause
    bounds: tuple[Bound, ...]

    @property
    def binding(self) -> Bound | None:
        known = [b for b in self.bounds if b.count is not None]
        return min(known, key=lambda b: b.count or 0) if known else None

    @property
    def estimate(self) -> bool:
        b = self.binding
        return b.estimate if b is not None else False

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "side": self.side,
            "count": self.count,
            "cause": str(self.cause),
            "estimate": self.estimate,
            "bounds": [b.to_json() for b in self.bounds],
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    client: PredictedCeiling
    server: PredictedCeiling
    overall: PredictedCeiling
    notes: tuple[str, ...]


def _ceiling(side: Side, bounds: list[Bound]) -> PredictedCeiling:
    best: Bound | None = None
    for b in bounds:
        if b.count is not None and (best is None or b.count < (best.count or 0)):
            best = b
    if best is None:
        return PredictedCeiling(side, None, Cause.UNKNOWN, tuple(bounds))
    return PredictedCeiling(side, best.count, best.cause, tuple(bounds))


# --- helpers ------------------------------------------------------------------------------------


def host_os(limits: HostLimits) -> OsName | None:
    try:
        return _os_name(limits.os)
    except UsageError:
        return None


def _why(fact: Fact[Any], what: str) -> str:
    if not fact.applicable:
        return f"{what}: {fact.reason or 'not applicable'}"
    return f"{what} unknown: {fact.reason or 'not read'}"


def _n(v: int) -> str:
    return f"{v:,}"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{_n(n)} {word}"
    return f"{_n(n)} {word}" + ("es" if word.endswith("s") else "s")


def _overlap(reserved: tuple[PortRange, ...], rng: PortRange) -> int:
    """Ports of ``rng`` inside the reserved ranges (ranges may overlap each other)."""
    lo, hi = rng
    ports: set[int] = set()
    for a, b in reserved:
        a, b = max(a, lo), min(b, hi)
        if a <= b:
            ports.update(range(a, b + 1))
    return len(ports)


def _windows_major(limits: HostLimits) -> int | None:
    v = limits.windows_version.value
    head = v.split(".", 1)[0] if v else ""
    return int(head) if head.isdigit() else None


# --- ports ---------------------------------------------------------------------------------------

_PORT_KNOB = {
    "linux": "net.ipv4.ip_local_port_range",
    "darwin": "net.inet.ip.portrange.first/last",
    "windows": "netsh int ipv4 set dynamicport tcp (MaxUserPort before Vista)",
}


def port_pool_size(
    limits: HostLimits, *, os_name: str | None = None, family: str = "ipv4"
) -> Bound:
    """Usable ephemeral ports in one pool: the range less reserved ports (Linux). Windows
    before Vista: 1025..MaxUserPort. Another OS than the host's: its default range
    (estimate). An unread range is a Bound with count None."""
    os = _os_name(os_name) if os_name else host_os(limits)
    if os is None:
        return Bound(Cause.EPHEMERAL_PORTS, None, f"no port model for OS {limits.os!r}")
    knob = _PORT_KNOB[os]
    same_os = os == host_os(limits)
    fact = limits.port_range_v6 if (os == "windows" and family == "ipv6") else limits.port_range
    if same_os and fact.value is not None:
        lo, hi = fact.value
        size = hi - lo + 1
        reserved = 0
        tail = ""
        if os == "linux":
            r = limits.reserved_ports
            if r.value is not None:
                reserved = _overlap(r.value, (lo, hi))
                tail = f" less {_n(reserved)} reserved" if reserved else ""
            elif r.applicable:
                tail = " (reserved ports unknown: none subtracted)"
        count = max(0, size - reserved)
        detail = f"ephemeral port range {lo}-{hi}{tail}: {_n(count)} ports"
        return Bound(Cause.EPHEMERAL_PORTS, count, detail, knob=knob)
    major = _windows_major(limits) if os == "windows" else None
    if os == "windows" and major is not None and major < 6:
        mup = limits.max_user_port.value
        hi = mup if mup is not None else WINDOWS_OLD_MAX_USER_PORT
        count = hi - WINDOWS_OLD_FIRST_PORT + 1
        how = f"MaxUserPort {hi}" if mup is not None else "MaxUserPort not set: default 5000"
        detail = (
            f"Windows before Vista: ports {WINDOWS_OLD_FIRST_PORT}-{hi} ({how}): {_n(count)} ports"
        )
        return Bound(Cause.EPHEMERAL_PORTS, count, detail, estimate=mup is None, knob=knob)
    if not same_os:
        lo, hi = DEFAULT_PORT_RANGE[os]
        count = hi - lo + 1
        detail = (
            f"{_OS_LABEL[os]}'s default ephemeral port range {lo}-{hi}: {_n(count)} ports "
            "(not read from this host)"
        )
        return Bound(Cause.EPHEMERAL_PORTS, count, detail, estimate=True, knob=knob)
    return Bound(Cause.EPHEMERAL_PORTS, None, _why(fact, "ephemeral port range"), knob=knob)


def pools_for(os: OsName, plan: Plan) -> tuple[int, str]:
    """How many independent port pools the plan draws from, and the rule that says so."""
    s = plan.source_ips if plan.bind != "none" else 1
    d = plan.destinations
    if plan.bind in ("explicit",) or (plan.bind == "bind-no-port" and os != "darwin"):
        how = {
            "explicit": "ports chosen by the client: one pool per source IP and destination",
            "bind-no-port": (
                "IP_BIND_ADDRESS_NO_PORT: one pool per source IP and destination"
                if os == "linux"
                else "SO_REUSE_UNICASTPORT: one pool per source IP and destination"
            ),
        }[plan.bind]
        return s * d, how
    if plan.bind in ("bind", "bind-no-port"):
        return s, "bind() before connect(): one pool per source IP for all destinations"
    if os == "linux":
        return d, "connect() without bind(): one pool per destination"
    return 1, f"{_OS_LABEL[os]}: one pool per source IP for all destinations"


def _port_bound(limits: HostLimits, plan: Plan, os: OsName | None) -> Bound:
    if os is None:
        return Bound(Cause.EPHEMERAL_PORTS, None, f"no port model for OS {limits.os!r}")
    pool = port_pool_size(limits, os_name=os, family=plan.family)
    if pool.count is None:
        return pool
    usable = max(0, pool.count - plan.ports_in_use)
    pools, rule = pools_for(os, plan)
    in_use = f", {_n(plan.ports_in_use)} already in use" if plan.ports_in_use else ""
    detail = f"{pool.detail}{in_use} × {_plural(pools, 'pool')} ({rule})"
    return Bound(Cause.EPHEMERAL_PORTS, usable * pools, detail, pool.estimate, pool.knob)


# --- descriptors ---------------------------------------------------------------------------------


def _fd_bound(
    limits: HostLimits, plan: Plan, processes: int, in_use: int, os: OsName | None
) -> Bound | None:
    """RLIMIT_NOFILE less the ``in_use`` descriptors each of ``processes`` keeps, times them."""
    if os == "windows":
        return None  # no RLIMIT_NOFILE: sockets are handles bounded by memory
    which = "hard" if plan.raise_nofile else "soft"
    fact = limits.nofile_hard if plan.raise_nofile else limits.nofile_soft
    cap = limits.nofile_max.value if os == "darwin" else None
    knob = "RLIMIT_NOFILE (ulimit -n)"
    if fact.value is None and cap is None:
        if not fact.applicable:
            return None
        return Bound(Cause.FILE_DESCRIPTORS, None, _why(fact, f"RLIMIT_NOFILE {which}"), knob=knob)
    limit = min(v for v in (fact.value, cap) if v is not None)
    name = (
        f"RLIMIT_NOFILE {which} {_n(limit)}"
        if limit == fact.value
        else f"kern.maxfilesperproc {_n(limit)}"
    )
    per = max(0, limit - in_use)
    detail = f"{name} − {in_use} in use = {_n(per)} per process × {_plural(processes, 'process')}"
    return Bound(Cause.FILE_DESCRIPTORS, per * processes, detail, knob=knob)


def _file_table_bound(limits: HostLimits, plan: Plan, os: OsName | None) -> Bound | None:
    if os == "windows" or not limits.files_max.applicable:
        return None
    knob = "fs.file-max" if os == "linux" else "kern.maxfiles"
    fmax = limits.files_max.value
    if fmax is None:
        return Bound(Cause.SYSTEM_FILE_TABLE, None, _why(limits.files_max, knob), knob=knob)
    used = limits.files_open.value
    free = max(0, fmax - (used or 0))
    per_conn = 2 if plan.loopback else 1
    open_part = f" − {_n(used)} open" if used is not None else " (files open now unknown)"
    cost = ", 2 descriptors per loopback connection" if plan.loopback else ""
    detail = f"{knob} {_n(fmax)}{open_part}{cost}"
    return Bound(Cause.SYSTEM_FILE_TABLE, free // per_conn, detail, knob=knob)


# --- memory, conntrack, Windows TcpNumConnections ------------------------------------------------


def _memory_bound(limits: HostLimits, plan: Plan, os: OsName | None) -> Bound:
    knob = "memory (MemAvailable, cgroup memory.max)"
    avail = limits.mem_available.value
    source = "MemAvailable"
    lim, cur = limits.cgroup_mem_limit.value, limits.cgroup_mem_current.value
    if lim is not None:
        room = max(0, lim - (cur or 0))
        if avail is None or room < avail:
            avail = room
            source = (
                "cgroup memory.max − memory.current"
                if cur is not None
                else "cgroup memory.max (usage unknown)"
            )
    if avail is None:
        return Bound(Cause.MEMORY, None, _why(limits.mem_available, "available memory"), knob=knob)
    if plan.bytes_per_conn is not None:
        per = float(plan.bytes_per_conn)
        how = f"{_n(round(per))} bytes per connection (measured)"
        estimate = False
    else:
        sock = KERNEL_BYTES_PER_SOCKET.get(os or "linux", 4096)
        ends = 2 if plan.loopback else 1
        per = float(sock * ends)
        label = _OS_LABEL.get(os or "linux", "Linux")
        how = (
            f"≈ {_n(round(per))} kernel bytes per connection "
            f"({label} estimate: {ends} × {_n(sock)})"
        )
        estimate = True
    count = int(avail // per)
    detail = f"{source} {_n(avail)} bytes ÷ {how}"
    return Bound(Cause.MEMORY, count, detail, estimate=estimate, knob=knob)


def _conntrack_bound(limits: HostLimits) -> Bound | None:
    fact = limits.conntrack_max
    knob = "net.netfilter.nf_conntrack_max"
    if not fact.applicable:
        return None
    if fact.value is None:
        return Bound(Cause.CONNTRACK, None, _why(fact, "nf_conntrack_max"), knob=knob)
    used = limits.conntrack_count.value
    if used == 0:
        # Since Linux 4.x conntrack hooks a namespace only when a rule needs it (iptables/nft
        # with NAT or ct state); an empty table while this host has connections means the
        # kernel tracks none of them, so the table does not bound these connections.
        detail = (
            f"nf_conntrack_max {_n(fact.value)} but 0 tracked now: no firewall or NAT rule "
            "makes the kernel track these connections, so the table does not bound them "
            "(behind a NAT gateway it does)"
        )
        return Bound(Cause.CONNTRACK, None, detail, knob=knob)
    free = max(0, fact.value - (used or 0))
    used_part = f" − {_n(used)} tracked now" if used is not None else " (entries in use unknown)"
    detail = (
        f"nf_conntrack_max {_n(fact.value)}{used_part}, one entry per connection "
        "(only while a firewall or NAT rule makes the kernel track connections)"
    )
    return Bound(Cause.CONNTRACK, free, detail, knob=knob)


def _tcp_num_connections(limits: HostLimits) -> Bound | None:
    v = limits.tcp_num_connections.value
    if v is None:
        return None
    return Bound(
        Cause.MEMORY,
        v,
        f"TcpNumConnections {_n(v)} (registry cap on simultaneous TCP connections)",
        estimate=True,
        knob="TcpNumConnections",
    )


# --- notes ---------------------------------------------------------------------------------------


def _notes(
    limits: HostLimits, plan: Plan, os: OsName | None, client: PredictedCeiling
) -> list[str]:
    notes: list[str] = []
    if plan.bind == "none" and plan.source_ips > 1:
        notes.append(
            f"without bind() the kernel picks one source address by route: "
            f"{plan.source_ips - 1} of the {plan.source_ips} source IPs go unused"
        )
    if os == "darwin" and plan.bind == "bind-no-port":
        notes.append("macOS has no IP_BIND_ADDRESS_NO_PORT: modelled as bind() before connect()")
    if os == "windows" and plan.bind == "bind-no-port":
        notes.append("on Windows this is SO_REUSE_UNICASTPORT (Windows 10 / Server 2016 and later)")
    if os == "windows":
        notes.append(
            "Windows has no per-process descriptor limit: sockets are handles bounded by memory"
        )
        if _windows_major(limits) is not None and (_windows_major(limits) or 0) < 6:
            notes.append(
                "the founding article counts 3,977 ports from 1024 to 5000; Windows uses "
                "1025-5000 (3,976), and MaxUserPort takes effect only after a reboot"
            )
    if client.cause is Cause.EPHEMERAL_PORTS and os == "linux":
        notes.append(
            "Linux searches even ports first for connect() and odd ones for bind() (since "
            "4.6): that slows the search near exhaustion, it does not change the count"
        )
    if client.cause is Cause.EPHEMERAL_PORTS:
        notes.append("ports in TIME_WAIT from earlier runs count as in use (Plan.ports_in_use)")
    soft, hard = limits.nofile_soft.value, limits.nofile_hard.value
    if (
        not plan.raise_nofile
        and os != "windows"
        and soft is not None
        and hard is not None
        and hard > soft
    ):
        notes.append(
            f"each process may raise its soft RLIMIT_NOFILE {_n(soft)} to the hard {_n(hard)}"
        )
    if not plan.loopback:
        notes.append(
            "client and server on different hosts: each side is modelled with this host's limits"
        )
    notes.extend(_backlog_notes(limits, plan, os))
    pids = limits.cgroup_pids_max.value
    procs = plan.client_processes + (plan.server_processes if plan.loopback else 0)
    if pids is not None and procs > pids:
        notes.append(f"{procs} processes exceed the cgroup's pids.max {_n(pids)}")
    return notes


def _backlog_notes(limits: HostLimits, plan: Plan, os: OsName | None) -> list[str]:
    som = limits.somaxconn.value
    if som is None:
        return []
    queue = min(plan.listen_backlog, som) if plan.listen_backlog is not None else som
    syn = limits.tcp_max_syn_backlog.value
    syn_part = f", SYN queue {_n(syn)} (tcp_max_syn_backlog)" if syn is not None else ""
    knob = "somaxconn" if os != "darwin" else "kern.ipc.somaxconn"
    return [
        f"backlog: the server absorbs a burst of about {_n(queue)} connections not yet "
        f"accepted ({knob} {_n(som)}{syn_part}); a larger burst has SYNs dropped and retried "
        "(ETIMEDOUT if it lasts): a burst limit, not a ceiling on held connections"
    ]


# --- the prediction ------------------------------------------------------------------------------


def predict(limits: HostLimits, plan: Plan) -> Prediction:
    """The client's, the server's and the overall ceiling for ``plan`` on ``limits``."""
    os = _os_name(plan.os) if plan.os else host_os(limits)
    shared: list[Bound] = []
    table = _file_table_bound(limits, plan, os)
    if table is not None:
        shared.append(table)
    shared.append(_memory_bound(limits, plan, os))
    if os == "linux" or os is None:
        ct = _conntrack_bound(limits)
        if ct is not None:
            shared.append(ct)
    tnc = _tcp_num_connections(limits)
    if tnc is not None:
        shared.append(tnc)

    client_bounds = [_port_bound(limits, plan, os)]
    cfd = _fd_bound(limits, plan, plan.client_processes, plan.fds_in_use_per_process, os)
    if cfd is not None:
        client_bounds.append(cfd)
    server_bounds: list[Bound] = []
    sfd = _fd_bound(limits, plan, plan.server_processes, plan.server_fds_in_use, os)
    if sfd is not None:
        server_bounds.append(sfd)
    client = _ceiling("client", client_bounds + shared)
    server = _ceiling("server", server_bounds + shared)
    if server.count is not None and (client.count is None or server.count < client.count):
        overall = server
    else:
        overall = client
    return Prediction(client, server, overall, tuple(_notes(limits, plan, os, client)))


def to_json(p: Prediction) -> dict[str, JsonValue]:
    """The ``prediction`` object of conncap.result/1: the overall ``count``, ``cause``,
    ``side`` and ``bounds`` (the binding side's), plus both sides and the notes."""
    return {
        "count": p.overall.count,
        "cause": str(p.overall.cause),
        "side": p.overall.side,
        "estimate": p.overall.estimate,
        "bounds": [b.to_json() for b in p.overall.bounds],
        "client": p.client.to_json(),
        "server": p.server.to_json(),
        "notes": list(p.notes),
    }


def stored(p: Prediction) -> result.Prediction:
    """The prediction as a result stores it (:func:`to_json`, typed)."""
    return result.prediction_from_json(to_json(p))


def describe(p: Prediction, plan: Plan) -> str:
    """One line: "with 1 source IP and 1 destination port the client will stop at 28,232:
    ephemeral port range 32768-60999: ..." and the next limit after it."""
    src = _plural(plan.source_ips, "source IP")
    if plan.dst_ips == 1:
        dst = _plural(plan.destinations, "destination port")
    else:
        dst = f"{_n(plan.destinations)} destinations on {_n(plan.dst_ips)} IPs"
    head = f"with {src} and {dst}"
    o = p.overall
    b = o.binding
    if o.count is None or b is None:
        reasons = "; ".join(x.detail for x in o.bounds if x.count is None)
        return f"{head} no known limit binds ({reasons or 'nothing could be read'})"
    est = " (estimate)" if b.estimate else ""
    line = f"{head} the {o.side} will stop at {_n(o.count)}{est}: {b.detail}"
    others = [
        (x.count, side, x)
        for side, c in (("client", p.client), ("server", p.server))
        for x in c.bounds
        if x.count is not None and x != b
    ]
    if others:
        count, side, nxt = min(others, key=lambda t: t[0] or 0)
        line += f"; next: {nxt.cause} at {_n(count or 0)} ({side})"
    return line
