"""What a scenario reads besides the engine's own counters, each from the system's own tools:
``ss`` inside the server's namespace (which 4-tuples the kernel holds), a worker's descriptor
table in /proc/PID/fd, and the TCP and conntrack counters of a namespace (probes.py with a
namespace reader).

The parsers are pure; the readers take the command runner or the /proc root as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from conncap import probes
from conncap.result import JsonValue

#: Runs argv inside a namespace and returns its stdout (``lambda argv: topo.run(h, argv).stdout``).
Runner = Callable[[Sequence[str]], str]


# --- ss: the 4-tuples the server's kernel holds --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conn:
    """One established TCP connection as ``ss`` shows it from the server's side."""

    local_ip: str
    local_port: int
    peer_ip: str
    peer_port: int


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not an address:port: {text!r}")
    host = host.strip("[]")
    if "%" in host:
        host = host.split("%", 1)[0]
    return host, int(port)


def parse_ss(text: str) -> list[Conn]:
    """Lines of ``ss -Htn state established``: ``Recv-Q Send-Q LOCAL PEER`` (a single state
    filter drops the State column). Lines that are not of that shape are skipped."""
    out: list[Conn] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            lip, lport = _endpoint(parts[2])
            pip, pport = _endpoint(parts[3])
        except ValueError:
            continue
        out.append(Conn(lip, lport, pip, pport))
    return out


@dataclass(frozen=True, slots=True)
class PeerView:
    """How the server's kernel tells its connections apart, for the ports it listens on."""

    connections: int
    local_ports: frozenset[int]
    per_peer_ip: dict[str, int]
    distinct_peer_ports: int
    distinct_peers: int
    """Distinct (peer IP, peer port) pairs."""
    per_local_port: dict[int, int]
    peer_port_min: int | None
    peer_port_max: int | None
    peer_ports: frozenset[int] = frozenset()
    """Every peer port number seen (not in the JSON: counts say enough)."""

    def unused(self, lo: int, hi: int) -> list[int]:
        """Ports of lo-hi that no connection comes from."""
        return [p for p in range(lo, hi + 1) if p not in self.peer_ports]

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "connections": self.connections,
            "local_ports": [*sorted(self.local_ports)],
            "per_peer_ip": self.per_peer_ip,
            "distinct_peer_ports": self.distinct_peer_ports,
            "distinct_peers": self.distinct_peers,
            "per_local_port": {str(k): v for k, v in sorted(self.per_local_port.items())},
            "peer_port_min": self.peer_port_min,
            "peer_port_max": self.peer_port_max,
        }


def peer_view(conns: Iterable[Conn], ports: Iterable[int]) -> PeerView:
    """Summarise the connections to ``ports`` (the listening ports)."""
    wanted = set(ports)
    mine = [c for c in conns if c.local_port in wanted]
    per_ip: dict[str, int] = {}
    per_port: dict[int, int] = {}
    for c in mine:
        per_ip[c.peer_ip] = per_ip.get(c.peer_ip, 0) + 1
        per_port[c.local_port] = per_port.get(c.local_port, 0) + 1
    peer_ports = {c.peer_port for c in mine}
    return PeerView(
        connections=len(mine),
        local_ports=frozenset(per_port),
        per_peer_ip=dict(sorted(per_ip.items())),
        distinct_peer_ports=len(peer_ports),
        distinct_peers=len({(c.peer_ip, c.peer_port) for c in mine}),
        per_local_port=per_port,
        peer_port_min=min(peer_ports) if peer_ports else None,
        peer_port_max=max(peer_ports) if peer_ports else None,
        peer_ports=frozenset(peer_ports),
    )


def server_peers(run_in: Runner, ports: Iterable[int]) -> PeerView:
    """``ss -Htn state established`` inside the server's namespace, summarised."""
    return peer_view(parse_ss(run_in(["ss", "-Htn", "state", "established"])), ports)


def count_state(run_in: Runner, state: str, port: int) -> int:
    """How many TCP sockets on local ``port`` are in ``state`` (``ss -Htn state STATE``)."""
    return sum(1 for c in parse_ss(run_in(["ss", "-Htn", "state", state])) if c.local_port == port)


@dataclass(frozen=True, slots=True)
class ListenQueue:
    """A listener's accept queue as ``ss -ltn`` shows it: Recv-Q is how many established
    connections wait for accept(), Send-Q the backlog it was given (after somaxconn)."""

    port: int
    queued: int
    backlog: int

    @property
    def full(self) -> bool:
        """The kernel's own test (sk_acceptq_is_full): more waiting than the backlog."""
        return self.queued > self.backlog

    def to_json(self) -> dict[str, JsonValue]:
        return {"port": self.port, "queued": self.queued, "backlog": self.backlog}


def parse_listen(text: str) -> list[ListenQueue]:
    """Lines of ``ss -Hltn``: ``LISTEN RECV-Q SEND-Q LOCAL PEER``."""
    out: list[ListenQueue] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] != "LISTEN":
            continue
        try:
            _, port = _endpoint(parts[3])
            out.append(ListenQueue(port, int(parts[1]), int(parts[2])))
        except ValueError:
            continue
    return out


def listen_queue(run_in: Runner, port: int) -> ListenQueue | None:
    """The accept queue of the listener on ``port`` (summed over SO_REUSEPORT listeners)."""
    found = [q for q in parse_listen(run_in(["ss", "-Hltn"])) if q.port == port]
    if not found:
        return None
    return ListenQueue(port, sum(q.queued for q in found), sum(q.backlog for q in found))


# --- descriptor tables ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FdTable:
    """A process's open descriptors (``ls -l /proc/PID/fd``)."""

    pid: int
    open: int
    sockets: int
    limit: int | None
    """Its soft RLIMIT_NOFILE (/proc/PID/limits), None if unreadable."""

    @property
    def full(self) -> bool:
        return self.limit is not None and self.open >= self.limit

    def to_json(self) -> dict[str, JsonValue]:
        return {"pid": self.pid, "open": self.open, "sockets": self.sockets, "limit": self.limit}


def parse_limits_nofile(text: str) -> int | None:
    """The soft "Max open files" of /proc/PID/limits."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            value = line[len("Max open files") :].split()[0]
            return None if value == "unlimited" else int(value)
    return None


def fd_table(pid: int, proc: str = "/proc") -> FdTable | None:
    """Count ``pid``'s descriptors and sockets; None when the process is gone."""
    base = f"{proc}/{pid}"
    try:
        names = os.listdir(f"{base}/fd")
    except OSError:
        return None
    sockets = 0
    for name in names:
        try:
            if os.readlink(f"{base}/fd/{name}").startswith("socket:"):
                sockets += 1
        except OSError:
            continue
    try:
        with open(f"{base}/limits", encoding="ascii") as fh:
            limit = parse_limits_nofile(fh.read())
    except (OSError, ValueError):
        limit = None
    return FdTable(pid, len(names), sockets, limit)


# --- counters of a namespace ---------------------------------------------------------------------


@dataclass
class NsCounters:
    """TCP counters (and optionally conntrack) of one namespace, read with ``reader``."""

    namespace: str
    reader: probes.Reader
    conntrack: bool = False
    errors: list[str] = field(default_factory=list)

    def read(self) -> dict[str, int | None]:
        """Current values; a counter that cannot be read is None (the message is kept)."""
        out: dict[str, int | None] = {}
        try:
            netstat = self.reader("/proc/net/netstat")
            snmp = self.reader("/proc/net/snmp")
            c = probes.parse_netstat(netstat, snmp)
            ext = probes.parse_proc_net_table(netstat, "/proc/net/netstat").get("TcpExt", {})
        except (OSError, probes.ProbeError) as exc:
            self.errors.append(str(exc))
        else:
            out["syncookies_sent"] = ext.get("SyncookiesSent")
            out["syncookies_recv"] = ext.get("SyncookiesRecv")
            out.update(
                listen_overflows=c.listen_overflows,
                listen_drops=c.listen_drops,
                syn_retrans=c.syn_retrans,
                tcp_abort_on_memory=c.abort_on_memory,
                curr_estab=c.curr_estab,
            )
        if self.conntrack:
            try:
                ct = probes.conntrack(reader=self.reader)
            except probes.ProbeError as exc:
                self.errors.append(str(exc))
            else:
                out.update(
                    conntrack_count=ct.count,
                    conntrack_max=ct.max,
                    conntrack_drops=ct.drop,
                    conntrack_insert_failed=ct.insert_failed,
                )
        return out


def delta(before: dict[str, int | None], after: dict[str, int | None], key: str) -> int | None:
    """Growth of a cumulative counter, None when either side is missing."""
    a, b = before.get(key), after.get(key)
    return None if a is None or b is None else b - a
