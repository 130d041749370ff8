"""Take one :class:`Reading` of this host (or of the network namespace this process is in):
the OS edge of the doctor. Sends no packet and opens no connection.

Sources: netlink sock_diag (``sockdiag``), ``conncap.limits.read_limits`` (port range,
reserved ports, tcp_tw_reuse, file-nr, tcp_mem, conntrack max), ``conncap.probes`` (TcpExt
counters, sockstat, conntrack), psutil (each process's descriptors and RLIMIT_NOFILE), and
``/proc/PID/fd`` links to name the process behind a full listener. What cannot be read is
recorded in ``Reading.unknown`` and left None.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable

from conncap import probes
from conncap.doctor.reading import Conntrack, Counters, Descriptors, Owner, ProcessFds, Reading
from conncap.doctor.sockdiag import SocketCounts, read_sockets
from conncap.limits import HostLimits, read_limits

#: Environment variable set in the child that ``--netns NAME`` starts inside the namespace.
NETNS_ENV = "CONNCAP_DOCTOR_NETNS"
#: Listeners at least this full get their owning process looked up (a walk of /proc/*/fd).
OWNER_LOOKUP_FILL = 0.5
#: How many of the fullest processes a reading keeps.
KEEP_PROCESSES = 20


def read_counters(reader: probes.Reader = probes.read_text) -> tuple[Counters, list[str]]:
    """TcpExt ListenOverflows/ListenDrops and conntrack's insert_failed/drop, now."""
    unknown: list[str] = []
    overflows = drops = insert_failed = drop = None
    try:
        net = probes.netstat_counters(reader=reader)
        overflows, drops = net.listen_overflows, net.listen_drops
    except probes.ProbeError as exc:
        unknown.append(f"listen overflow counters: {exc}")
    try:
        ct = probes.conntrack(reader=reader)
        insert_failed, drop = ct.insert_failed, ct.drop
    except probes.ProbeError as exc:
        unknown.append(f"conntrack statistics: {exc}")
    return Counters(time.monotonic(), overflows, drops, insert_failed, drop), unknown


def _same_netns_filter() -> Callable[[int], bool | None] | None:
    """When running for ``--netns``: a test "is process PID in our network namespace?"
    (None: cannot tell, another user's process)."""
    if not os.environ.get(NETNS_ENV):
        return None
    own = os.stat("/proc/self/ns/net").st_ino

    def same(pid: int) -> bool | None:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == own
        except PermissionError:
            return None
        except OSError:
            return False

    return same


def read_descriptors(keep: int = KEEP_PROCESSES) -> Descriptors:
    """Every process's descriptors against its RLIMIT_NOFILE (psutil); the fullest ``keep``."""
    import psutil

    same = _same_netns_filter()
    netns = os.environ.get(NETNS_ENV)
    me = os.getpid()
    rows: list[ProcessFds] = []
    scanned = unknown = outside_unknown = 0
    for proc in psutil.process_iter(["name"]):
        pid = proc.pid
        if pid == me:
            continue
        if same is not None:
            inside = same(pid)
            if inside is False:
                continue
            if inside is None:
                outside_unknown += 1
                continue
        scanned += 1
        name = proc.info.get("name") or "?"
        try:
            fds: int | None = proc.num_fds()
        except psutil.AccessDenied:
            fds = None
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            scanned -= 1
            continue
        soft: int | None
        hard: int | None
        unlimited = False
        try:
            soft, hard = proc.rlimit(psutil.RLIMIT_NOFILE)
            if soft == psutil.RLIM_INFINITY:
                soft, unlimited = None, True
            if hard == psutil.RLIM_INFINITY:
                hard = None
        except psutil.AccessDenied:
            soft = hard = None
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            scanned -= 1
            continue
        if fds is None or (soft is None and not unlimited):
            unknown += 1
        rows.append(ProcessFds(pid, name, fds, soft, hard, unlimited))
    rows.sort(key=lambda p: (-(p.fill if p.fill is not None else -1.0), p.pid))
    scope = f"network namespace {netns}" if netns else "host"
    return Descriptors(tuple(rows[:keep]), scanned, unknown, scope, outside_unknown)


def find_owners(inodes: Iterable[int]) -> dict[int, Owner]:
    """The process holding each socket inode, from /proc/PID/fd links (stops once all are
    found; processes it may not read are skipped)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, Owner] = {}
    if not wanted:
        return found
    same = _same_netns_filter()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if same is not None and not same(pid):
            continue
        try:
            with os.scandir(f"/proc/{pid}/fd") as fds:
                for fd in fds:
                    try:
                        target = os.readlink(fd.path)
                    except OSError:
                        continue
                    inode = wanted.get(target)
                    if inode is not None and inode not in found:
                        found[inode] = Owner(pid, _comm(pid))
        except OSError:
            continue
        if len(found) == len(wanted):
            break
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _tcp_mem_bytes(limits: HostLimits) -> int | None:
    sock = limits.sockstat.value
    page = limits.extra.get("page_size")
    if sock is None or page is None or page.value is None:
        return None
    return int(sock.tcp_mem_pages) * int(page.value)


def take_reading(
    *,
    sample_s: float = 1.0,
    baseline: Counters | None = None,
    processes: bool = True,
) -> Reading:
    """One look at this host. Without ``baseline`` the counters are read twice, ``sample_s``
    apart (the rest of the reading happens in between), to give ListenOverflows and conntrack
    insert_failed rates; with one (watch), they are read once and compared with it."""
    started = time.perf_counter()
    unknown: list[str] = []
    first: Counters | None = baseline
    if first is None and sample_s > 0:
        first, missing = read_counters()
        unknown += missing
    limits = read_limits()
    for name in ("port_range", "tcp_tw_reuse", "files_open", "files_max", "tcp_mem"):
        fact = limits.facts()[name]
        if fact.value is None and fact.reason and not fact.reason.startswith("no limit"):
            unknown.append(f"{name}: {fact.reason}")

    sockets: SocketCounts | None = None
    rng = limits.port_range.value
    if rng is None:
        unknown.append("sockets: the ephemeral port range is unknown, so pools cannot be told")
    else:
        try:
            sockets = read_sockets(rng, limits.reserved_ports.value or ())
        except OSError as exc:
            unknown.append(f"sockets: netlink sock_diag failed ({exc.strerror or exc})")

    descriptors: Descriptors | None = None
    t_proc = time.perf_counter()
    if processes:
        descriptors = read_descriptors()
        if descriptors.unknown:
            unknown.append(
                f"descriptors of {descriptors.unknown:,} of {descriptors.scanned:,} processes: "
                "not readable without privilege (shown as unknown)"
            )
        if descriptors.outside_unknown:
            unknown.append(
                f"descriptors: {descriptors.outside_unknown:,} processes whose network namespace "
                "cannot be read (/proc/PID/ns/net) were left out"
            )
    t_proc = time.perf_counter() - t_proc

    owners: dict[int, Owner] = {}
    if sockets is not None:
        full = [
            lst.inode
            for lst in sockets.listeners
            if lst.backlog > 0 and lst.accept_queue / lst.backlog >= OWNER_LOOKUP_FILL
        ]
        owners = find_owners(full)

    try:
        ct_now = probes.conntrack()
        conntrack = Conntrack(ct_now.count, ct_now.max)
    except probes.ProbeError as exc:
        conntrack = Conntrack(None, None)
        unknown.append(f"conntrack: {exc}")

    if baseline is None and first is not None:
        wait = sample_s - (time.monotonic() - first.at)
        if wait > 0:
            time.sleep(wait)
    counters, missing = read_counters()
    unknown += [m for m in missing if m not in unknown]
    total = time.perf_counter() - started
    return Reading(
        taken_at=time.time(),
        os="linux" if sys.platform.startswith("linux") else sys.platform,
        netns=os.environ.get(NETNS_ENV) or None,
        limits=limits,
        sockets=sockets,
        descriptors=descriptors,
        counters=counters,
        baseline=first,
        conntrack=conntrack,
        tcp_mem_bytes=_tcp_mem_bytes(limits),
        listener_owners=owners,
        read_s={
            "sockets": sockets.read_s if sockets is not None else 0.0,
            "processes": t_proc,
            "total": total,
        },
        unknown=tuple(unknown),
    )
