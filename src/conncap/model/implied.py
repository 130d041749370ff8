"""What each limit implies, in words and as a connection ceiling where it sets one: the rules
behind ``conncap limits``'s "implies" column and the ``implied`` object of conncap.limits/1.
Pure functions of :class:`~conncap.limits.HostLimits`; :mod:`conncap.limits.render` only
renders them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conncap.engine.protocol import CLIENT_WORKER_FDS
from conncap.limits._addresses import address_count
from conncap.limits._common import HostLimits, PortRange
from conncap.limits._facts import is_no_limit
from conncap.result import JsonValue

#: Kernel memory one idle loopback connection costs, both ends together (an estimate: two
#: sockets with empty buffers; ``conncap run`` measures the real figure).
KERNEL_BYTES_PER_LOOPBACK_CONN = 8 * 1024

#: Values at least this large mean "no practical limit" (systemd sets fs.file-max to LONG_MAX).
HUGE = 1 << 62


@dataclass(frozen=True, slots=True)
class Implied:
    """What one fact implies, in words; ``count`` is the connection ceiling it sets, if any."""

    text: str
    count: int | None = None

    def to_json(self) -> dict[str, JsonValue]:
        return {"text": self.text, "count": self.count}


def count_text(v: int) -> str:
    """``28232`` -> ``"28,232"``."""
    return f"{v:,}"


def fmt_bytes(n: int) -> str:
    """``1179242496`` -> ``"1.1 GiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ports_in(ranges: tuple[PortRange, ...], within: PortRange) -> int:
    """How many distinct ports of ``within`` the ranges cover (they may overlap)."""
    lo, hi = within
    covered = 0
    end = lo - 1  # last port counted so far
    for a, b in sorted(ranges):
        a, b = max(a, end + 1), min(b, hi)
        if a <= b:
            covered += b - a + 1
            end = b
    return covered


def usable_ports(h: HostLimits) -> int | None:
    """Ports connect() may pick per (source IP, destination): the range less reserved ones."""
    rng = h.port_range.value
    if rng is None:
        return None
    reserved = _ports_in(h.reserved_ports.value or (), rng)
    return rng[1] - rng[0] + 1 - reserved


def _windows_major(h: HostLimits) -> int | None:
    v = h.windows_version.value
    head = v.split(".", 1)[0] if v else ""
    return int(head) if head.isdigit() else None


def implied(h: HostLimits) -> dict[str, Implied]:
    """What each known (or no-limit) fact implies; facts that imply nothing are left out."""
    out: dict[str, Implied] = {}
    for name, fact in h.facts().items():
        rule = _RULES.get(name)
        if rule is None or not fact.applicable:
            continue
        speaks = _UNKNOWN_OK.get(name)
        unknown = fact.value is None and not is_no_limit(fact)
        if unknown and (speaks is None or not speaks(fact.reason or "")):
            continue
        got = rule(h, fact.value)
        if got is not None:
            out[name] = got
    return out


#: (host, the fact's value) -> what it implies. The value is None for "no limit", and for an
#: unknown fact only in the rules of ``_UNKNOWN_OK``.
Rule = Callable[[HostLimits, Any], Implied | None]


def _port_range(h: HostLimits, v: Any) -> Implied:
    lo, hi = v
    n = usable_ports(h)
    assert n is not None
    skipped = hi - lo + 1 - n
    extra = f" ({count_text(skipped)} reserved ports excluded)" if skipped else ""
    return Implied(f"{count_text(n)} connections per (source IP, destination ip:port){extra}", n)


def _port_range_v6(h: HostLimits, v: Any) -> Implied:
    lo, hi = v
    return Implied(
        f"{count_text(hi - lo + 1)} connections per IPv6 (source, destination)", hi - lo + 1
    )


def _port_range_high(h: HostLimits, v: Any) -> Implied:
    lo, hi = v
    return Implied(f"{count_text(hi - lo + 1)} ports for sockets that ask for IP_PORTRANGE_HIGH")


def _reserved(h: HostLimits, v: Any) -> Implied:
    rng = h.port_range.value
    if not v:
        return Implied("none: connect() may use the whole range")
    if rng is None:
        return Implied(f"{count_text(_ports_in(v, (1, 65535)))} ports never picked by connect()")
    return Implied(f"{count_text(_ports_in(v, rng))} ports of the ephemeral range never picked")


def _max_user_port(h: HostLimits, v: Any) -> Implied | None:
    major = _windows_major(h)
    if major is not None and major >= 6:
        return Implied("not used since Vista: the netsh dynamic port range applies")
    if v is None:
        return None
    return Implied(f"before Vista connect() uses ports 1025-{v}")


def _timed_wait(h: HostLimits, v: Any) -> Implied:
    ports = usable_ports(h)
    text = f"a closed connection keeps its port {v} s in TIME_WAIT"
    if ports is not None and v > 0:
        text += f": ≈ {count_text(ports // v)} new connections/s per (source IP, destination)"
    return Implied(text)


def _tw_reuse(h: HostLimits, v: Any) -> Implied:
    return Implied(
        {
            0: "off: a port in TIME_WAIT is not reused for new outgoing connections",
            1: "on: new outgoing connections may reuse ports in TIME_WAIT",
            2: "loopback only: TIME_WAIT ports are reused towards 127.0.0.0/8 and ::1",
        }.get(v, f"unexpected value {v}")
    )


def _time_wait_now(h: HostLimits, v: Any) -> Implied:
    from conncap.model.churn import time_wait_length

    tw = time_wait_length(h)
    length = f" for {tw.seconds:g} s" if tw.seconds is not None else ""
    return Implied(
        f"{count_text(v)} sockets in TIME_WAIT: a client that closed first keeps each port{length} "
        "(`conncap explain time-wait`)"
    )


def _tw_reuse_delay(h: HostLimits, v: Any) -> Implied | None:
    if v is None:
        return Implied("no such sysctl: tcp_tw_reuse waits up to a fixed 1 s")
    return Implied(f"tcp_tw_reuse takes a TIME_WAIT port back after {count_text(v)} ms")


def _timestamps(h: HostLimits, v: Any) -> Implied:
    if v:
        return Implied("on: tcp_tw_reuse can work (it needs TCP timestamps)")
    return Implied("off: tcp_tw_reuse cannot reuse TIME_WAIT ports without timestamps")


def _msl(h: HostLimits, v: Any) -> Implied:
    return Implied(f"TIME_WAIT lasts 2 × MSL = {2 * v / 1000:g} s")


def _fin_timeout(h: HostLimits, v: Any) -> Implied:
    return Implied(f"orphaned FIN-WAIT-2 kept {v} s (TIME_WAIT is fixed at 60 s on Linux)")


def _tw_buckets(h: HostLimits, v: Any) -> Implied:
    return Implied(f"at most {count_text(v)} sockets in TIME_WAIT; more are destroyed at once")


def _sources(h: HostLimits, v: Any) -> Implied:
    ips = address_count(v)
    ports = usable_ports(h)
    per = f"{count_text(ports)} more ports" if ports is not None else "its own port range"
    return Implied(f"{count_text(ips)} source IPs; each brings {per} per destination")


def _nofile_soft(h: HostLimits, v: Any) -> Implied:
    if v is None:
        return Implied("no descriptor limit from RLIMIT_NOFILE")
    n = max(0, v - CLIENT_WORKER_FDS)
    return Implied(
        f"≈ {count_text(n)} connections per process (one descriptor each, less the "
        f"{CLIENT_WORKER_FDS} a conncap worker keeps; a loopback pair costs two)",
        n,
    )


def _nofile_hard(h: HostLimits, v: Any) -> Implied:
    if v is None:
        cap = h.nofile_max.value
        tail = f": {count_text(cap)} (per-process ceiling) still applies" if cap else ""
        return Implied(f"no hard limit{tail}")
    return Implied(f"any process may raise its soft limit up to {count_text(v)}")


def _can_raise(h: HostLimits, v: Any) -> Implied:
    if v:
        cap = h.nofile_max.value
        return Implied(f"yes, up to {count_text(cap)}" if cap else "yes")
    why = "not root" if h.os == "darwin" else "no CAP_SYS_RESOURCE"
    return Implied(f"no ({why}): more connections need more processes")


def _nofile_max(h: HostLimits, v: Any) -> Implied:
    return Implied(f"no process can hold more than {count_text(v)} descriptors")


def _launchctl(h: HostLimits, v: Any) -> Implied:
    return Implied("limits launchd gives the processes it starts (soft / hard)")


def _fds_open(h: HostLimits, v: Any) -> Implied:
    return Implied("descriptors this process held when it read the limits")


def _processes(what: str) -> Rule:
    def rule(h: HostLimits, v: Any) -> Implied:
        if v is None:
            return Implied(f"no limit on {what}")
        return Implied(f"{count_text(v)} {what}: the most processes to spread connections over")

    return rule


def _somaxconn(h: HostLimits, v: Any) -> Implied:
    return Implied(
        f"listen() backlog capped at {count_text(v)}: "
        "the burst a listener absorbs, not how many it holds"
    )


def _syn_backlog(h: HostLimits, v: Any) -> Implied:
    return Implied(f"{count_text(v)} half-open (SYN received) per listener before SYN cookies")


def _files_max(h: HostLimits, v: Any) -> Implied:
    if v >= HUGE:
        return Implied("no practical system-wide descriptor limit")
    return Implied(f"{count_text(v)} descriptors system-wide, all processes together", v)


def _files_open(h: HostLimits, v: Any) -> Implied:
    cap = h.files_max.value
    if cap is None or cap >= HUGE:
        return Implied("descriptors open system-wide now")
    return Implied(f"{count_text(cap - v)} left before the system file table is full")


def _mem_total(h: HostLimits, v: Any) -> Implied:
    return Implied("physical memory")


def _per_conn(avail: int) -> int:
    return max(0, avail) // KERNEL_BYTES_PER_LOOPBACK_CONN


def _mem_available(h: HostLimits, v: Any) -> Implied:
    n = _per_conn(v)
    return Implied(
        f"≈ {count_text(n)} connections at ~8 KB kernel memory per loopback connection (estimate)",
        n,
    )


def _cgroup_mem(h: HostLimits, v: Any) -> Implied:
    if v is None:
        return Implied("no cgroup memory limit: available memory is the bound")
    used = h.cgroup_mem_current.value or 0
    n = _per_conn(v - used)
    text = f"≈ {count_text(n)} connections at ~8 KB each before this cgroup's limit (estimate)"
    avail = h.mem_available.value
    if avail is not None and v - used < avail:
        text += "; binds before available memory"
    return Implied(text, n)


def _cgroup_current(h: HostLimits, v: Any) -> Implied:
    return Implied("memory charged to this cgroup now")


def _tcp_num_connections(h: HostLimits, v: Any) -> Implied:
    return Implied(f"at most {count_text(v)} TCP connections system-wide", v)


def _maxsockets(h: HostLimits, v: Any) -> Implied:
    return Implied(f"{count_text(v)} sockets system-wide: a loopback connection uses two")


def _tcp_mem(h: HostLimits, v: Any) -> Implied:
    _, pressure, hi = v
    return Implied(
        f"buffers of all TCP sockets: the kernel squeezes them above {fmt_bytes(pressure)} "
        f"and refuses more above {fmt_bytes(hi)}; idle connections hold almost none"
    )


def _tcp_buf(direction: str) -> Rule:
    def rule(h: HostLimits, v: Any) -> Implied:
        return Implied(f"per-socket {direction} buffer; it fills only with data in flight")

    return rule


def _conntrack_max(h: HostLimits, v: Any) -> Implied:
    if v is None:
        return Implied("no conntrack limit: nf_conntrack is not loaded")
    return Implied(
        f"{count_text(v)} tracked flows system-wide (NAT, stateful firewall): one per "
        "connection through them",
        v,
    )


def _conntrack_count(h: HostLimits, v: Any) -> Implied | None:
    cap = h.conntrack_max.value
    return Implied(f"{count_text(cap - v)} entries left") if cap is not None else None


def _sockstat(h: HostLimits, v: Any) -> Implied:
    return Implied("`ss -s` shows the same counts")


def _tcp6(h: HostLimits, v: Any) -> Implied:
    return Implied("IPv6 TCP sockets now")


def _cpus(h: HostLimits, v: Any) -> Implied:
    return Implied(f"{v} CPUs to spread client and server processes over")


def _page_size(h: HostLimits, v: Any) -> Implied:
    return Implied("the kernel counts tcp_mem and socket memory in pages of this size")


_RULES: dict[str, Rule] = {
    "port_range": _port_range,
    "port_range_v6": _port_range_v6,
    "port_range_high": _port_range_high,
    "reserved_ports": _reserved,
    "max_user_port": _max_user_port,
    "tcp_timed_wait_delay": _timed_wait,
    "tcp_num_connections": _tcp_num_connections,
    "tcp_tw_reuse": _tw_reuse,
    "tcp_max_tw_buckets": _tw_buckets,
    "tcp_fin_timeout": _fin_timeout,
    "extra.tcp_msl_ms": _msl,
    "extra.time_wait_now": _time_wait_now,
    "extra.tcp_tw_reuse_delay_ms": _tw_reuse_delay,
    "extra.tcp_timestamps": _timestamps,
    "source_addresses": _sources,
    "nofile_soft": _nofile_soft,
    "nofile_hard": _nofile_hard,
    "nofile_can_raise": _can_raise,
    "nofile_max": _nofile_max,
    "launchctl_maxfiles": _launchctl,
    "extra.fds_open": _fds_open,
    "nproc_soft": _processes("processes per user (threads count too)"),
    "nproc_hard": _processes("processes per user, hard"),
    "cgroup_pids_max": _processes("processes and threads in this cgroup"),
    "extra.maxproc": _processes("processes system-wide"),
    "extra.maxprocperuid": _processes("processes per user"),
    "somaxconn": _somaxconn,
    "tcp_max_syn_backlog": _syn_backlog,
    "files_max": _files_max,
    "files_open": _files_open,
    "mem_total": _mem_total,
    "mem_available": _mem_available,
    "cgroup_mem_limit": _cgroup_mem,
    "cgroup_mem_current": _cgroup_current,
    "extra.maxsockets": _maxsockets,
    "tcp_mem": _tcp_mem,
    "tcp_rmem": _tcp_buf("receive"),
    "tcp_wmem": _tcp_buf("send"),
    "conntrack_max": _conntrack_max,
    "conntrack_count": _conntrack_count,
    "sockstat": _sockstat,
    "extra.tcp6_inuse": _tcp6,
    "cpu_count": _cpus,
    "extra.page_size": _page_size,
}

#: Rules that also speak for an unknown value whose reason is itself informative.
_UNKNOWN_OK: dict[str, Callable[[str], bool]] = {
    "max_user_port": lambda reason: True,
    "conntrack_max": lambda reason: reason == "nf_conntrack not loaded",
    "extra.tcp_tw_reuse_delay_ms": lambda reason: reason.startswith("no such sysctl"),
}
