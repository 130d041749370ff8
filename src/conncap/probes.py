"""Measurements taken during a run: kernel memory, socket counts, TCP counters, process memory.

Linux only (the /proc files below); every reader takes an injectable ``root`` and ``reader`` so
tests feed recorded excerpts and a caller can read another network namespace. The parsers are
pure (text in, values out) and raise :class:`ProbeError` with the file and the defect when a file
is malformed; the :class:`Sampler` turns such an error into ``None`` for that sample and keeps
the message (degrade, don't crash).

Which kernel memory a connection costs is documented in docs/report.md ("What a connection
costs in the kernel"): measured on Linux 6.18 over a loopback ramp, each connection (both
ends) grew the caches in :data:`CONNECTION_CACHES` by about 8 KB and nothing else measurably.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conncap.errors import ConncapError
from conncap.limits import SockStat

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
_CACHE_SET = frozenset(CONNECTION_CACHES)


class ProbeError(ConncapError):
    """A /proc file could not be read or is not in the expected format (message says which)."""


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


def _page_size() -> int:
    return int(os.sysconf("SC_PAGE_SIZE"))


def _read(reader: Reader, path: str) -> str:
    try:
        return reader(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ProbeError(f"{path}: cannot read it ({why})") from exc


# --- parsers (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlabCache:
    """One line of /proc/slabinfo (version 2.1)."""

    name: str
    active_objs: int
    num_objs: int
    objsize: int
    objperslab: int
    pagesperslab: int
    num_slabs: int

    def bytes_held(self, page_size: int) -> int:
        """Memory the cache holds (its slabs' pages, free slots included)."""
        return self.num_slabs * self.pagesperslab * page_size


def parse_slabinfo(
    text: str, path: str = "/proc/slabinfo", names: Container[str] | None = None
) -> dict[str, SlabCache]:
    """Parse /proc/slabinfo (version 2.x, SLUB or SLAB); only the caches in ``names`` if given
    (parsing all ~250 lines costs about 1 ms of Python, the wanted ones a fifth of it)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("slabinfo - version: 2."):
        first = lines[0][:40] if lines else "an empty file"
        raise ProbeError(f"{path}: malformed (expected 'slabinfo - version: 2.x', got {first!r})")
    caches: dict[str, SlabCache] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        if names is not None and line.split(None, 1)[0] not in names:
            continue
        parts = line.split(":")
        head = parts[0].split()
        slabdata = parts[2].split() if len(parts) >= 3 else []
        if len(head) != 6 or len(slabdata) < 3 or slabdata[0] != "slabdata":
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}")
        try:
            caches[head[0]] = SlabCache(
                name=head[0],
                active_objs=int(head[1]),
                num_objs=int(head[2]),
                objsize=int(head[3]),
                objperslab=int(head[4]),
                pagesperslab=int(head[5]),
                num_slabs=int(slabdata[2]),
            )
        except ValueError:
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}") from None
    if not caches and names is None:
        raise ProbeError(f"{path}: malformed (no cache lines)")
    return caches


def parse_meminfo(text: str, path: str = "/proc/meminfo") -> dict[str, int]:
    """Parse /proc/meminfo into bytes (``kB`` values x 1024; counts such as HugePages_Total
    stay counts)."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields:
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}")
        try:
            value = int(fields[0])
        except ValueError:
            raise ProbeError(f"{path}: malformed line {n}: {line[:60]!r}") from None
        unit = fields[1] if len(fields) > 1 else ""
        out[key.strip()] = value * 1024 if unit == "kB" else value
    return out


def _key_values(line: str, path: str) -> dict[str, int]:
    """``TCP: inuse 3 orphan 0 tw 1 ...`` -> {"inuse": 3, ...}."""
    words = line.split(":", 1)[1].split()
    if len(words) % 2:
        raise ProbeError(f"{path}: malformed line {line[:60]!r}")
    out: dict[str, int] = {}
    for k, v in zip(words[::2], words[1::2], strict=True):
        try:
            out[k] = int(v)
        except ValueError:
            raise ProbeError(f"{path}: malformed line {line[:60]!r}") from None
    return out


def parse_sockstat(text: str, path: str = "/proc/net/sockstat") -> SockStat:
    """Parse /proc/net/sockstat (``mem`` stays in pages, as the kernel prints it)."""
    sockets: dict[str, int] | None = None
    tcp: dict[str, int] | None = None
    for line in text.splitlines():
        if line.startswith("sockets:"):
            sockets = _key_values(line, path)
        elif line.startswith("TCP:"):
            tcp = _key_values(line, path)
    need = ("inuse", "orphan", "tw", "alloc", "mem")
    if tcp is None or any(k not in tcp for k in need):
        raise ProbeError(f"{path}: malformed (no complete 'TCP: inuse … mem …' line)")
    return SockStat(
        tcp_inuse=tcp["inuse"],
        tcp_orphan=tcp["orphan"],
        tcp_tw=tcp["tw"],
        tcp_alloc=tcp["alloc"],
        tcp_mem_pages=tcp["mem"],
        sockets_used=(sockets or {}).get("used", 0),
    )


def parse_proc_net_table(text: str, path: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/netstat or /proc/net/snmp: pairs of ``Prefix: names`` / ``Prefix: values``
    lines -> {prefix: {name: value}}."""
    out: dict[str, dict[str, int]] = {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) % 2:
        raise ProbeError(f"{path}: malformed (an odd number of lines: a header without values)")
    for names_line, values_line in zip(lines[::2], lines[1::2], strict=True):
        prefix, _, names = names_line.partition(":")
        vprefix, _, values = values_line.partition(":")
        keys, vals = names.split(), values.split()
        if prefix != vprefix or len(keys) != len(vals):
            raise ProbeError(f"{path}: malformed ({prefix!r} header and values do not match)")
        try:
            out[prefix] = {k: int(v) for k, v in zip(keys, vals, strict=True)}
        except ValueError:
            raise ProbeError(f"{path}: malformed ({prefix!r} has a non-integer value)") from None
    return out


@dataclass(frozen=True, slots=True)
class NetCounters:
    """TCP counters of one network namespace (cumulative since boot / namespace creation).

    A field is None when this kernel does not have that counter.
    """

    listen_overflows: int | None  # TcpExt ListenOverflows: accept queue full, SYN/ACK dropped
    listen_drops: int | None  # TcpExt ListenDrops: every drop at a listener (overflows incl.)
    syn_retrans: int | None  # TcpExt TCPSynRetrans: SYN and SYN/ACK retransmissions
    tcp_timeouts: int | None  # TcpExt TCPTimeouts: retransmission timer expiries
    abort_on_memory: int | None  # TcpExt TCPAbortOnMemory: resets for lack of socket memory
    active_opens: int | None  # Tcp ActiveOpens: connect() SYNs sent
    passive_opens: int | None  # Tcp PassiveOpens: SYNs answered by a listener
    attempt_fails: int | None  # Tcp AttemptFails
    estab_resets: int | None  # Tcp EstabResets
    curr_estab: int | None  # Tcp CurrEstab: a gauge, ESTABLISHED + CLOSE_WAIT now
    retrans_segs: int | None  # Tcp RetransSegs


def parse_netstat(netstat: str, snmp: str, root: str = "/proc") -> NetCounters:
    """Combine /proc/net/netstat (TcpExt) and /proc/net/snmp (Tcp)."""
    ext = parse_proc_net_table(netstat, f"{root}/net/netstat").get("TcpExt")
    tcp = parse_proc_net_table(snmp, f"{root}/net/snmp").get("Tcp")
    if ext is None:
        raise ProbeError(f"{root}/net/netstat: malformed (no TcpExt section)")
    if tcp is None:
        raise ProbeError(f"{root}/net/snmp: malformed (no Tcp section)")
    return NetCounters(
        listen_overflows=ext.get("ListenOverflows"),
        listen_drops=ext.get("ListenDrops"),
        syn_retrans=ext.get("TCPSynRetrans"),
        tcp_timeouts=ext.get("TCPTimeouts"),
        abort_on_memory=ext.get("TCPAbortOnMemory"),
        active_opens=tcp.get("ActiveOpens"),
        passive_opens=tcp.get("PassiveOpens"),
        attempt_fails=tcp.get("AttemptFails"),
        estab_resets=tcp.get("EstabResets"),
        curr_estab=tcp.get("CurrEstab"),
        retrans_segs=tcp.get("RetransSegs"),
    )


def parse_nf_conntrack_stat(text: str, path: str = "/proc/net/stat/nf_conntrack") -> dict[str, int]:
    """Sum the per-CPU rows (hexadecimal) of /proc/net/stat/nf_conntrack by column name."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ProbeError(f"{path}: malformed (empty)")
    names = lines[0].split()
    totals = dict.fromkeys(names, 0)
    for line in lines[1:]:
        values = line.split()
        if len(values) != len(names):
            raise ProbeError(f"{path}: malformed (a row has {len(values)} of {len(names)} columns)")
        try:
            for name, value in zip(names, values, strict=True):
                totals[name] += int(value, 16)
        except ValueError:
            raise ProbeError(f"{path}: malformed (a non-hexadecimal value)") from None
    return totals


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
    pages = page_size or _page_size()
    meminfo = parse_meminfo(_read(reader, f"{root}/meminfo"), f"{root}/meminfo")
    sock = parse_sockstat(_read(reader, f"{root}/net/sockstat"), f"{root}/net/sockstat")
    slab: dict[str, SlabCache] | None
    try:
        text = reader(f"{root}/slabinfo")
    except OSError:
        slab = None  # not root, or CONFIG_SLUB_DEBUG off: fall back to meminfo
    else:
        slab = parse_slabinfo(text, f"{root}/slabinfo", _CACHE_SET)
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


# --- sampler ----------------------------------------------------------------------------------

#: Timeline keys the sampler fills (besides the ones the caller passes: t, held, rate, ...).
SAMPLE_KEYS: tuple[str, ...] = (
    "kernel_bytes",
    "slab_bytes",
    "sock_inuse",
    "sock_tw",
    "sock_mem_bytes",
    "user_bytes_client",
    "user_bytes_server",
    "mem_available",
    "listen_overflows",
    "listen_drops",
    "syn_retrans",
    "tcp_abort_on_memory",
    "conntrack_count",
    "conntrack_max",
    "conntrack_drops",
)

#: Counters the sampler reports as growth since its first sample, not since boot.
_DELTA_KEYS = (
    "listen_overflows",
    "listen_drops",
    "syn_retrans",
    "tcp_abort_on_memory",
    "conntrack_drops",
)


@dataclass(slots=True)
class SamplerCost:
    """How long :meth:`Sampler.sample` took (seconds)."""

    calls: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    @property
    def mean_s(self) -> float:
        return self.total_s / self.calls if self.calls else 0.0


class Sampler:
    """Collects one timeline sample of every probe, cheaply enough for 10 Hz and more.

    Host-wide figures (memory) come from ``root``; per-namespace ones (sockstat, TCP counters,
    conntrack) from ``net_root``/``net_reader`` (default: the same), so a caller can point them
    at the server's namespace (``net_root=f"/proc/{server_pid}"`` or a :func:`netns_reader`).
    Counters are reported as growth since the first sample. A probe that fails gives None in
    that sample and its message in :attr:`problems`; the kernel-memory source is fixed by the
    first sample so that the series stays comparable.
    """

    def __init__(
        self,
        *,
        root: str = "/proc",
        reader: Reader = read_text,
        net_root: str | None = None,
        net_reader: Reader | None = None,
        client_pids: Iterable[int] = (),
        server_pids: Iterable[int] = (),
        uss: bool = True,
        clock: Callable[[], float] = time.monotonic,
        page_size: int | None = None,
    ) -> None:
        self.root = root
        self.reader = reader
        self.net_root = net_root if net_root is not None else root
        self.net_reader = net_reader if net_reader is not None else reader
        self.client_pids = tuple(client_pids)
        self.server_pids = tuple(server_pids)
        self.uss = uss
        self.clock = clock
        self.page_size = page_size or _page_size()
        self.t0 = clock()
        #: probe name -> the last error message (one line each).
        self.problems: dict[str, str] = {}
        self.kernel_source: Literal["slabinfo", "meminfo"] | None = None
        #: "uss" or "rss" per side, as measured by the last sample.
        self.user_method: dict[str, str] = {}
        self.cost = SamplerCost()
        self._baseline: dict[str, int] = {}

    def set_pids(
        self, *, client: Iterable[int] | None = None, server: Iterable[int] | None = None
    ) -> None:
        """Change the processes whose memory is sampled (workers start after the sampler)."""
        if client is not None:
            self.client_pids = tuple(client)
        if server is not None:
            self.server_pids = tuple(server)

    def _try(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ProbeError as exc:
            self.problems[name] = str(exc)
            return None

    def _kernel(self, meminfo: dict[str, int] | None, sock: SockStat | None) -> KernelMemory | None:
        if meminfo is None or sock is None:
            return None
        slab: dict[str, SlabCache] | None = None
        if self.kernel_source != "meminfo":
            path = f"{self.root}/slabinfo"
            try:
                slab = parse_slabinfo(self.reader(path), path, _CACHE_SET)
            except OSError as exc:
                if self.kernel_source == "slabinfo":  # it worked before: this sample is lost
                    self.problems["slabinfo"] = f"{path}: cannot read it ({exc})"
                    return None
            except ProbeError as exc:
                self.problems["slabinfo"] = str(exc)
                return None
        km = kernel_memory_from(meminfo, sock, slab, self.page_size, f"{self.root}/meminfo")
        if self.kernel_source is None:
            self.kernel_source = km.source
        return km

    def sample(
        self,
        *,
        held: int,
        rate: float,
        failures: int = 0,
        failures_by_cause: Mapping[str, int] | None = None,
        step: str | None = None,
        t: float | None = None,
    ) -> dict[str, Any]:
        """One timeline sample (a dict with the result schema's timeline keys)."""
        started = time.perf_counter()
        root, net_root = self.root, self.net_root
        meminfo = self._try("meminfo", lambda: mem_info(root, self.reader))
        host_sock = self._try("sockstat", lambda: sockstat(root, self.reader))
        same_net = net_root == root and self.net_reader is self.reader
        net_sock = (
            host_sock
            if same_net
            else self._try("sockstat(net)", lambda: sockstat(net_root, self.net_reader))
        )
        km = self._try("kernel", lambda: self._kernel(meminfo, host_sock))
        counters: NetCounters | None = self._try(
            "netstat", lambda: netstat_counters(net_root, self.net_reader)
        )
        ct: Conntrack | None = self._try("conntrack", lambda: conntrack(net_root, self.net_reader))
        client = process_memory(self.client_pids, uss=self.uss) if self.client_pids else None
        server = process_memory(self.server_pids, uss=self.uss) if self.server_pids else None
        if client is not None:
            self.user_method["client"] = client.method
        if server is not None:
            self.user_method["server"] = server.method

        out: dict[str, Any] = {
            "t": round((self.clock() - self.t0) if t is None else t, 4),
            "held": held,
            "rate": rate,
            "failures": failures,
            "failures_by_cause": dict(failures_by_cause or {}),
            "step": step,
            "kernel_bytes": km.kernel_bytes if km else None,
            "slab_bytes": meminfo.get("Slab") if meminfo else None,
            "sock_inuse": net_sock.tcp_inuse if net_sock else None,
            "sock_tw": net_sock.tcp_tw if net_sock else None,
            "sock_mem_bytes": km.sock_mem_bytes if km else None,
            "user_bytes_client": client.bytes if client else None,
            "user_bytes_server": server.bytes if server else None,
            "mem_available": meminfo.get("MemAvailable") if meminfo else None,
            "listen_overflows": counters.listen_overflows if counters else None,
            "listen_drops": counters.listen_drops if counters else None,
            "syn_retrans": counters.syn_retrans if counters else None,
            "tcp_abort_on_memory": counters.abort_on_memory if counters else None,
            "conntrack_count": ct.count if ct else None,
            "conntrack_max": ct.max if ct else None,
            "conntrack_drops": ct.drop if ct else None,
        }
        for key in _DELTA_KEYS:
            value = out[key]
            if value is None:
                continue
            base = self._baseline.setdefault(key, value)
            out[key] = value - base
        elapsed = time.perf_counter() - started
        self.cost.calls += 1
        self.cost.total_s += elapsed
        self.cost.max_s = max(self.cost.max_s, elapsed)
        return out
