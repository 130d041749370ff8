"""The error catalogue: what each errno / Winsock code means for opening and accepting TCP
connections, which limit it points at, and how to raise that limit. Pure data, no I/O.

``lookup(code)`` finds an :class:`Entry` by name or number, ``classify(number, op=...)``
resolves codes whose cause depends on the call (EADDRINUSE on connect() is the port pool, on
listen() a taken port), and ``advice(cause, os)`` is the one place every command gets "how to
raise it" from. ``Cause`` ids and ``cause_of_errno`` are stable API used by the engine.
"""

from __future__ import annotations

import errno as _errno
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeAlias

from conncap.errors import UsageError

#: A JSON value: :data:`conncap.result.JsonValue`, named here because ``conncap.result``
#: imports this module.
_JsonValue: TypeAlias = (
    "bool | int | float | str | list[_JsonValue] | Mapping[str, _JsonValue] | None"
)


class Cause(StrEnum):
    """Why a connection could not be opened or accepted; used in every command and JSON."""

    EPHEMERAL_PORTS = "ephemeral-ports"
    #: Ephemeral ports held in TIME_WAIT by connections this host closed first (churn).
    TIME_WAIT = "time-wait"
    FILE_DESCRIPTORS = "file-descriptors"
    SYSTEM_FILE_TABLE = "system-file-table"
    MEMORY = "memory"
    SERVER_BACKLOG = "server-backlog"
    SERVER_REFUSED = "server-refused"
    SERVER_CLOSED = "server-closed"
    CONNTRACK = "conntrack"
    TIMEOUT = "timeout"
    NETWORK = "network"
    PERMISSION = "permission"
    #: A packet filter (nftables, iptables, a cloud security group, Windows Firewall) drops or
    #: rejects the connection in front of a listening server.
    FIREWALL = "firewall"
    UNKNOWN = "unknown"


_BY_ERRNO: dict[int, Cause] = {
    _errno.EADDRNOTAVAIL: Cause.EPHEMERAL_PORTS,
    _errno.EADDRINUSE: Cause.EPHEMERAL_PORTS,
    _errno.EMFILE: Cause.FILE_DESCRIPTORS,
    _errno.ENFILE: Cause.SYSTEM_FILE_TABLE,
    _errno.ENOBUFS: Cause.MEMORY,
    _errno.ENOMEM: Cause.MEMORY,
    _errno.ECONNREFUSED: Cause.SERVER_REFUSED,
    _errno.ETIMEDOUT: Cause.TIMEOUT,
    _errno.ECONNRESET: Cause.SERVER_CLOSED,
    _errno.EPIPE: Cause.SERVER_CLOSED,
    _errno.EHOSTUNREACH: Cause.NETWORK,
    _errno.ENETUNREACH: Cause.NETWORK,
    _errno.EACCES: Cause.PERMISSION,
    _errno.EPERM: Cause.PERMISSION,
}


def cause_of_errno(number: int) -> Cause:
    """The cause id for an errno number of this OS (Cause.UNKNOWN if not catalogued)."""
    return _BY_ERRNO.get(number, Cause.UNKNOWN)


# --- types ------------------------------------------------------------------------------------

Side = Literal["client", "server", "network"]
Op = Literal["connect", "accept", "bind", "listen", "socket", "send", "recv"]
OsKey = Literal["linux", "macos", "windows"]

#: Whose limit each cause is: the side a ceiling with that cause is attributed to.
CAUSE_SIDE: dict[Cause, Side] = {
    Cause.EPHEMERAL_PORTS: "client",
    Cause.FILE_DESCRIPTORS: "client",
    Cause.SYSTEM_FILE_TABLE: "client",
    Cause.MEMORY: "client",
    Cause.PERMISSION: "client",
    Cause.SERVER_BACKLOG: "server",
    Cause.SERVER_REFUSED: "server",
    Cause.SERVER_CLOSED: "server",
    Cause.CONNTRACK: "network",
    Cause.TIMEOUT: "network",
    Cause.NETWORK: "network",
    Cause.FIREWALL: "network",
}

#: Causes a client's own kernel names by errno on connect(): the client's side (ports,
#: descriptors, file table, memory, permission) and an unreachable network. The others
#: (refused, reset, timed out) are symptoms that the server side or the network explains.
CLIENT_REPORTED: frozenset[Cause] = frozenset(
    {c for c, side in CAUSE_SIDE.items() if side == "client"} | {Cause.NETWORK}
)

#: Resource causes that, returned by accept(), are the server's own limit.
SERVER_RESOURCE_CAUSES: tuple[Cause, ...] = (
    Cause.FILE_DESCRIPTORS,
    Cause.SYSTEM_FILE_TABLE,
    Cause.MEMORY,
)


def cause_side(cause: Cause | str) -> Side | None:
    """Whose limit ``cause`` is; None for unknown."""
    try:
        return CAUSE_SIDE.get(Cause(cause))
    except ValueError:
        return None


#: The calls :func:`classify` knows; "timeout" is the engine's own deadline.
OPS: tuple[str, ...] = ("connect", "accept", "bind", "listen", "socket", "send", "recv")

#: Winsock error numbers are WSABASEERR (10000) + n; POSIX errnos are all far below.
WSABASEERR = 10000

#: errno numbers of the catalogued names on Linux (x86, arm, generic: not alpha/mips/sparc/
#: parisc) and on macOS (xnu bsd/sys/errno.h), to read results recorded on the other OS.
LINUX_ERRNO: dict[str, int] = {
    "EPERM": 1, "EACCES": 13, "EAGAIN": 11, "ENOMEM": 12, "ENFILE": 23, "EMFILE": 24,
    "EPIPE": 32, "EADDRINUSE": 98, "EADDRNOTAVAIL": 99, "ENETUNREACH": 101,
    "ECONNABORTED": 103, "ECONNRESET": 104, "ENOBUFS": 105, "ETIMEDOUT": 110,
    "ECONNREFUSED": 111, "EHOSTUNREACH": 113,
}  # fmt: skip
DARWIN_ERRNO: dict[str, int] = {
    "EPERM": 1, "EACCES": 13, "EAGAIN": 35, "ENOMEM": 12, "ENFILE": 23, "EMFILE": 24,
    "EPIPE": 32, "EADDRINUSE": 48, "EADDRNOTAVAIL": 49, "ENETUNREACH": 51,
    "ECONNABORTED": 53, "ECONNRESET": 54, "ENOBUFS": 55, "ETIMEDOUT": 60,
    "ECONNREFUSED": 61, "EHOSTUNREACH": 65,
}  # fmt: skip

#: Other spellings of a catalogued name (same number on Linux and macOS).
_ALIASES: dict[str, str] = {"EWOULDBLOCK": "EAGAIN", "WSAEWOULDBLOCK": "EAGAIN"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One error code a user meets when opening or accepting TCP connections."""

    name: str
    numbers: tuple[int, ...]
    platform: Literal["posix", "windows"]
    cause: Cause
    side: Side
    meaning: str
    when: str
    knob: str
    raise_linux: tuple[str, ...]
    raise_macos: tuple[str, ...]
    raise_windows: tuple[str, ...]
    windows_equivalent: str = ""
    posix_equivalent: str = ""
    note: str = ""
    #: Calls whose cause differs from ``cause`` (e.g. EADDRINUSE on listen()).
    by_op: tuple[tuple[str, Cause], ...] = ()

    def cause_for(self, op: str) -> Cause:
        """The cause of this code when ``op`` (connect, accept, bind, listen, ...) returned it."""
        return dict(self.by_op).get(op, self.cause)

    def to_json(self) -> dict[str, _JsonValue]:
        return {
            "name": self.name,
            "numbers": list(self.numbers),
            "platform": self.platform,
            "cause": str(self.cause),
            "side": self.side,
            "meaning": self.meaning,
            "when": self.when,
            "knob": self.knob,
            "raise": {
                "linux": list(self.raise_linux),
                "macos": list(self.raise_macos),
                "windows": list(self.raise_windows),
            },
            "windows_equivalent": self.windows_equivalent,
            "posix_equivalent": self.posix_equivalent,
            "note": self.note,
            "by_op": {op: str(c) for op, c in self.by_op},
        }


@dataclass(frozen=True, slots=True)
class Advice:
    """How to raise the limit behind a cause on one OS: the knob, exact commands (which also
    persist the change), commands that check it, and the line a Windows user needs."""

    cause: Cause
    os: OsKey
    knob: str
    commands: tuple[str, ...]
    windows: str
    checks: tuple[str, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, _JsonValue]:
        return {
            "cause": str(self.cause),
            "os": self.os,
            "knob": self.knob,
            "commands": list(self.commands),
            "checks": list(self.checks),
            "windows": self.windows,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class _Fix:
    knob: str
    #: The knob's name on each OS, where it has one (Advice.knob); ``knob`` describes it.
    names: tuple[str, str, str] = ("", "", "")
    linux: tuple[str, ...] = ()
    macos: tuple[str, ...] = ()
    windows: tuple[str, ...] = ()
    windows_line: str = ""
    checks_linux: tuple[str, ...] = ()
    checks_macos: tuple[str, ...] = ()
    checks_windows: tuple[str, ...] = ()
    note: str = ""


# --- how to raise each limit (one table, every command uses it) ------------------------------

_CONF = "/etc/sysctl.d/60-conncap.conf"
_TCPIP = r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters"


def _persist(line: str) -> str:
    return f"echo '{line}' >> {_CONF} && sysctl --system"


_FIXES: dict[Cause, _Fix] = {
    Cause.EPHEMERAL_PORTS: _Fix(
        knob="the ephemeral port range (net.ipv4.ip_local_port_range; macOS "
        "net.inet.ip.portrange.first/last; Windows dynamicport)",
        names=(
            "net.ipv4.ip_local_port_range",
            "net.inet.ip.portrange.first/last",
            "the TCP dynamic port range (netsh; MaxUserPort before Vista)",
        ),
        linux=(
            'sysctl -w net.ipv4.ip_local_port_range="1024 65535"',
            _persist("net.ipv4.ip_local_port_range = 1024 65535"),
        ),
        macos=(
            "sudo sysctl -w net.inet.ip.portrange.first=1024",
            "sudo sysctl -w net.inet.ip.portrange.last=65535",
            "echo 'net.inet.ip.portrange.first=1024' | sudo tee -a /etc/sysctl.conf",
            "echo 'net.inet.ip.portrange.last=65535' | sudo tee -a /etc/sysctl.conf",
        ),
        windows=(
            "netsh int ipv4 set dynamicport tcp start=1025 num=64511",
            "netsh int ipv6 set dynamicport tcp start=1025 num=64511",
            f"reg add {_TCPIP} /v MaxUserPort /t REG_DWORD /d 65534 /f",
            f"reg add {_TCPIP} /v TcpTimedWaitDelay /t REG_DWORD /d 30 /f",
        ),
        windows_line="netsh int ipv4 set dynamicport tcp start=1025 num=64511 (and ipv6) on "
        "Vista / Server 2008 and later; before them the REG_DWORD MaxUserPort (up to 65534) "
        f"under {_TCPIP}, honoured only after a reboot",
        checks_linux=(
            "sysctl net.ipv4.ip_local_port_range net.ipv4.ip_local_reserved_ports",
            "ss -s",
        ),
        checks_macos=("sysctl net.inet.ip.portrange.first net.inet.ip.portrange.last",),
        checks_windows=("netsh int ipv4 show dynamicport tcp",),
        note="more source IPs (bind each socket to one; on Linux with IP_BIND_ADDRESS_NO_PORT) "
        "or more destination ports multiply the pool; ports in TIME_WAIT count as used "
        "(net.ipv4.tcp_tw_reuse=1 lets connect() reuse them on Linux)",
    ),
    Cause.TIME_WAIT: _Fix(
        knob="ports held in TIME_WAIT by connections this host closed first: how often "
        "connections are opened and closed, who closes first, the pools of ports, and how long "
        "TIME_WAIT lasts (Linux a fixed 60 s; Windows TcpTimedWaitDelay; macOS 2 × "
        "net.inet.tcp.msl)",
        names=(
            "TIME_WAIT (fixed 60 s): connection reuse, net.ipv4.ip_local_port_range, "
            "net.ipv4.tcp_tw_reuse",
            "TIME_WAIT (2 × net.inet.tcp.msl): connection reuse, net.inet.ip.portrange",
            "TIME_WAIT (TcpTimedWaitDelay): connection reuse, the dynamic port range",
        ),
        linux=(
            'sysctl -w net.ipv4.ip_local_port_range="1024 65535"',
            "sysctl -w net.ipv4.tcp_tw_reuse=1",
            "sysctl -w net.ipv4.tcp_timestamps=1",
            _persist("net.ipv4.ip_local_port_range = 1024 65535"),
            _persist("net.ipv4.tcp_tw_reuse = 1"),
        ),
        macos=(
            "sudo sysctl -w net.inet.ip.portrange.first=1024",
            "sudo sysctl -w net.inet.tcp.msl=5000",
            "echo 'net.inet.ip.portrange.first=1024' | sudo tee -a /etc/sysctl.conf",
        ),
        windows=(
            "netsh int ipv4 set dynamicport tcp start=1025 num=64511",
            "netsh int ipv6 set dynamicport tcp start=1025 num=64511",
            f"reg add {_TCPIP} /v TcpTimedWaitDelay /t REG_DWORD /d 30 /f",
        ),
        windows_line="reuse connections first; then a wider dynamic port range (netsh int "
        "ipv4|ipv6 set dynamicport tcp) and TcpTimedWaitDelay (REG_DWORD, seconds, 30-300; "
        "default 120, 240 before Server 2003; after a reboot); event 4227 says a local port was "
        "reused too soon towards the same remote endpoint, event 4231 that the port space is "
        "exhausted",
        checks_linux=(
            "ss -s",
            "ss -tan state time-wait | wc -l",
            "cat /proc/net/sockstat",
            "sysctl net.ipv4.tcp_tw_reuse net.ipv4.tcp_timestamps net.ipv4.tcp_max_tw_buckets",
        ),
        checks_macos=("netstat -an -p tcp | grep -c TIME_WAIT", "sysctl net.inet.tcp.msl"),
        checks_windows=(
            'netstat -an -p tcp | find /c "TIME_WAIT"',
            f"reg query {_TCPIP} /v TcpTimedWaitDelay",
        ),
        note="the sustainable rate of new connections is ports × pools ÷ TIME_WAIT (800 ports "
        "÷ 60 s = 13.3/s); fixes in this order: (1) keep connections open and reuse them "
        "(HTTP keep-alive, a connection pool): no close, no TIME_WAIT; (2) let the server "
        "close first, so TIME_WAIT lands on the server, where it costs no port; (3) more "
        "source IPs or destination ports: each (source IP, destination) has its own ports on "
        "Linux; (4) a wider ephemeral port range; (5) Linux net.ipv4.tcp_tw_reuse=1 lets "
        "connect() take a TIME_WAIT port back after tcp_tw_reuse_delay (1 s) for outgoing "
        "connections, and needs TCP timestamps (net.ipv4.tcp_timestamps=1) on both ends; 2, "
        "the default, does it for loopback only; it does nothing for a server's TIME_WAIT; "
        "(6) SO_LINGER 0 closes with an RST and leaves no TIME_WAIT, but data not yet "
        "delivered is lost, the peer sees ECONNRESET, and TIME_WAIT's guard against stray "
        "segments of the old connection is gone: only for connections that are done. macOS: "
        "net.inet.tcp.msl=5000 (ms) shortens TIME_WAIT from 30 s to 10 s, weakening the "
        "same guard. Never tcp_tw_recycle (removed in Linux 4.12: it broke clients behind "
        "NAT); tcp_fin_timeout does not shorten TIME_WAIT",
    ),
    Cause.FILE_DESCRIPTORS: _Fix(
        knob="the per-process descriptor limit (RLIMIT_NOFILE: ulimit -n)",
        names=(
            "RLIMIT_NOFILE (ulimit -n, LimitNOFILE=, fs.nr_open)",
            "RLIMIT_NOFILE (ulimit -n, launchctl maxfiles, kern.maxfilesperproc)",
            "socket handles (no per-process limit to raise)",
        ),
        linux=(
            "ulimit -n 1048576",
            "echo '* soft nofile 1048576' >> /etc/security/limits.conf",
            "echo '* hard nofile 1048576' >> /etc/security/limits.conf",
            "systemctl edit UNIT  # then under [Service]: LimitNOFILE=1048576",
            "sysctl -w fs.nr_open=1048576",
            _persist("fs.nr_open = 1048576"),
        ),
        macos=(
            "ulimit -n 65536",
            "sudo launchctl limit maxfiles 65536 200000",
            "sudo sysctl -w kern.maxfilesperproc=65536",
        ),
        windows=(),
        windows_line="Windows has no RLIMIT_NOFILE: a socket is a kernel handle (about 16 "
        "million per process), so WSAEMFILE there means kernel memory ran out (see memory)",
        checks_linux=("ulimit -Sn; ulimit -Hn", "sysctl fs.nr_open"),
        checks_macos=("ulimit -n", "launchctl limit maxfiles", "sysctl kern.maxfilesperproc"),
        note="the hard limit can only be raised by root (CAP_SYS_RESOURCE), up to fs.nr_open; "
        "any process may raise its soft limit to the hard one; past that, spread the "
        "connections over more processes",
    ),
    Cause.SYSTEM_FILE_TABLE: _Fix(
        knob="the system-wide open file table (fs.file-max; macOS kern.maxfiles)",
        names=("fs.file-max", "kern.maxfiles", "kernel handles (no table to raise)"),
        linux=(
            '[ "$(sysctl -n fs.file-max)" -lt 2097152 ] && sysctl -w fs.file-max=2097152  '
            "# raises it, never lowers it",
            _persist("fs.file-max = 2097152") + "  # only if it was lower",
        ),
        macos=(
            "sudo sysctl -w kern.maxfiles=200000",
            "echo 'kern.maxfiles=200000' | sudo tee -a /etc/sysctl.conf",
        ),
        windows=(),
        windows_line="Windows has no system file table limit: handles are bounded by kernel "
        "memory (see memory)",
        checks_linux=("cat /proc/sys/fs/file-nr",),
        checks_macos=("sysctl kern.maxfiles kern.num_files",),
        note="on Linux a process with CAP_SYS_ADMIN may go past fs.file-max; the kernel's "
        "default is about 10 % of RAM in KiB and systemd 240+ sets it to the maximum "
        "(9223372036854775807), so read it first: writing 2097152 there would lower it",
    ),
    Cause.MEMORY: _Fix(
        knob="memory: MemAvailable and the cgroup's memory.max bound idle connections; tcp_mem "
        "bounds only data queued in socket buffers",
        names=(
            "memory (MemAvailable, the cgroup's memory.max; net.ipv4.tcp_mem only for data "
            "queued in socket buffers)",
            "memory (mbuf clusters, kern.ipc.maxsockets)",
            "non-paged pool memory (TcpNumConnections)",
        ),
        linux=(
            "systemctl set-property UNIT MemoryMax=infinity  # when the cgroup's memory.max "
            "binds (cat /sys/fs/cgroup/$(cut -d: -f3 /proc/PID/cgroup)/memory.max)",
            'sysctl -w net.ipv4.tcp_mem="1048576 1572864 2097152"  # only when connections '
            "carry data: sockstat's TCP mem near tcp_mem's third value, TCPAbortOnMemory "
            "growing",
            _persist("net.ipv4.tcp_mem = 1048576 1572864 2097152"),
        ),
        macos=(
            'sudo nvram boot-args="$(nvram boot-args 2>/dev/null | cut -f2-) ncl=131072"  '
            "# reads the current boot-args (nvram boot-args) and appends ncl=; then reboot",
        ),
        windows=(f"reg add {_TCPIP} /v TcpNumConnections /t REG_DWORD /d 16777214 /f",),
        windows_line="each connection takes paged and non-paged pool: add RAM; "
        "TcpNumConnections (REG_DWORD, default and most 16,777,214) caps the count",
        checks_linux=(
            "grep -E 'MemAvailable|Slab' /proc/meminfo",
            "cat /proc/net/sockstat",
            "sysctl net.ipv4.tcp_mem",
        ),
        checks_macos=(
            "netstat -m",
            "sysctl kern.ipc.maxsockets kern.ipc.nmbclusters",
            "nvram boot-args",
        ),
        checks_windows=("poolmon",),
        note="an idle connection's socket buffers are nearly empty: it costs about 4 KB of "
        "kernel memory per socket on Linux (8 KB a loopback connection, both ends), so "
        "MemAvailable and the cgroup's memory.max bound how many are held, and more RAM (or "
        "a higher memory.max) raises it; tcp_mem (pages) bounds only data queued in socket "
        "buffers, and raising it helps only connections that carry data. macOS: boot-args "
        "ncl= sets the mbuf clusters (and so kern.ipc.maxsockets) after a reboot; "
        "`sudo nvram boot-args=...` replaces the whole variable, so append to the current "
        "value; on Apple silicon boot-args need Permissive Security (recoveryOS)",
    ),
    Cause.SERVER_BACKLOG: _Fix(
        knob="the listen() backlog, capped by net.core.somaxconn (SYN queue: "
        "net.ipv4.tcp_max_syn_backlog)",
        names=(
            "net.core.somaxconn, net.ipv4.tcp_max_syn_backlog and the listen() backlog",
            "kern.ipc.somaxconn and the listen() backlog",
            "the listen() backlog (SOMAXCONN)",
        ),
        linux=(
            "sysctl -w net.core.somaxconn=65535",
            "sysctl -w net.ipv4.tcp_max_syn_backlog=65535",
            _persist("net.core.somaxconn = 65535"),
            _persist("net.ipv4.tcp_max_syn_backlog = 65535"),
        ),
        macos=(
            "sudo sysctl -w kern.ipc.somaxconn=2048",
            "echo 'kern.ipc.somaxconn=2048' | sudo tee -a /etc/sysctl.conf",
        ),
        windows_line="pass SOMAXCONN (or SOMAXCONN_HINT(n)) to listen(); Windows has no "
        "registry knob for the accept queue",
        checks_linux=("ss -ltn", "nstat -az TcpExtListenOverflows TcpExtListenDrops"),
        checks_macos=("netstat -Lan",),
        note="the server must also ask for it: listen(fd, 65535) (Linux caps it at somaxconn); "
        "the backlog bounds a burst of connections not yet accepted, not how many a server "
        "holds, and a faster accept() loop helps as much",
    ),
    Cause.SERVER_REFUSED: _Fix(
        knob="a listener on that address and port (and the listen backlog)",
        windows_line="check that the server listens (netstat -ano -p tcp); Windows also "
        "refuses when the listen backlog is full",
        checks_linux=("ss -ltn", "nstat -az TcpExtListenOverflows"),
        checks_macos=("netstat -an -p tcp | grep LISTEN",),
        checks_windows=("netstat -ano -p tcp | findstr LISTENING",),
        note="nobody listens there (server not started, crashed, wrong port), a firewall "
        "rejects with a reset, or (Windows) the listen backlog is full; Linux and macOS drop "
        "a SYN that meets a full accept queue instead (a timeout), and "
        "net.ipv4.tcp_abort_on_overflow=1 resets a connection after its handshake "
        "(ECONNRESET, not a refusal)",
    ),
    Cause.SERVER_CLOSED: _Fix(
        knob="the server application's connection limit or timeout (redis maxclients, "
        "memcached -c, nginx worker_connections, haproxy maxconn, postgres max_connections, "
        "idle/auth timeouts) and its descriptors",
        windows_line="look at the server's limits and logs; Windows reports it as "
        "WSAECONNRESET (10054)",
        checks_linux=("ss -tn state close-wait", "nstat -az TcpExtTCPAbortOnData"),
        note="the server accepted the connection and then closed it (FIN) or reset it (RST): "
        "an application connection limit that refuses by answering and closing (redis "
        "'-ERR max number of clients reached', memcached 'ERROR Too many open connections'), "
        "one that closes without a word (nginx past worker_connections), an idle or "
        "authentication timeout (connections closed after a steady lifetime), eviction of "
        "older connections, its own descriptor or memory limit, or an exit. `conncap open "
        "--send TEXT` records the server's first reply; raise the server's limit (maxclients, "
        "-c, worker_connections, maxconn, max_connections) together with its RLIMIT_NOFILE",
    ),
    Cause.CONNTRACK: _Fix(
        knob="the connection tracking table (net.netfilter.nf_conntrack_max)",
        names=("net.netfilter.nf_conntrack_max", "pf state limit", "none"),
        linux=(
            "sysctl -w net.netfilter.nf_conntrack_max=1048576",
            "echo 262144 > /sys/module/nf_conntrack/parameters/hashsize",
            _persist("net.netfilter.nf_conntrack_max = 1048576"),
        ),
        windows_line="Windows has no conntrack table; its firewall keeps no such limit",
        checks_linux=(
            "sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max",
            "conntrack -S",
        ),
        checks_macos=("sudo pfctl -s memory",),
        note="a full table drops new SYNs (dmesg: 'nf_conntrack: table full, dropping "
        "packet'), so clients see time-outs, not an error; macOS has pf states instead "
        "('set limit states N' in /etc/pf.conf). If `conntrack -S` shows insert_failed "
        "growing while nf_conntrack_count is far below the max, the table is not full: a NAT "
        "gateway ran out of source ports for one destination (SNAT exhaustion); raising the "
        "table does nothing, give the NAT more addresses (masquerade/snat to a range of IPs), "
        "a wider port range (`masquerade to :1024-65535`), or spread over more destination "
        "IPs or ports (cloud NAT gateways: more public IPs per gateway)",
    ),
    Cause.TIMEOUT: _Fix(
        knob="whatever dropped the SYN: the server's backlog, conntrack, a firewall",
        windows_line="check the server's backlog and any firewall between the hosts",
        checks_linux=(
            "nstat -az TcpExtListenOverflows TcpExtListenDrops TcpExtTCPReqQFullDrop",
            "dmesg | grep -i conntrack",
        ),
        checks_macos=("netstat -s -p tcp | grep -i -E 'listen|drop'",),
        checks_windows=("netstat -s -p tcp",),
        note="a server whose accept queue is full drops SYNs (Linux, BSD); the client retries "
        "them until it gives up",
    ),
    Cause.NETWORK: _Fix(
        knob="routes and addresses",
        windows_line="check routes (route print) and that the source address exists",
        checks_linux=("ip route get DST", "ip addr"),
        checks_macos=("route -n get DST", "ifconfig"),
        checks_windows=("route print", "ipconfig"),
    ),
    Cause.PERMISSION: _Fix(
        knob="firewall rules, privileged ports, security policy",
        linux=(
            "sysctl -w net.ipv4.ip_unprivileged_port_start=80  # any user may bind ports from "
            "80 up (the default, 1024, changes nothing)",
            _persist("net.ipv4.ip_unprivileged_port_start = 80"),
            "setcap cap_net_bind_service=+ep BINARY",
        ),
        windows_line="netsh int ipv4 show excludedportrange protocol=tcp shows ports Windows "
        "reserved (Hyper-V, WinNAT); a port held with SO_EXCLUSIVEADDRUSE also gives WSAEACCES",
        checks_linux=(
            "nft list ruleset",
            "iptables -S",
            "sysctl net.ipv4.ip_unprivileged_port_start",
        ),
        checks_macos=("sudo pfctl -s rules",),
        checks_windows=("netsh int ipv4 show excludedportrange protocol=tcp",),
    ),
    Cause.FIREWALL: _Fix(
        knob="a packet filter rule that drops or rejects the port (nftables, iptables, a cloud "
        "security group, Windows Firewall)",
        names=(
            "netfilter rules (nft list ruleset, iptables -S) and cloud security groups",
            "pf rules (pfctl -s rules) and the Application Firewall",
            "Windows Defender Firewall rules (netsh advfirewall, Get-NetFirewallRule)",
        ),
        linux=(
            "nft -a list ruleset | grep -n 'dport PORT'  # then: nft delete rule FAMILY TABLE "
            "CHAIN handle N",
            "iptables -S | grep -e '--dport PORT'  # then: iptables -D CHAIN RULE (the -A line "
            "with -A replaced by -D)",
            "iptables -I INPUT -p tcp --dport PORT -j ACCEPT  # or allow the port ahead of the "
            "rule",
            "cloud: allow inbound TCP PORT from the client's addresses in the security group / "
            "network ACL (aws ec2 authorize-security-group-ingress, gcloud compute "
            "firewall-rules create, az network nsg rule create)",
        ),
        macos=(
            "sudo pfctl -s rules | grep PORT  # then edit /etc/pf.conf and: sudo pfctl -f "
            "/etc/pf.conf",
            "/usr/libexec/ApplicationFirewall/socketfilterfw --listapps",
        ),
        windows=(
            "netsh advfirewall firewall show rule name=all dir=in | findstr PORT",
            'netsh advfirewall firewall add rule name="allow PORT" dir=in action=allow '
            "protocol=TCP localport=PORT",
            "Get-NetFirewallRule -Action Block -Enabled True | Get-NetFirewallPortFilter",
        ),
        windows_line="Windows Defender Firewall: netsh advfirewall firewall add rule "
        'name="allow PORT" dir=in action=allow protocol=TCP localport=PORT (a blocked port '
        "times out, WSAETIMEDOUT 10060)",
        checks_linux=(
            "nft list ruleset",
            "iptables -S; iptables -t raw -S",
            "nstat -az TcpExtListenOverflows  # 0 while connects fail: not the server's queue",
        ),
        checks_macos=("sudo pfctl -s rules",),
        checks_windows=("netsh advfirewall show allprofiles",),
        note="a DROP rule makes connects time out (ETIMEDOUT; the server's counters do not "
        "move); a REJECT answers with an RST (ECONNREFUSED, as if nothing listened) or an ICMP "
        "error (icmp-admin-prohibited: type 3 code 13, which Linux reports as EHOSTUNREACH); a "
        "drop in the client's own OUTPUT chain gives EPERM at once. Between hosts, a cloud "
        "security group or network ACL drops silently: check it when the server listens and "
        "its counters show nothing",
    ),
    Cause.UNKNOWN: _Fix(knob="", note="not a catalogued limit"),
}


def _os_key(os_name: str) -> OsKey:
    name = os_name.strip().lower()
    if name.startswith("linux"):
        return "linux"
    if name in ("darwin", "macos", "mac", "osx", "macosx"):
        return "macos"
    if name.startswith("win") or name in ("cygwin", "msys"):
        return "windows"
    raise ValueError(f"unknown OS {os_name!r}: expected linux, darwin (macos) or windows")


def advice(cause: Cause, os_name: str) -> Advice:
    """How to raise the limit behind ``cause`` on ``os_name`` (linux, darwin/macos, windows/win32).

    Raises ValueError for an OS name it does not know.
    """
    key = _os_key(os_name)
    fix = _FIXES[Cause(cause)]
    name = fix.names[("linux", "macos", "windows").index(key)]
    commands = {"linux": fix.linux, "macos": fix.macos, "windows": fix.windows}[key]
    checks = {"linux": fix.checks_linux, "macos": fix.checks_macos, "windows": fix.checks_windows}
    return Advice(
        cause=Cause(cause),
        os=key,
        knob=name or fix.knob,
        commands=commands,
        windows=fix.windows_line,
        checks=checks[key],
        note=fix.note,
    )


# --- the entries -------------------------------------------------------------------------------

_C = Cause


def _posix(
    name: str,
    cause: Cause,
    side: Side,
    meaning: str,
    when: str,
    windows: str,
    note: str = "",
    by_op: dict[str, Cause] | None = None,
    fix: Cause | None = None,
) -> Entry:
    number = getattr(_errno, name, None)
    f = _FIXES[fix or cause]
    return Entry(
        name=name,
        numbers=(number,) if isinstance(number, int) else (),
        platform="posix",
        cause=cause,
        side=side,
        meaning=meaning,
        when=when,
        knob=f.knob,
        raise_linux=f.linux,
        raise_macos=f.macos,
        raise_windows=f.windows,
        windows_equivalent=windows,
        note=note,
        by_op=tuple((by_op or {}).items()),
    )


def _wsa(
    name: str,
    n: int,
    cause: Cause,
    side: Side,
    meaning: str,
    when: str,
    posix: str,
    note: str = "",
    by_op: dict[str, Cause] | None = None,
    fix: Cause | None = None,
) -> Entry:
    f = _FIXES[fix or cause]
    return Entry(
        name=name,
        numbers=(WSABASEERR + n,),
        platform="windows",
        cause=cause,
        side=side,
        meaning=meaning,
        when=when,
        knob=f.knob,
        raise_linux=f.linux,
        raise_macos=f.macos,
        raise_windows=f.windows,
        posix_equivalent=posix,
        note=note,
        by_op=tuple((by_op or {}).items()),
    )


_PORTS_ON_WINDOWS = (
    "WSAENOBUFS (10055), how Windows reports ephemeral port exhaustion on connect() "
    "(KB196271); the founding article saw WSAEADDRINUSE (10048) on old Windows"
)

_ENTRIES: tuple[Entry, ...] = (
    _posix(
        "EADDRNOTAVAIL", _C.EPHEMERAL_PORTS, "client",
        "Cannot assign requested address: no free local port for this connection.",
        "connect() on a socket not bound to a port: every port of the ephemeral range is in "
        "use towards this destination (Linux, with IP_BIND_ADDRESS_NO_PORT too) or at all "
        "(macOS). bind(): the address is not one of this host's.",
        _PORTS_ON_WINDOWS,
        note="Linux counts ports per (source IP, destination IP, destination port); macOS "
        "keeps one pool for all destinations (per local address once bound). On bind() it is "
        "a configuration error: the source IP is not on this host. When most of the ports "
        "are in TIME_WAIT (connections this host closed first, `ss -s`), the cause is "
        "time-wait: see `conncap explain time-wait`.",
        by_op={"bind": _C.NETWORK},
    ),
    _posix(
        "EADDRINUSE", _C.EPHEMERAL_PORTS, "client",
        "Address already in use: the local address and port are taken.",
        "bind(ip, 0) before connect() when every port of the range is taken for that "
        "address (Linux); bind() of an explicit port another socket holds; connect() of a "
        "bound socket whose 4-tuple already exists. listen(): another socket listens there.",
        "WSAEADDRINUSE (10048)",
        note="On connect() and a client's bind() it is the port pool; on a server's "
        "bind()/listen() the port is simply taken: pick another (conncap listens on port 0).",
        by_op={"listen": _C.UNKNOWN},
    ),
    _posix(
        "EMFILE", _C.FILE_DESCRIPTORS, "client",
        "Too many open files: this process reached its descriptor limit (RLIMIT_NOFILE).",
        "socket() on the client, accept() on the server: each connection holds one "
        "descriptor per end, two on the same host for a loopback connection.",
        "WSAEMFILE (10024)",
        note="Seen by whichever process hit its limit: the server on accept(), the client on "
        "socket(). A server that keeps calling accept() on EMFILE spins: back off instead.",
    ),
    _posix(
        "ENFILE", _C.SYSTEM_FILE_TABLE, "client",
        "Too many open files in system: the system-wide file table is full.",
        "socket() or accept(): fs.file-max (Linux) or kern.maxfiles (macOS) is reached.",
        "none: Windows handles are bounded by kernel memory (WSAENOBUFS, 10055)",
        note="Rare on Linux: fs.file-max defaults to about 10% of RAM in KiB (systemd 240+ "
        "sets it to the maximum), and processes with CAP_SYS_ADMIN may exceed it.",
    ),
    _posix(
        "ENOBUFS", _C.MEMORY, "client",
        "No buffer space available: the kernel could not allocate socket memory.",
        "socket(), connect() or accept() when kernel memory for sockets runs out (macOS: "
        "mbuf clusters or kern.ipc.maxsockets; Linux: rare, see ENOMEM).",
        "WSAENOBUFS (10055)",
        note="On Windows the same name also means ephemeral port exhaustion on connect(); "
        "on Linux and macOS ports run out as EADDRNOTAVAIL.",
    ),
    _posix(
        "ENOMEM", _C.MEMORY, "client",
        "Cannot allocate memory: the kernel or the cgroup is out of memory.",
        "socket(), connect() or accept() under memory pressure or at the cgroup's memory.max.",
        "WSAENOBUFS (10055)",
        note="accept(2) says this often means the socket buffer limits rather than the "
        "system's memory: tcp_mem bounds data queued in buffers, so it binds only when "
        "connections carry data (sockstat's TCP mem near tcp_mem); idle connections run out "
        "of MemAvailable or the cgroup's memory.max.",
    ),
    _posix(
        "ECONNREFUSED", _C.SERVER_REFUSED, "server",
        "Connection refused: the server answered the SYN with a reset.",
        "connect(): nobody listens on that address and port, or a firewall rejects with a "
        "reset.",
        "WSAECONNREFUSED (10061)",
        note="Linux and macOS drop a SYN when the accept queue is full (the client times "
        "out); Windows refuses it.",
        fix=_C.SERVER_REFUSED,
    ),
    _posix(
        "ETIMEDOUT", _C.TIMEOUT, "network",
        "Connection timed out: the SYN (or data) was never answered.",
        "connect() after the SYN retries (Linux: net.ipv4.tcp_syn_retries=6, about 127 s): the "
        "server's accept queue was full and dropped the SYN, conntrack was full, a firewall "
        "dropped it, or the host is down.",
        "WSAETIMEDOUT (10060)",
        note="conncap's own connect deadline is reported with the same cause.",
    ),
    _posix(
        "ECONNRESET", _C.SERVER_CLOSED, "server",
        "Connection reset by peer: the other end aborted the connection.",
        "recv()/send() on a held connection, or connect() when the reset comes during the "
        "handshake: the server closed or crashed, or hit its own limit, or its accept queue "
        "was full with net.ipv4.tcp_abort_on_overflow=1 (Linux resets the connection once "
        "the client's handshake is done).",
        "WSAECONNRESET (10054)",
    ),
    _posix(
        "EPIPE", _C.SERVER_CLOSED, "server",
        "Broken pipe: writing to a connection the peer already closed.",
        "send() after the server closed the connection.",
        "WSAECONNRESET (10054) or WSAECONNABORTED (10053)",
    ),
    _posix(
        "ECONNABORTED", _C.TIMEOUT, "network",
        "Software caused connection abort: the connection died before it could be used.",
        "accept(): a queued connection was reset by its client before accept() took it (the "
        "client gave up: the server accepts too slowly). Others: the local stack gave up.",
        "WSAECONNABORTED (10053)",
        note="On accept() it is not an error of the server: retry accept().",
    ),
    _posix(
        "EHOSTUNREACH", _C.NETWORK, "network",
        "No route to host: the destination host cannot be reached.",
        "connect(): an ICMP host unreachable came back, or ARP/neighbour discovery failed.",
        "WSAEHOSTUNREACH (10065)",
    ),
    _posix(
        "ENETUNREACH", _C.NETWORK, "network",
        "Network is unreachable: no route to the destination's network.",
        "connect(): the routing table has no route for the destination.",
        "WSAENETUNREACH (10051)",
    ),
    _posix(
        "EACCES", _C.PERMISSION, "client",
        "Permission denied.",
        "bind() to a port below net.ipv4.ip_unprivileged_port_start without "
        "CAP_NET_BIND_SERVICE; connect() to a broadcast address or refused by a local "
        "firewall rule or security module.",
        "WSAEACCES (10013)",
    ),
    _posix(
        "EPERM", _C.PERMISSION, "client",
        "Operation not permitted.",
        "connect() or send() when a local firewall rule (nftables/iptables OUTPUT) drops the "
        "packet; accept() when firewall rules forbid the connection.",
        "WSAEACCES (10013)",
    ),
    _posix(
        "EAGAIN", _C.UNKNOWN, "client",
        "Resource temporarily unavailable (EWOULDBLOCK): the call would block.",
        "accept() on a non-blocking socket with no connection waiting (normal, not a "
        "failure); connect() on TCP: Linux documents it only for lack of routing-cache "
        "entries, and returns EADDRNOTAVAIL for exhausted ports.",
        "WSAEWOULDBLOCK (10035)",
        note="Old connect(2) pages said 'no more free local ports' for EAGAIN: for TCP on "
        "Linux that is EADDRNOTAVAIL; EAGAIN on connect() is a non-blocking UNIX-domain "
        "socket whose peer's backlog is full.",
    ),
    # --- Winsock ---------------------------------------------------------------------------
    _wsa(
        "WSAEACCES", 13, _C.PERMISSION, "client",
        "Permission denied: the socket was used in a way its access rights forbid.",
        "bind() to a port in a range Windows excluded (Hyper-V, WinNAT) or held with "
        "SO_EXCLUSIVEADDRUSE; connect()/sendto() to a broadcast address without "
        "SO_BROADCAST; a filter driver denied it.",
        "EACCES / EPERM",
    ),
    _wsa(
        "WSAEMFILE", 24, _C.FILE_DESCRIPTORS, "client",
        "Too many open sockets.",
        "socket() or accept(): the provider's socket handles ran out.",
        "EMFILE",
        note="Windows has no RLIMIT_NOFILE; handles are limited by kernel memory, so this "
        "points at memory more often than at a limit to raise.",
        fix=_C.FILE_DESCRIPTORS,
    ),
    _wsa(
        "WSAEADDRINUSE", 48, _C.EPHEMERAL_PORTS, "client",
        "Only one usage of each socket address (protocol/address/port) is normally permitted.",
        "connect(): the founding article's error when old Windows ran out of ephemeral ports "
        "(1024-5000); bind() of an address and port in use without SO_REUSEADDR; listen(): "
        "another socket listens there.",
        "EADDRINUSE (port taken) / EADDRNOTAVAIL (ports exhausted)",
        note="The founding article saw it at about 3,977 connections (ports 1024-5000) and "
        "saw MaxUserPort take effect only after a reboot.",
        by_op={"listen": _C.UNKNOWN},
    ),
    _wsa(
        "WSAEADDRNOTAVAIL", 49, _C.NETWORK, "client",
        "The requested address is not valid in its context.",
        "bind() to an address that is not this host's; connect() to address 0.0.0.0 or "
        "port 0.",
        "EADDRNOTAVAIL (on bind())",
        note="Unlike POSIX EADDRNOTAVAIL this is not port exhaustion: Windows reports that "
        "as WSAENOBUFS (10055).",
    ),
    _wsa(
        "WSAENETUNREACH", 51, _C.NETWORK, "network",
        "A socket operation was attempted to an unreachable network.",
        "connect(): no route to the destination's network.",
        "ENETUNREACH",
    ),
    _wsa(
        "WSAECONNABORTED", 53, _C.TIMEOUT, "network",
        "An established connection was aborted by the software in your host machine.",
        "recv()/send() or connect(): the local stack gave up after a data transmission "
        "time-out or a protocol error.",
        "ECONNABORTED",
    ),
    _wsa(
        "WSAECONNRESET", 54, _C.SERVER_CLOSED, "server",
        "An existing connection was forcibly closed by the remote host.",
        "recv()/send() on a held connection: the server closed, crashed or hit its limit.",
        "ECONNRESET",
    ),
    _wsa(
        "WSAENOBUFS", 55, _C.MEMORY, "client",
        "No buffer space available: the system lacked buffer space or a queue was full.",
        "connect() or bind(ip, 0): the ephemeral ports are used up (KB196271: connecting from "
        "ports past the range gives 10055). socket(), accept(), send(): non-paged pool "
        "memory ran out (the founding article's server-side error).",
        "EADDRNOTAVAIL on connect() (ports), ENOBUFS / ENOMEM otherwise (memory)",
        note="One code, two causes: on connect() it is almost always the port pool (check "
        "netsh int ipv4 show dynamicport tcp); on accept() and elsewhere, memory.",
        by_op={"connect": _C.EPHEMERAL_PORTS, "bind": _C.EPHEMERAL_PORTS},
    ),
    _wsa(
        "WSAETIMEDOUT", 60, _C.TIMEOUT, "network",
        "A connection attempt failed because the connected party did not properly respond.",
        "connect() after the SYN retries (TcpMaxConnectRetransmissions): the server dropped "
        "the SYN or the host is down.",
        "ETIMEDOUT",
    ),
    _wsa(
        "WSAECONNREFUSED", 61, _C.SERVER_REFUSED, "server",
        "No connection could be made because the target machine actively refused it.",
        "connect(): nobody listens there, or the listen backlog is full (Windows refuses "
        "when its queue is full).",
        "ECONNREFUSED",
    ),
    _wsa(
        "WSAEHOSTUNREACH", 65, _C.NETWORK, "network",
        "A socket operation was attempted to an unreachable host.",
        "connect(): the host cannot be reached.",
        "EHOSTUNREACH",
    ),
)  # fmt: skip


def entries() -> tuple[Entry, ...]:
    """Every catalogued code: POSIX names first, then Winsock."""
    return _ENTRIES


_BY_NAME: dict[str, Entry] = {e.name: e for e in _ENTRIES}
_WSA_BY_NUMBER: dict[int, Entry] = {e.numbers[0]: e for e in _ENTRIES if e.platform == "windows"}


#: The Windows C runtime's numbers for the catalogued names below 35 (the higher ones are
#: Winsock codes in Python's errno module on Windows).
_WINDOWS_CRT: dict[str, int] = {
    n: v
    for n, v in LINUX_ERRNO.items()
    if n in ("EPERM", "EACCES", "EAGAIN", "ENOMEM", "ENFILE", "EMFILE", "EPIPE")
}


def _errno_table(platform: str | None) -> dict[str, int] | None:
    """The numbering of ``platform`` when it is not this OS's (None: use the errno module)."""
    if platform is None:
        return None
    key = _os_key(platform)
    try:
        this = _os_key(sys.platform)
    except ValueError:
        this = None
    if key == this:
        return None
    return {"linux": LINUX_ERRNO, "macos": DARWIN_ERRNO, "windows": _WINDOWS_CRT}[key]


def _posix_by_number(number: int, platform: str | None = None) -> Entry | None:
    """The POSIX entry for ``number`` as ``platform`` numbers it (this OS by default)."""
    table = _errno_table(platform)
    if table is not None:
        names = [n for n, v in table.items() if v == number]
    else:
        name = _errno.errorcode.get(number)
        names = [_ALIASES.get(name, name)] if name else []
    for name in names:
        entry = _BY_NAME.get(name)
        if entry is not None and entry.platform == "posix":
            return entry
    return None


def lookup(code: str | int) -> Entry:
    """The entry for an errno name (case-insensitive), this OS's errno number, a Winsock number
    (10048) or name (WSAEADDRINUSE). Raises UsageError with one line for anything else."""
    text = str(code).strip()
    if text.lstrip("-").isdigit():
        number = int(text)
        entry = _WSA_BY_NUMBER.get(number) if number >= WSABASEERR else None
        entry = entry or _posix_by_number(number)
        if entry is None:
            name = _errno.errorcode.get(number)
            known = f" ({name} on this OS)" if name else ""
            raise UsageError(
                f"error code {number}{known} is not in the catalogue: it is not one a TCP "
                "connect() or accept() reports (see `conncap explain --list`)"
            )
        return entry
    name = text.upper()
    name = _ALIASES.get(name, name)
    entry = _BY_NAME.get(name)
    if entry is None:
        raise UsageError(
            f"unknown error code {text!r}: give an errno name (EMFILE), a number (24), or a "
            "Winsock code (10048, WSAEADDRINUSE); `conncap explain --list` lists them"
        )
    return entry


#: The words users paste (strerror texts, Winsock's messages, "EOF") -> the code or cause id
#: ``conncap explain`` shows. Matched case-insensitively as a part of the pasted text.
MESSAGES: tuple[tuple[str, str], ...] = (
    ("cannot assign requested address", "EADDRNOTAVAIL"),
    ("too many open files in system", "ENFILE"),
    ("too many open files", "EMFILE"),
    ("connection reset by peer", "ECONNRESET"),
    ("connection refused", "ECONNREFUSED"),
    ("connection timed out", "ETIMEDOUT"),
    ("address already in use", "EADDRINUSE"),
    ("no route to host", "EHOSTUNREACH"),
    ("network is unreachable", "ENETUNREACH"),
    ("no buffer space available", "ENOBUFS"),
    ("broken pipe", "EPIPE"),
    ("operation not permitted", "EPERM"),
    ("only one usage of each socket address", "WSAEADDRINUSE"),
    ("lacked sufficient buffer space or because a queue was full", "WSAENOBUFS"),
    ("lacked sufficient buffer space", "WSAENOBUFS"),
    ("the requested address is not valid in its context", "WSAEADDRNOTAVAIL"),
    ("an existing connection was forcibly closed", "WSAECONNRESET"),
    ("actively refused", "WSAECONNREFUSED"),
    ("did not properly respond after a period of time", "WSAETIMEDOUT"),
    ("too many open sockets", "WSAEMFILE"),
    ("max number of clients reached", str(Cause.SERVER_CLOSED)),
    ("too many open connections", str(Cause.SERVER_CLOSED)),
    ("worker_connections are not enough", str(Cause.SERVER_CLOSED)),
    ("administratively prohibited", str(Cause.FIREWALL)),
    ("eof", str(Cause.SERVER_CLOSED)),
    ("end of file", str(Cause.SERVER_CLOSED)),
)


def code_of_message(text: str) -> str | None:
    """The errno/Winsock name or cause id behind a pasted error message (None: not known)."""
    low = " ".join(text.lower().split())
    for phrase, code in MESSAGES:
        if phrase in low:
            return code
    return None


def errno_name(number: int) -> str:
    """This OS's name for an errno number (99 -> "EADDRNOTAVAIL" on Linux), a Winsock name
    for 10000-11999 when catalogued, else ``E<n>``."""
    if number >= WSABASEERR and number in _WSA_BY_NUMBER:
        return _WSA_BY_NUMBER[number].name
    name = _errno.errorcode.get(number)
    return name if name else f"E{number}"


def classify(number: int, *, op: str = "connect", platform: str | None = None) -> Cause:
    """The cause of error ``number`` returned by ``op`` (connect, accept, bind, listen, socket,
    send, recv) on ``platform`` (sys.platform style; default this OS). Winsock numbers
    (>= 10000) are read as Winsock codes on any platform; POSIX numbers by the platform's own
    numbering. Codes not in the catalogue are Cause.UNKNOWN."""
    if number >= WSABASEERR:
        wsa = _WSA_BY_NUMBER.get(number)
        return wsa.cause_for(op) if wsa is not None else Cause.UNKNOWN
    try:
        entry = _posix_by_number(number, platform)
    except ValueError:
        entry = _posix_by_number(number)
    return entry.cause_for(op) if entry is not None else Cause.UNKNOWN


def cause_of_name(name: str, *, op: str = "connect") -> Cause:
    """The cause of an error recorded by name (``EADDRNOTAVAIL``, ``WSAENOBUFS``), as results
    store them; names not in the catalogue (``E1234``, ``ETIMEDOUT`` is in it) are UNKNOWN."""
    entry = _BY_NAME.get(_ALIASES.get(name.upper(), name.upper()))
    return entry.cause_for(op) if entry is not None else Cause.UNKNOWN


def side_of(number: int, *, op: str = "connect", platform: str | None = None) -> Side:
    """Whose limit an error points at: accept()'s resource errors are the server's own."""
    cause = classify(number, op=op, platform=platform)
    if op == "accept" and cause in SERVER_RESOURCE_CAUSES:
        return "server"
    if number >= WSABASEERR:
        wsa = _WSA_BY_NUMBER.get(number)
        return wsa.side if wsa is not None else "network"
    entry = _posix_by_number(number)
    return entry.side if entry is not None else "network"


def cause_advice(code: str | int, os_name: str, *, op: str = "connect") -> Advice:
    """Advice for the cause behind an error code: ``lookup`` then ``advice``."""
    entry = lookup(code)
    return advice(entry.cause_for(op), os_name)


# --- the table in docs/catalogue.md --------------------------------------------------------------


def _numbers_cell(entry: Entry) -> str:
    if entry.platform == "windows":
        return str(entry.numbers[0])
    lin, mac = LINUX_ERRNO.get(entry.name), DARWIN_ERRNO.get(entry.name)
    return f"{lin} / {mac}"


def catalogue_markdown() -> str:
    """docs/catalogue.md, generated from the entries (a test keeps the file in sync)."""
    out = [
        "# Error catalogue",
        "",
        "Generated from `src/conncap/catalogue.py` by `conncap.catalogue.catalogue_markdown()`;",
        "do not edit by hand. `conncap explain CODE` prints one entry in full, with the exact",
        "commands for Linux, macOS and Windows.",
        "",
        "Numbers: POSIX codes as Linux / macOS number them; Winsock codes are the same",
        "everywhere. A cause that depends on the call is shown as `call: cause`.",
        "",
        "| code | number | cause | side | meaning | Windows / POSIX equivalent |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in _ENTRIES:
        cause = str(e.cause)
        if e.by_op:
            cause += " (" + ", ".join(f"{op}: {c}" for op, c in e.by_op) + ")"
        equiv = e.windows_equivalent or e.posix_equivalent
        cells = [f"`{e.name}`", _numbers_cell(e), cause, e.side, e.meaning, equiv]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += ["", "## Codes in detail", ""]
    for e in _ENTRIES:
        out += [f"### {e.name}", "", f"- When: {e.when}"]
        if e.note:
            out.append(f"- Note: {e.note}")
        out.append("")
    out += ["## How to raise each limit", ""]
    for cause, fix in _FIXES.items():
        if cause is Cause.UNKNOWN:
            continue
        out += [f"### {cause}", "", f"Knob: {fix.knob}.", ""]
        for label, cmds in (("Linux", fix.linux), ("macOS", fix.macos), ("Windows", fix.windows)):
            if cmds:
                out.append(f"- {label}:")
                out += [f"  - `{c}`" for c in cmds]
        if fix.windows_line:
            out.append(f"- Windows: {fix.windows_line}.")
        if fix.note:
            out.append(f"- Note: {fix.note}.")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
