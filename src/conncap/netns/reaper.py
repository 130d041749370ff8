"""Find and end the processes still inside a conncap namespace, by pid, before deleting it.

A namespace outlives ``ip netns del`` for as long as a process is inside it (with its veths
and sockets), so teardown must end those processes first. Only processes inside a
``conncap-*`` namespace are touched: conncap started them there. Same test as ``ip netns
pids NAME``: a process is inside when its /proc/PID/ns/net is the namespace's nsfs inode.
Signals go through a pidfd where the kernel has them, so a pid recycled between the check and
the signal is never hit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

NETNS_DIRS: tuple[Path, ...] = (Path("/run/netns"), Path("/var/run/netns"))


def netns_inode(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a named namespace, None if it is not mounted."""
    for d in NETNS_DIRS:
        try:
            st = os.stat(d / name)
        except OSError:
            continue
        return (st.st_dev, st.st_ino)
    return None


def _proc_netns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in(names: Iterable[str]) -> dict[str, list[int]]:
    """Processes inside each named namespace (one /proc scan for all of them)."""
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        ino = netns_inode(name)
        if ino is not None:
            wanted[ino] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in (me, 1):
            continue
        ns = _proc_netns(pid)
        if ns is not None and ns in wanted:
            found[wanted[ns]].append(pid)
    for pids in found.values():
        pids.sort()
    return found


def _signal(pid: int, netns: tuple[int, int], signum: int) -> None:
    """Signal ``pid`` only if it is still inside ``netns``."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    try:
        if _proc_netns(pid) != netns:
            return  # gone, or no longer ours
        if fd >= 0:
            signal.pidfd_send_signal(fd, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)


def terminate(by_namespace: Mapping[str, list[int]], grace: float = 1.0) -> list[int]:
    """SIGTERM the given pids, wait up to ``grace`` seconds, SIGKILL what is left.

    Returns the pids that were signalled. A pid counts as gone once it has left the namespace
    (dead, or a zombie waiting for its parent, which no longer holds the namespace).
    """
    targets: list[tuple[int, tuple[int, int]]] = []
    for name, pids in by_namespace.items():
        ino = netns_inode(name)
        if ino is not None:  # an unmounted namespace cannot be checked: touch nothing
            targets.extend((pid, ino) for pid in pids if pid not in (os.getpid(), 1))
    if not targets:
        return []
    for pid, ino in targets:
        _signal(pid, ino, signal.SIGTERM)
    remaining = _wait_gone(targets, grace)
    for pid, ino in remaining:
        _signal(pid, ino, signal.SIGKILL)
    _wait_gone(remaining, 2.0)
    return [pid for pid, _ in targets]


def _wait_gone(
    targets: list[tuple[int, tuple[int, int]]], timeout: float
) -> list[tuple[int, tuple[int, int]]]:
    deadline = time.monotonic() + timeout
    left = list(targets)
    while left:
        left = [(p, ino) for p, ino in left if _proc_netns(p) == ino]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left
