"""This network namespace's port facts, as a client worker reads them at set-up.

The local port range and the reserved ports (which ports ``explicit`` bind mode walks), each
worker's slice of the range, and the count of sockets in TIME_WAIT (the evidence for cause
``time-wait``). Read from /proc through :mod:`conncap.procfs`; a value that cannot be read is
the kernel's default or None, never an error: the worker still runs.
"""

from __future__ import annotations

from conncap import procfs


def read_port_range(default: tuple[int, int] = (32768, 60999)) -> tuple[int, int]:
    """This network namespace's ip_local_port_range (inclusive)."""
    try:
        with open(procfs.PORT_RANGE) as fh:
            return procfs.parse_port_range(fh.read())
    except (OSError, ValueError):
        return default


def read_reserved_ports() -> frozenset[int]:
    """This network namespace's ip_local_reserved_ports, expanded."""
    try:
        with open(procfs.RESERVED_PORTS) as fh:
            return procfs.expand_ports(procfs.parse_reserved_ports(fh.read()))
    except (OSError, ValueError):
        return frozenset()


def read_time_wait(path: str = "/proc/net/sockstat") -> int | None:
    """Sockets in TIME_WAIT in this process's network namespace (``tw`` of the ``TCP:`` line
    of /proc/net/sockstat, per namespace); None where it cannot be read."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("TCP:"):
                    words = line.split()
                    return int(words[words.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def port_slice(lo: int, hi: int, index: int, workers: int) -> tuple[int, int]:
    """Worker ``index`` of ``workers``: its contiguous share of [lo, hi] (inclusive)."""
    size = hi - lo + 1
    start = lo + size * index // workers
    end = lo + size * (index + 1) // workers - 1
    return start, end
