"""Readers of a run's measurements: kernel memory, socket counts, TCP counters, process memory.

Linux only (the /proc files below); every reader takes an injectable ``root`` and ``reader`` so
tests feed recorded excerpts and a caller can read another network namespace. The parsers are
in :mod:`conncap.procfs` (text in, values out) and raise :class:`ProbeError` with the file and
the defect when a file is malformed; :class:`conncap.probes.sampler.Sampler` turns such an error
into ``None`` for that sample and keeps the message (degrade, don't crash).

Which kernel memory a connection costs is documented in docs/report.md ("What a connection
costs in the kernel"): measured on Linux 6.18 over a loopback ramp, each connection (both
ends) grew the caches in :data:`CONNECTION_CACHES` by about 8 KB and nothing else measurably.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from conncap.procfs import (
    NetCounters,
    ProbeError,
    SlabCache,
    SockStat,
    parse_meminfo,
    parse_netstat,
    parse_nf_conntrack_stat,
    parse_slabinfo,
    parse_sockstat,
)

#: Reads the text of a file given its path (the default reads it; a namespace reader runs
#: ``ip netns exec NS cat PATH``). May raise OSError.
Reader = Callable[[str], str]

#: Slab caches that grow with each TCP connection (per socket: the TCP/TCPv6 object, the socket
#: inode, its dentry and struct file, the LSM blobs, epoll entries; per client port: the bind
#: buckets; transient: request and TIME_WAIT socks, skb heads). Caches that the kernel merged
#: into another one (see /sys/kernel/slab/NAME -> :alias) do not appear under their own name in
#: /proc/slabinfo: on 6.18, tcp_bind_bucket and tcp_bind2_bucket are counted under
#: eventpoll_epi, which is why that one grows even without epoll.
CONNECTION_CACHES: tuple[str, ...] = (
    "TCP",
    "TCPv6",
    "request_sock_TCP",
    "request_sock_TCPv6",
    "tw_sock_TCP",
    "tw_sock_TCPv6",
    "sock_inode_cache",
    "dentry",
    "filp",
    "eventpoll_epi",
    "eventpoll_pwq",
    "ep_head",
    "tcp_bind_bucket",
    "tcp_bind2_bucket",
    "lsm_inode_cache",
    "lsm_file_cache",
    "skbuff_head_cache",
    "skbuff_small_head",
    "skbuff_fclone_cache",
)
CACHE_SET = frozenset(CONNECTION_CACHES)


def read_text(path: str) -> str:
    """The default :data:`Reader`: the file's text."""
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read()


def netns_reader(namespace: str, *, timeout_s: float = 5.0) -> Reader:
    """A reader that sees files as a process inside network namespace ``namespace`` does.

    /proc/net/* and /proc/sys/net/* are per namespace. Costs one process per read (about
    1.5 ms); reading ``/proc/PID/net/...`` of a process inside the namespace is cheaper.
    """

    def read(path: str) -> str:
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", namespace, "cat", path],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OSError(f"ip netns exec {namespace} cat {path}: {exc}") from exc
        if done.returncode != 0:
            raise OSError(f"ip netns exec {namespace} cat {path}: {done.stderr.strip()}")
        return done.stdout

    return read


def page_size_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE"))


def _read(reader: Reader, path: str) -> str:
    try:
        return reader(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ProbeError(f"{path}: cannot read it ({why})") from exc


# --- readers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelMemory:
    """Kernel memory that connections use, in bytes.

    ``tcp_slab_bytes`` is the memory held by :data:`CONNECTION_CACHES` (None without a readable
    /proc/slabinfo, which needs root); ``slab_bytes`` is all slab memory (meminfo ``Slab``);
    ``sock_mem_bytes`` is the TCP socket-buffer memory the kernel accounts (sockstat ``mem``
    pages x page size, host-wide).
    """

    slab_bytes: int
    tcp_slab_bytes: int | None
    sock_mem_bytes: int
    source: Literal["slabinfo", "meminfo"]
    unreclaimable_bytes: int | None = None  # meminfo SUnreclaim
    caches: Mapping[str, int] = field(default_factory=dict)  # bytes per connection cache

    @property
    def kernel_bytes(self) -> int:
        """What to regress against held connections: the connection caches (or all slab
        memory when slabinfo is unreadable) plus socket buffers."""
        base = self.tcp_slab_bytes if self.tcp_slab_bytes is not None else self.slab_bytes
        return base + self.sock_mem_bytes


def kernel_memory_from(
    meminfo: Mapping[str, int],
    sock: SockStat,
    slabinfo: Mapping[str, SlabCache] | None,
    page_size: int,
    path: str = "/proc/meminfo",
) -> KernelMemory:
    """Build :class:`KernelMemory` from parsed files (slabinfo None = unreadable)."""
    if "Slab" not in meminfo:
        raise ProbeError(f"{path}: malformed (no 'Slab:' line)")
    sock_mem = sock.tcp_mem_pages * page_size
    if slabinfo is None:
        return KernelMemory(
            slab_bytes=meminfo["Slab"],
            tcp_slab_bytes=None,
            sock_mem_bytes=sock_mem,
            source="meminfo",
            unreclaimable_bytes=meminfo.get("SUnreclaim"),
        )
    caches = {
        name: slabinfo[name].bytes_held(page_size) for name in CONNECTION_CACHES if name in slabinfo
    }
    return KernelMemory(
        slab_bytes=meminfo["Slab"],
        tcp_slab_bytes=sum(caches.values()),
        sock_mem_bytes=sock_mem,
        source="slabinfo",
        unreclaimable_bytes=meminfo.get("SUnreclaim"),
        caches=caches,
    )


def kernel_memory(
    root: str = "/proc", reader: Reader = read_text, page_size: int | None = None
) -> KernelMemory:
    """Kernel memory now: slabinfo when readable (root), else meminfo ``Slab``; plus sockstat."""
    pages = page_size or page_size_bytes()
    meminfo = parse_meminfo(_read(reader, f"{root}/meminfo"), f"{root}/meminfo")
    sock = parse_sockstat(_read(reader, f"{root}/net/sockstat"), f"{root}/net/sockstat")
    slab: dict[str, SlabCache] | None
    try:
        text = reader(f"{root}/slabinfo")
    except OSError:
        slab = None  # not root, or CONFIG_SLUB_DEBUG off: fall back to meminfo
    else:
        slab = parse_slabinfo(text, f"{root}/slabinfo", CACHE_SET)
    return kernel_memory_from(meminfo, sock, slab, pages, f"{root}/meminfo")


def sockstat(root: str = "/proc", reader: Reader = read_text) -> SockStat:
    """TCP socket counts of the network namespace ``root``/``reader`` sees (``ss -s`` shows the
    same numbers). inuse, orphan and tw are per namespace; alloc and mem are host-wide."""
    return parse_sockstat(_read(reader, f"{root}/net/sockstat"), f"{root}/net/sockstat")


def netstat_counters(root: str = "/proc", reader: Reader = read_text) -> NetCounters:
    """TCP counters of one network namespace (/proc/net/netstat and /proc/net/snmp).

    ``root`` may be ``/proc/PID`` to read the namespace process PID lives in.
    """
    netstat = _read(reader, f"{root}/net/netstat")
    snmp = _read(reader, f"{root}/net/snmp")
    return parse_netstat(netstat, snmp, root)


def mem_info(root: str = "/proc", reader: Reader = read_text) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    return parse_meminfo(_read(reader, f"{root}/meminfo"), f"{root}/meminfo")


def mem_available(root: str = "/proc", reader: Reader = read_text) -> int:
    """MemAvailable in bytes (what ``free -b`` shows as "available")."""
    info = mem_info(root, reader)
    if "MemAvailable" not in info:
        raise ProbeError(f"{root}/meminfo: no MemAvailable line (Linux before 3.14?)")
    return info["MemAvailable"]


@dataclass(frozen=True, slots=True)
class Conntrack:
    """Connection tracking in one namespace; all None when nf_conntrack is not loaded."""

    count: int | None
    max: int | None
    drop: int | None  # packets dropped because the table was full ("table full, dropping")
    early_drop: int | None
    insert_failed: int | None


def conntrack(root: str = "/proc", reader: Reader = read_text) -> Conntrack:
    """nf_conntrack_count/max and the drop counters, or all None without nf_conntrack."""

    def sysctl(name: str) -> int | None:
        path = f"{root}/sys/net/netfilter/{name}"
        try:
            text = reader(path)
        except OSError:
            return None
        try:
            return int(text.strip())
        except ValueError:
            raise ProbeError(f"{path}: malformed ({text.strip()[:30]!r} is not a number)") from None

    stats: dict[str, int] = {}
    try:
        text = reader(f"{root}/net/stat/nf_conntrack")
    except OSError:
        pass
    else:
        stats = parse_nf_conntrack_stat(text, f"{root}/net/stat/nf_conntrack")
    return Conntrack(
        count=sysctl("nf_conntrack_count"),
        max=sysctl("nf_conntrack_max"),
        drop=stats.get("drop"),
        early_drop=stats.get("early_drop"),
        insert_failed=stats.get("insert_failed"),
    )


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    """Memory of a set of processes, summed. ``uss`` is None when USS could not be read for
    every one of them (then ``method`` is "rss"); ``gone`` lists pids that no longer exist."""

    rss: int
    uss: int | None
    method: Literal["uss", "rss"]
    gone: tuple[int, ...] = ()

    @property
    def bytes(self) -> int:
        """USS when known (memory that is the processes' own), else RSS."""
        return self.uss if self.uss is not None else self.rss


def process_memory(pids: Iterable[int], *, uss: bool = True) -> ProcessMemory:
    """RSS and, where permitted, USS (psutil ``memory_full_info``) of ``pids``, summed."""
    import psutil

    rss_total = 0
    uss_total: int | None = 0 if uss else None
    gone: list[int] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if uss_total is not None:
                try:
                    full = proc.memory_full_info()
                except psutil.AccessDenied:
                    uss_total = None
                else:
                    rss_total += full.rss
                    uss_total += full.uss
                    continue
            rss_total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            gone.append(pid)
    method: Literal["uss", "rss"] = "uss" if uss_total is not None else "rss"
    return ProcessMemory(rss=rss_total, uss=uss_total, method=method, gone=tuple(gone))
