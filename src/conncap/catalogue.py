"""The error catalogue: what each errno / Winsock code means for opening and accepting TCP
connections, which limit it points at, and how to raise that limit. Pure data, no I/O.

SKELETON: the Cause ids and cause_of_errno() are stable API; the full entry table, lookup()
and advice() are being filled in.
"""

from __future__ import annotations

import errno as _errno
from enum import StrEnum


class Cause(StrEnum):
    """Why a connection could not be opened or accepted; used in every command and JSON."""

    EPHEMERAL_PORTS = "ephemeral-ports"
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
