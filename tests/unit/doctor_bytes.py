"""Netlink sock_diag replies built with the kernel's struct layout, for the doctor's tests."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from conncap.doctor.sockdiag import (
    NLMSG_DONE,
    SOCK_DIAG_BY_FAMILY,
    Aggregator,
    SocketCounts,
    ephemeral_map,
)

AF4, AF6 = socket.AF_INET, socket.AF_INET6
ESTABLISHED, TIME_WAIT, CLOSE_WAIT, LISTEN = 1, 6, 8, 10


def msg(
    family: int,
    state: int,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    *,
    rqueue: int = 0,
    wqueue: int = 0,
    inode: int = 0,
    attrs: bytes = b"",
) -> bytes:
    """One SOCK_DIAG_BY_FAMILY reply: nlmsghdr + inet_diag_msg (+ attributes)."""

    def raw(addr: str) -> bytes:
        return socket.inet_pton(family, addr).ljust(16, b"\0")

    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack(">HH", sport, dport) + raw(src) + raw(dst)
    body += struct.pack("=III", 0, 0, 0)  # if, cookie[2]
    body += struct.pack("=IIIII", 0, rqueue, wqueue, 0, inode)
    body += attrs
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, NLMSG_DONE, 2, 1, 0) + b"\0" * 4
#: INET_DIAG_SHUTDOWN, which the kernel adds to every full socket: a u8 padded to 8 bytes.
SHUTDOWN_ATTR = struct.pack("=HH", 5, 8) + b"\0\0\0\0"


def counts(
    rows: Iterable[bytes],
    listeners: Iterable[bytes] = (),
    rng: tuple[int, int] = (40000, 40099),
    family: int = AF4,
) -> SocketCounts:
    """Parse ``listeners`` then ``rows`` (replies built with :func:`msg`) as one dump."""
    agg = Aggregator(ephemeral_map(rng))
    assert agg.feed_listeners(b"".join(listeners) + DONE, family)
    assert agg.feed(b"".join(rows) + DONE, family)
    return agg.counts
