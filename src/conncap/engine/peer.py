"""What the server did to a client worker's connections after their handshake.

**Held means held** (docs/engine.md, "Servers conncap does not own"): a worker opens until it
*holds* its quota, not until its handshakes reach it. A connection the server closes after its
handshake (FIN or RST) is counted by how it ended, its lifetime goes into a fixed log-bucket
histogram (bucket k: [2^(k-1), 2^k) ms, :data:`LIFE_BUCKETS`) and the first bytes the server
sent (at most :data:`MSG_MAX`, escaped) into a small table of distinct messages
(:class:`FirstBytes`: :data:`MSG_SLOTS`, the rest counted as "other"), all indexed by
descriptor, no object per connection. ``send``: a first message written on every connection;
one whose bytes are still unacknowledged after the timeout (TCP_INFO ``tcpi_unacked``,
:func:`unacked`) is closed and counted as a failure, not held. After a connect fails with an
error an ICMP message may carry (:data:`ICMP_ERRNOS`), later sockets set IP_RECVERR
(:func:`set_recverr`) so the ICMP type and code are read from the error queue
(:func:`read_icmp`; 3/13: administratively prohibited, a firewall).

The connector keeps the per-connection updates inline in its loop; this module holds the
tables, the constants and the socket reads they need.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from typing import Any

#: errno number used in counters for "the peer closed" (an EOF is not an errno).
EOF = 0
#: The server's first bytes: at most this many kept per message, at most this many distinct
#: messages per worker (more are counted as "other", slot :data:`MSG_OTHER`).
MSG_MAX = 256
MSG_SLOTS = 8
MSG_OTHER = 255
#: Buckets of the lifetime histogram of connections the server closed: bucket 0 is under
#: 1 ms, bucket k is [2^(k-1), 2^k) ms, the last one everything longer (about 2.3 hours).
LIFE_BUCKETS = 24
#: Linux IP_RECVERR / IPV6_RECVERR and the sock_extended_err origin of an ICMP message.
IP_RECVERR, IPV6_RECVERR = 11, 25
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
#: connect() errors an ICMP message may have caused (then IP_RECVERR is worth setting).
ICMP_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED, errno.EACCES, errno.EPERM}
)
_TCP_INFO = getattr(socket, "TCP_INFO", 11)


class FirstBytes:
    """The table of distinct first messages the server sent, and which one each held
    connection got (``of``, by descriptor: a slot 1..MSG_SLOTS, MSG_OTHER, or 0)."""

    __slots__ = ("msgs", "of", "other", "slot")

    def __init__(self, size: int) -> None:
        self.of = bytearray(size)
        #: [text, seen, closed] per distinct message, in the order first seen.
        self.msgs: list[list[Any]] = []
        self.slot: dict[bytes, int] = {}
        #: [seen, closed] of the messages past the table.
        self.other = [0, 0]

    def note(self, fd: int, data: bytes) -> None:
        """The first bytes the server sent on ``fd``: counted in the table."""
        key = data[:MSG_MAX]
        slot = self.slot.get(key)
        if slot is None:
            if len(self.msgs) < MSG_SLOTS:
                self.msgs.append([escape(key), 0, 0])
                slot = self.slot[key] = len(self.msgs)
            else:
                slot = MSG_OTHER
        if slot == MSG_OTHER:
            self.other[0] += 1
        else:
            self.msgs[slot - 1][1] += 1
        self.of[fd] = slot

    def report(self) -> list[list[str | int]] | None:
        """The table as a stats line carries it (``""``: other messages); None if empty."""
        if not self.msgs and not self.other[0]:
            return None
        out: list[list[str | int]] = [list(m) for m in self.msgs]
        if self.other[0]:
            out.append(["", *self.other])
        return out


def escape(data: bytes) -> str:
    """Bytes as printable text: ASCII kept, ``\\r``, ``\\n``, ``\\t`` and ``\\xNN`` for the rest."""
    out = []
    for b in data:
        if 32 <= b < 127 and b != 92:
            out.append(chr(b))
        else:
            out.append(_ESCAPES.get(b) or f"\\x{b:02x}")
    return "".join(out)


_ESCAPES = {13: "\\r", 10: "\\n", 9: "\\t", 92: "\\\\"}


def set_recverr(sock: Any, family: int) -> None:
    """IP_RECVERR (IPV6_RECVERR) on: ICMP errors go to the socket's error queue."""
    with contextlib.suppress(OSError):
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def note_icmp(counts: dict[str, int], sock: Any, family: int) -> None:
    """Count the ICMP type/code behind a failed connect (IP_RECVERR's error queue)."""
    key = read_icmp(sock, family)
    if key is not None:
        counts[key] = counts.get(key, 0) + 1


def read_icmp(sock: Any, family: int) -> str | None:
    """``icmp 3/13`` (type/code; ``icmp6 1/1``) from a socket's error queue, None if empty."""
    try:
        _, anc, _, _ = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    except (OSError, AttributeError):
        return None
    for _level, _kind, data in anc:
        if len(data) >= 8:
            _ee_errno, origin, itype, code = struct.unpack_from("=IBBB", data)
            if origin == SO_EE_ORIGIN_ICMP:
                return f"icmp {itype}/{code}"
            if origin == SO_EE_ORIGIN_ICMP6:
                return f"icmp6 {itype}/{code}"
    return None


def unacked(fd: int, family: int) -> bool:
    """Whether the socket ``fd`` has sent bytes the peer has not acknowledged
    (TCP_INFO ``tcpi_unacked``; False where it cannot be read)."""
    try:
        s = socket.socket(family, socket.SOCK_STREAM, 0, fd)
    except OSError:
        return False
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return False
    finally:
        s.detach()
    return len(info) >= 28 and struct.unpack_from("=I", info, 24)[0] > 0
