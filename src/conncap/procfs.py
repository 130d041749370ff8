"""The one owner of /proc's text formats: pure parsers, text in, typed values out, no I/O.

The limits readers (``conncap limits``), the engine (its port slices), the probes (the run's
samples) and the namespace scenarios all read /proc files through these. A malformed file raises
:class:`ProbeError` (a ``ValueError`` too, so a limits reader records the fact as unknown) naming
the file and the defect.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from conncap.errors import ConncapError

#: An inclusive (low, high) range of ports.
PortRange = tuple[int, int]

PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"
#: /proc/net/tcp and /proc/net/tcp6 (this network namespace's TCP sockets).
NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
#: The LISTEN state in /proc/net/tcp's ``st`` column.
TCP_LISTEN = "0A"


class ProbeError(ConncapError, ValueError):
    """A /proc file could not be read or is not in the expected format (message says which)."""


def _shown(raw: str, width: int = 40) -> str:
    text = raw.strip()
    return repr(text if len(text) <= width else text[: width - 1] + "…")


# --- ports ------------------------------------------------------------------------------------


def parse_listen_ports(raw: str) -> frozenset[int]:
    """Local ports of the listening sockets in ``/proc/net/tcp`` (or tcp6) text: the rows
    whose ``st`` is 0A; ``local_address`` is ``HEXIP:HEXPORT``."""
    out: set[int] = set()
    for line in raw.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 4:
            continue
        if cols[3] != TCP_LISTEN:
            continue
        _, _, port = cols[1].rpartition(":")
        try:
            out.add(int(port, 16))
        except ValueError:
            raise ProbeError(f"/proc/net/tcp: bad local address {_shown(cols[1])}") from None
    return frozenset(out)


def parse_port_range(raw: str) -> PortRange:
    """``ip_local_port_range``: two whitespace-separated ports, e.g. ``32768\t60999``."""
    try:
        lo, hi = (int(t) for t in raw.split())
    except ValueError:
        raise ProbeError(f"expected two port numbers, got {_shown(raw)}") from None
    if not (0 < lo <= hi <= 65535):
        raise ProbeError(f"not a port range (1-65535, low <= high): {_shown(raw)}")
    return (lo, hi)


def parse_reserved_ports(raw: str) -> tuple[PortRange, ...]:
    """``ip_local_reserved_ports``: "" or e.g. ``8080,9000-9100``, as inclusive ranges."""
    text = raw.strip()
    if not text:
        return ()
    out: list[PortRange] = []
    for part in text.split(","):
        lo_s, _, hi_s = part.strip().partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if hi_s else lo
        except ValueError:
            raise ProbeError(
                f"expected ports or ranges like 8080,9000-9100, got {_shown(raw)}"
            ) from None
        if not 0 < lo <= hi <= 65535:
            raise ProbeError(f"not a port range: {part.strip()!r}")
        out.append((lo, hi))
    return tuple(out)


def expand_ports(ranges: Iterable[PortRange]) -> frozenset[int]:
    """Every port of ``ranges``."""
    return frozenset(p for lo, hi in ranges for p in range(lo, hi + 1))


def parse_tcp6_inuse(raw: str, path: str = "/proc/net/sockstat6") -> int:
    """``TCP6: inuse N`` of /proc/net/sockstat6."""
    for line in raw.splitlines():
        if line.startswith("TCP6:"):
            words = line.split()
            if len(words) >= 3 and words[1] == "inuse" and words[2].isdigit():
                return int(words[2])
    raise ProbeError(f"{path}: malformed (no 'TCP6: inuse' line in {_shown(raw, 60)})")


# --- sockets, memory, counters -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SockStat:
    """Current socket counts (Linux /proc/net/sockstat; ``ss -s`` shows the same)."""

    tcp_inuse: int
    tcp_orphan: int
    tcp_tw: int
    tcp_alloc: int
    tcp_mem_pages: int
    sockets_used: int


@dataclass(frozen=True, slots=True)
class SlabCache:
    """One line of /proc/slabinfo (version 2.1)."""

    name: str
    active_objs: int
    num_objs: int
    objsize: int
    objperslab: int
    pagesperslab: int
    num_slabs: int

    def bytes_held(self, page_size: int) -> int:
        """Memory the cache holds (its slabs' pages, free slots included)."""
        return self.num_slabs * self.pagesperslab * page_size


def parse_slabinfo(
    text: str, path: str = "/proc/slabinfo", names: Container[str] | None = None
) -> dict[str, SlabCache]:
    """Parse /proc/slabinfo (version 2.x, SLUB or SLAB); only the caches in ``names`` if given
    (parsing all ~250 lines costs about 1 ms of Python, the wanted ones a fifth of it)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("slabinfo - version: 2."):
        first = lines[0][:40] if lines else "an empty file"
        raise ProbeError(f"{path}: malformed (expected 'slabinfo - version: 2.x', got {first!r})")
    caches: dict[str, SlabCache] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        if names is not None and line.split(None, 1)[0] not in names:
            continue
        parts = line.split(":")
        head = parts[0].split()
        slabdata = parts[2].split() if len(parts) >= 3 else []
        if len(head) != 6 or len(slabdata) < 3 or slabdata[0] != "slabdata":
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}")
        try:
            caches[head[0]] = SlabCache(
                name=head[0],
                active_objs=int(head[1]),
                num_objs=int(head[2]),
                objsize=int(head[3]),
                objperslab=int(head[4]),
                pagesperslab=int(head[5]),
                num_slabs=int(slabdata[2]),
            )
        except ValueError:
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}") from None
    if not caches and names is None:
        raise ProbeError(f"{path}: malformed (no cache lines)")
    return caches


def parse_meminfo(text: str, path: str = "/proc/meminfo") -> dict[str, int]:
    """Parse /proc/meminfo into bytes (``kB`` values x 1024; counts such as HugePages_Total
    stay counts)."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields:
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}")
        try:
            value = int(fields[0])
        except ValueError:
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}") from None
        unit = fields[1] if len(fields) > 1 else ""
        out[key.strip()] = value * 1024 if unit == "kB" else value
    return out


def _key_values(line: str, path: str) -> dict[str, int]:
    """``TCP: inuse 3 orphan 0 tw 1 ...`` -> {"inuse": 3, ...}."""
    words = line.split(":", 1)[1].split()
    if len(words) % 2:
        raise ProbeError(f"{path}: malformed line {line[:60]!r}")
    out: dict[str, int] = {}
    for k, v in zip(words[::2], words[1::2], strict=True):
        try:
            out[k] = int(v)
        except ValueError:
            raise ProbeError(f"{path}: malformed line {line[:60]!r}") from None
    return out


def parse_sockstat(text: str, path: str = "/proc/net/sockstat") -> SockStat:
    """Parse /proc/net/sockstat (``mem`` stays in pages, as the kernel prints it)."""
    sockets: dict[str, int] | None = None
    tcp: dict[str, int] | None = None
    for line in text.splitlines():
        if line.startswith("sockets:"):
            sockets = _key_values(line, path)
        elif line.startswith("TCP:"):
            tcp = _key_values(line, path)
    need = ("inuse", "orphan", "tw", "alloc", "mem")
    if tcp is None or any(k not in tcp for k in need):
        raise ProbeError(f"{path}: malformed (no complete 'TCP: inuse … mem …' line)")
    return SockStat(
        tcp_inuse=tcp["inuse"],
        tcp_orphan=tcp["orphan"],
        tcp_tw=tcp["tw"],
        tcp_alloc=tcp["alloc"],
        tcp_mem_pages=tcp["mem"],
        sockets_used=(sockets or {}).get("used", 0),
    )


def parse_proc_net_table(text: str, path: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/netstat or /proc/net/snmp: pairs of ``Prefix: names`` / ``Prefix: values``
    lines -> {prefix: {name: value}}."""
    out: dict[str, dict[str, int]] = {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) % 2:
        raise ProbeError(f"{path}: malformed (an odd number of lines: a header without values)")
    for names_line, values_line in zip(lines[::2], lines[1::2], strict=True):
        prefix, _, names = names_line.partition(":")
        vprefix, _, values = values_line.partition(":")
        keys, vals = names.split(), values.split()
        if prefix != vprefix or len(keys) != len(vals):
            raise ProbeError(f"{path}: malformed ({prefix!r} header and values do not match)")
        try:
            out[prefix] = {k: int(v) for k, v in zip(keys, vals, strict=True)}
        except ValueError:
            raise ProbeError(f"{path}: malformed ({prefix!r} has a non-integer value)") from None
    return out


@dataclass(frozen=True, slots=True)
class NetCounters:
    """TCP counters of one network namespace (cumulative since boot / namespace creation).

    A field is None when this kernel does not have that counter.
    """

    listen_overflows: int | None  # TcpExt ListenOverflows: accept queue full, SYN/ACK dropped
    listen_drops: int | None  # TcpExt ListenDrops: every drop at a listener (overflows incl.)
    syn_retrans: int | None  # TcpExt TCPSynRetrans: SYN and SYN/ACK retransmissions
    tcp_timeouts: int | None  # TcpExt TCPTimeouts: retransmission timer expiries
    abort_on_memory: int | None  # TcpExt TCPAbortOnMemory: resets for lack of socket memory
    active_opens: int | None  # Tcp ActiveOpens: connect() SYNs sent
    passive_opens: int | None  # Tcp PassiveOpens: SYNs answered by a listener
    attempt_fails: int | None  # Tcp AttemptFails
    estab_resets: int | None  # Tcp EstabResets
    curr_estab: int | None  # Tcp CurrEstab: a gauge, ESTABLISHED + CLOSE_WAIT now
    retrans_segs: int | None  # Tcp RetransSegs


def parse_netstat(netstat: str, snmp: str, root: str = "/proc") -> NetCounters:
    """Combine /proc/net/netstat (TcpExt) and /proc/net/snmp (Tcp)."""
    ext = parse_proc_net_table(netstat, f"{root}/net/netstat").get("TcpExt")
    tcp = parse_proc_net_table(snmp, f"{root}/net/snmp").get("Tcp")
    if ext is None:
        raise ProbeError(f"{root}/net/netstat: malformed (no TcpExt section)")
    if tcp is None:
        raise ProbeError(f"{root}/net/snmp: malformed (no Tcp section)")
    return NetCounters(
        listen_overflows=ext.get("ListenOverflows"),
        listen_drops=ext.get("ListenDrops"),
        syn_retrans=ext.get("TCPSynRetrans"),
        tcp_timeouts=ext.get("TCPTimeouts"),
        abort_on_memory=ext.get("TCPAbortOnMemory"),
        active_opens=tcp.get("ActiveOpens"),
        passive_opens=tcp.get("PassiveOpens"),
        attempt_fails=tcp.get("AttemptFails"),
        estab_resets=tcp.get("EstabResets"),
        curr_estab=tcp.get("CurrEstab"),
        retrans_segs=tcp.get("RetransSegs"),
    )


def parse_nf_conntrack_stat(text: str, path: str = "/proc/net/stat/nf_conntrack") -> dict[str, int]:
    """Sum the per-CPU rows (hexadecimal) of /proc/net/stat/nf_conntrack by column name."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ProbeError(f"{path}: malformed (empty)")
    names = lines[0].split()
    totals = dict.fromkeys(names, 0)
    for line in lines[1:]:
        values = line.split()
        if len(values) != len(names):
            raise ProbeError(f"{path}: malformed (a row has {len(values)} of {len(names)} columns)")
        try:
            for name, value in zip(names, values, strict=True):
                totals[name] += int(value, 16)
        except ValueError:
            raise ProbeError(f"{path}: malformed (a non-hexadecimal value)") from None
    return totals
