"""Every TCP socket of this network namespace, read through netlink ``sock_diag`` and folded
into per-pool counts while it is parsed (no Python object per socket).

The OS edge is :func:`read_sockets` (one ``NETLINK_SOCK_DIAG`` socket, two dumps per address
family: listeners first, then every other state). Everything else here is pure: the request
bytes (:func:`dump_request`) and the parser (:class:`Aggregator`), which takes the kernel's
bytes and is tested on bytes built with the kernel's struct layout.

Layouts (include/uapi/linux/netlink.h, inet_diag.h, sock_diag.h):

* ``struct nlmsghdr``: u32 len, u16 type, u16 flags, u32 seq, u32 pid (host order);
* ``struct inet_diag_req_v2``: u8 family, u8 protocol, u8 ext, u8 pad, u32 states, then an
  ``inet_diag_sockid``;
* ``struct inet_diag_sockid``: be16 sport, be16 dport, be32 src[4], be32 dst[4], u32 if,
  u32 cookie[2] (48 bytes);
* ``struct inet_diag_msg``: u8 family, u8 state, u8 timer, u8 retrans, sockid, u32 expires,
  u32 rqueue, u32 wqueue, u32 uid, u32 inode (72 bytes), then attributes we do not ask for
  (the kernel adds INET_DIAG_SHUTDOWN to full sockets; TIME_WAIT sockets have none).

For a LISTEN socket ``idiag_rqueue`` is the accept queue now and ``idiag_wqueue`` the backlog
(``sk_max_ack_backlog``).
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

# --- constants from the uapi headers ------------------------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x100 | 0x200  # NLM_F_ROOT | NLM_F_MATCH

#: TCP states (include/net/tcp_states.h); index into :attr:`SocketCounts.by_state`.
TCP_STATES: tuple[str, ...] = (
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
)
TCP_TIME_WAIT = 6
TCP_LISTEN = 10
#: Every state but LISTEN (the second dump); bit n is state n.
ALL_BUT_LISTEN = ((1 << len(TCP_STATES)) - 1) & ~(1 << TCP_LISTEN) & ~1
ONLY_LISTEN = 1 << TCP_LISTEN

_NLMSGHDR = struct.Struct("=IHHII")
_REQ_V2 = struct.Struct("=BBBBI48s")
_HDR_LEN_TYPE = struct.Struct("=IH")
_PORTS = struct.Struct(">HH")
_QUEUES = struct.Struct("=III")  # rqueue, wqueue, uid (inode follows)
#: Offsets inside one netlink message (16-byte nlmsghdr, then inet_diag_msg).
_OFF_STATE = 17
_OFF_SPORT = 20
_OFF_SRC = 24
_OFF_DST = 40
_OFF_RQUEUE = 72
_OFF_INODE = 84
MSG_LEN = 88  # nlmsghdr + inet_diag_msg, without attributes

#: A socket buffer big enough for the kernel's largest dump message batch (32 KiB skbs).
RECV_BYTES = 1 << 17


class SockDiagError(OSError):
    """The kernel refused the dump or sent something this parser does not understand."""


def dump_request(family: int, states: int, seq: int = 1) -> bytes:
    """The netlink message asking for every TCP socket of ``family`` in ``states``."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, states, b"\0" * 48)
    return (
        _NLMSGHDR.pack(16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        + body
    )


# --- what the parser produces ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    """One LISTEN socket: its accept queue now and its backlog."""

    family: int
    addr: str
    port: int
    accept_queue: int
    backlog: int
    inode: int


@dataclass(slots=True)
class SocketCounts:
    """The sockets of one namespace, folded by pool while parsing.

    ``pools[family]`` maps a raw key to [ports in use, of them TIME_WAIT] for client sockets
    whose local port is ephemeral; the raw key is the kernel's bytes of (dport, src, dst), 34
    bytes, decoded once per pool by :func:`decode_pool_key`. ``sources[family]`` maps a raw
    source address to a 65,536-byte map of the local ports in use on it (the bind() pool).
    """

    by_state: list[int] = field(default_factory=lambda: [0] * len(TCP_STATES))
    pools: dict[int, dict[bytes, list[int]]] = field(default_factory=dict)
    sources: dict[int, dict[bytes, bytearray]] = field(default_factory=dict)
    #: Sockets whose local port is a listener's: accepted (and not yet accepted) connections.
    server_side: dict[int, int] = field(default_factory=dict)
    #: Client sockets whose local port is outside the usable ephemeral range (chosen by the
    #: program, or reserved): they take no port from any pool.
    outside_range: int = 0
    listeners: list[Listener] = field(default_factory=list)
    total: int = 0
    by_family: dict[int, int] = field(default_factory=dict)
    #: Seconds the dumps and the parsing took (set by :func:`read_sockets`).
    read_s: float = 0.0


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    ip = ipaddress.IPv6Address(raw[:16])
    mapped = ip.ipv4_mapped
    return str(mapped) if mapped is not None else str(ip)


def decode_pool_key(family: int, key: bytes) -> tuple[str, str, int]:
    """(source IP, destination IP, destination port) of a raw pool key; IPv4-mapped IPv6
    addresses are shown as IPv4 (the kernel hashes such a connection as IPv4)."""
    dport = (key[0] << 8) | key[1]
    return _addr(family, key[2:18]), _addr(family, key[18:34]), dport


def decode_source(family: int, raw: bytes) -> str:
    return _addr(family, raw)


class Aggregator:
    """Parses sock_diag dump replies into :class:`SocketCounts`.

    ``ephemeral`` is a 65,536-byte map: 1 where a local port belongs to the usable ephemeral
    range (ip_local_port_range less ip_local_reserved_ports). Feed the LISTEN dump first
    (:meth:`feed_listeners`), then the other states (:meth:`feed`): a socket whose local port
    is a listener's is server-side (accepted sockets share the listener's port).
    """

    def __init__(self, ephemeral: bytes | bytearray, counts: SocketCounts | None = None) -> None:
        if len(ephemeral) != 65536:
            raise ValueError("the ephemeral port map must have 65,536 entries")
        self.ephemeral = bytes(ephemeral)
        self.counts = counts if counts is not None else SocketCounts()
        self.listen_ports: set[int] = {lst.port for lst in self.counts.listeners}

    @staticmethod
    def _messages(buf: bytes) -> Iterable[tuple[int, int]]:
        """(offset, type) of each message; raises on NLMSG_ERROR, stops after NLMSG_DONE."""
        o, n = 0, len(buf)
        while o + 16 <= n:
            length, kind = _HDR_LEN_TYPE.unpack_from(buf, o)
            if length < 16 or o + length > n:
                raise SockDiagError(_errno.EPROTO, f"sock_diag: truncated message at byte {o}")
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", buf, o + 16)[0]
                raise SockDiagError(
                    code, f"sock_diag dump refused: {_errno.errorcode.get(code, code)}"
                )
            yield o, kind
            if kind == NLMSG_DONE:
                return
            o += (length + 3) & ~3

    def feed_listeners(self, buf: bytes, family: int) -> bool:
        """Parse one reply of the LISTEN dump; True once the dump is complete."""
        c = self.counts
        for o, kind in self._messages(buf):
            if kind == NLMSG_DONE:
                return True
            if kind != SOCK_DIAG_BY_FAMILY:
                continue
            sport, _ = _PORTS.unpack_from(buf, o + _OFF_SPORT)
            rqueue, wqueue, _uid = _QUEUES.unpack_from(buf, o + _OFF_RQUEUE)
            inode = struct.unpack_from("=I", buf, o + _OFF_INODE)[0]
            addr = _addr(family, buf[o + _OFF_SRC : o + _OFF_SRC + 16])
            c.listeners.append(Listener(family, addr, sport, rqueue, wqueue, inode))
            c.by_state[TCP_LISTEN] += 1
            c.total += 1
            c.by_family[family] = c.by_family.get(family, 0) + 1
            self.listen_ports.add(sport)
        return False

    def feed(self, buf: bytes, family: int) -> bool:
        """Parse one reply of the all-but-LISTEN dump; True once the dump is complete.

        The hot path: per socket two struct reads, two slices and two dict look-ups."""
        c = self.counts
        by_state = c.by_state
        pools = c.pools.setdefault(family, {})
        sources = c.sources.setdefault(family, {})
        server, listen_ports, eph = c.server_side, self.listen_ports, self.ephemeral
        ports = _PORTS.unpack_from
        hdr = _HDR_LEN_TYPE.unpack_from
        n, o, seen, outside, done = len(buf), 0, 0, 0, False
        while o + 16 <= n:
            length, kind = hdr(buf, o)
            if kind != SOCK_DIAG_BY_FAMILY:
                if kind == NLMSG_DONE:
                    done = True
                    break
                if kind == NLMSG_ERROR or length < 16:
                    list(self._messages(buf[o:]))  # raises with the errno
                o += (length + 3) & ~3
                continue
            if length < MSG_LEN or o + length > n:
                raise SockDiagError(_errno.EPROTO, f"sock_diag: truncated message at byte {o}")
            state = buf[o + _OFF_STATE]
            sport, _dport = ports(buf, o + _OFF_SPORT)
            by_state[state] += 1
            seen += 1
            o2 = o
            o += (length + 3) & ~3
            if sport in listen_ports:
                server[sport] = server.get(sport, 0) + 1
                continue
            if not eph[sport]:
                outside += 1
                continue
            key = buf[o2 + 22 : o2 + 56]
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = [0, 0]
            pool[0] += 1
            if state == TCP_TIME_WAIT:
                pool[1] += 1
            skey = key[2:18]
            ports_of = sources.get(skey)
            if ports_of is None:
                ports_of = sources[skey] = bytearray(65536)
            ports_of[sport] = 1
        c.total += seen
        c.outside_range += outside
        c.by_family[family] = c.by_family.get(family, 0) + seen
        return done


def ephemeral_map(port_range: tuple[int, int], reserved: Iterable[tuple[int, int]] = ()) -> bytes:
    """The 65,536-byte map of usable ephemeral ports: the range less the reserved ports."""
    lo, hi = port_range
    out = bytearray(65536)
    out[lo : hi + 1] = b"\1" * (hi - lo + 1)
    for a, b in reserved:
        a, b = max(a, lo), min(b, hi)
        if a <= b:
            out[a : b + 1] = b"\0" * (b - a + 1)
    return bytes(out)


# --- the OS edge --------------------------------------------------------------------------------


def _dump(
    sock: socket.socket, family: int, states: int, seq: int, agg: Aggregator, listen: bool
) -> None:
    sock.send(dump_request(family, states, seq))
    feed = agg.feed_listeners if listen else agg.feed
    while True:
        buf = sock.recv(RECV_BYTES)
        if not buf:
            raise SockDiagError(_errno.EPROTO, "sock_diag: the kernel closed the dump early")
        if feed(buf, family):
            return


def read_sockets(
    port_range: tuple[int, int],
    reserved: Iterable[tuple[int, int]] = (),
    *,
    families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6),
) -> SocketCounts:
    """Every TCP socket of the network namespace this process is in, folded by pool.

    Raises :class:`SockDiagError` (an OSError) when netlink sock_diag is unavailable (not
    Linux, a kernel without inet_diag) or refuses the dump.
    """
    if not hasattr(socket, "AF_NETLINK"):
        raise SockDiagError(_errno.ENOSYS, "netlink sock_diag exists only on Linux")
    started = time.perf_counter()
    agg = Aggregator(ephemeral_map(port_range, reserved))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        seq = 1
        for family in families:
            try:
                _dump(sock, family, ONLY_LISTEN, seq, agg, listen=True)
            except SockDiagError as exc:
                if family == socket.AF_INET6 and exc.errno in (_errno.ENOENT, _errno.EAFNOSUPPORT):
                    continue  # IPv6 disabled or tcp_diag without IPv6: no IPv6 sockets
                raise
            seq += 1
        for family in families:
            try:
                _dump(sock, family, ALL_BUT_LISTEN, seq, agg, listen=False)
            except SockDiagError as exc:
                if family == socket.AF_INET6 and exc.errno in (_errno.ENOENT, _errno.EAFNOSUPPORT):
                    continue
                raise
            seq += 1
    agg.counts.read_s = time.perf_counter() - started
    return agg.counts
