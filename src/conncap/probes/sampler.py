"""The :class:`Sampler`: one sample of every probe per tick during a run, each probe's failure kept
as a problem instead of a crash, and what sampling itself costs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from conncap.probes.readers import (
    CACHE_SET,
    Conntrack,
    KernelMemory,
    Reader,
    conntrack,
    kernel_memory_from,
    mem_info,
    netstat_counters,
    page_size_bytes,
    process_memory,
    read_text,
    sockstat,
)
from conncap.procfs import NetCounters, ProbeError, SlabCache, SockStat, parse_slabinfo
from conncap.result import JsonValue

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
        self.page_size = page_size or page_size_bytes()
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
                slab = parse_slabinfo(self.reader(path), path, CACHE_SET)
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
    ) -> dict[str, JsonValue]:
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

        out: dict[str, JsonValue] = {
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
            if not isinstance(value, int):
                continue  # None: not read
            base = self._baseline.setdefault(key, value)
            out[key] = value - base
        elapsed = time.perf_counter() - started
        self.cost.calls += 1
        self.cost.total_s += elapsed
        self.cost.max_s = max(self.cost.max_s, elapsed)
        return out
