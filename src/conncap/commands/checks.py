"""Checks every command makes before it starts anything: one ``argparse`` type per kind of
number (finite and in range, or exit 2 with one line), output paths that can be written, and
what this host can sensibly run (connections, worker processes), so that a size no host
could hold is refused before a single worker is forked.

The host's figures are read once, from /proc and the process's own limits; a figure that
cannot be read bounds nothing (psutil's "degrade, don't crash").
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conncap.errors import UsageError

# ---- numbers -------------------------------------------------------------------------------


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a rate, a timeout, a duration)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number of 0 or more (a hold, a plateau, a lifetime)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def float_range(lo: float, hi: float, *, hi_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or [lo, hi) with ``hi_open``)."""

    def parse(text: str) -> float:
        value = _float(text)
        if value < lo or value > hi or (hi_open and value == hi):
            upper = f"below {hi:g}" if hi_open else f"{hi:g}"
            raise argparse.ArgumentTypeError(f"must be from {lo:g} to {upper}, not {text}")
        return value

    parse.__name__ = "number"
    return parse


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """A whole number of at least ``lo`` (and at most ``hi``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo:,} to {hi:,}" if hi is not None else f"at least {lo:,}"
            raise argparse.ArgumentTypeError(f"must be {span}, not {text}")
        return value

    parse.__name__ = "whole number"
    return parse


def int_or_auto(lo: int = 1, hi: int | None = None) -> Callable[[str], int | None]:
    """A whole number in range, or ``auto`` (None)."""
    number = int_range(lo, hi)

    def parse(text: str) -> int | None:
        return None if text == "auto" else number(text)

    parse.__name__ = "number or auto"
    return parse


class Deprecated(argparse.Action):
    """An old spelling that still works: stores into the new flag's ``dest`` and says once on
    stderr what to write instead."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kw: object) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kw)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        import sys

        sys.stderr.write(f"conncap: note: {option_string} is deprecated; write {self.new}\n")
        setattr(namespace, self.dest, values)


# ---- output paths --------------------------------------------------------------------------


def _try_write_in(directory: Path, flag: str, path: str) -> None:
    """Create and remove a scratch file in ``directory``: the one test root cannot pass by
    privilege (a read-only mount, /proc, a full disk's inode table)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".conncap-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in {directory} ({exc.strerror})") from None


def check_output_file(path: str | None, flag: str) -> None:
    """A file the result can be written to: not a directory, in a writable directory."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: no directory {parent}")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write there (permission denied)")
    _try_write_in(parent, flag, path)


def check_output_dir(path: str | None, flag: str) -> None:
    """A directory the files can be written to, created now when missing."""
    if not path:
        return
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create it ({exc.strerror})") from None
    _try_write_in(p, flag, path)


# ---- what this host can run ----------------------------------------------------------------

#: Memory a worker process takes (measured: 13 MiB RSS, 6 MiB USS idle; its per-descriptor
#: tables add a few bytes per descriptor), rounded up.
WORKER_BYTES = 16 << 20
#: Most worker processes conncap starts, whatever the memory.
MAX_WORKERS = 4096
#: Kernel memory one TCP socket takes at least (measured 8.3 KiB for both ends of a loopback
#: connection: slabs TCP, sock_inode_cache, dentry, filp, eventpoll).
SOCKET_BYTES = 4096


@dataclass(frozen=True)
class HostCapacity:
    """The most this host can sensibly run, and why (one phrase each)."""

    workers: int
    workers_why: str
    connections: int
    connections_why: str


def _meminfo_available() -> int | None:
    from conncap import procfs

    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return procfs.parse_meminfo(f.read()).get("MemAvailable")
    except (OSError, ValueError, procfs.ProbeError):
        return None


def _files_free() -> int | None:
    try:
        with open("/proc/sys/fs/file-nr", encoding="ascii") as f:
            used, _, most = (int(x) for x in f.read().split()[:3])
    except (OSError, ValueError):
        return None
    return max(0, most - used)


def host_capacity(ends: int = 1, nofile: int | None = None) -> HostCapacity:
    """Worker processes and connections this host can hold; ``ends`` is 2 when both ends of
    every connection live on this host (``conncap run``)."""
    from conncap.engine.plan import nofile_hard
    from conncap.engine.protocol import CLIENT_WORKER_FDS

    avail = _meminfo_available()
    workers, workers_why = MAX_WORKERS, f"conncap starts at most {MAX_WORKERS:,} processes"
    if avail is not None and avail // 2 // WORKER_BYTES < workers:
        workers = max(1, avail // 2 // WORKER_BYTES)
        workers_why = (
            f"each takes about {WORKER_BYTES >> 20} MiB and half of MemAvailable "
            f"({avail / 2**30:,.1f} GiB) is for workers"
        )
    per_worker = max(1, (nofile or nofile_hard()) - CLIENT_WORKER_FDS - 8)
    bounds = [
        (
            workers * per_worker,
            f"{workers:,} worker processes × {per_worker:,} descriptors each (ulimit -Hn)",
        )
    ]
    if avail is not None:
        bounds.append(
            (
                avail // (SOCKET_BYTES * ends),
                f"MemAvailable {avail / 2**30:,.1f} GiB ÷ at least {SOCKET_BYTES * ends // 1024} "
                "KiB of kernel memory per connection",
            )
        )
    free = _files_free()
    if free is not None:
        bounds.append(
            (free // ends, f"the system file table has {free:,} free entries (fs.file-max)")
        )
    connections, why = min(bounds)
    return HostCapacity(workers, workers_why, max(1, connections), why)


def check_count(count: int, flag: str, capacity: HostCapacity) -> None:
    if count > capacity.connections:
        raise UsageError(
            f"{flag} {count:,} is more than this host can hold: at most "
            f"{capacity.connections:,} ({capacity.connections_why})"
        )


def check_workers(workers: int, flag: str, capacity: HostCapacity) -> None:
    if workers > capacity.workers:
        raise UsageError(
            f"{flag} {workers:,} is more worker processes than this host can run: at most "
            f"{capacity.workers:,} ({capacity.workers_why})"
        )
