"""Measurements taken during a run on Linux: the readers of kernel memory, socket counts, TCP
counters and process memory (:mod:`.readers`) and the per-tick :class:`Sampler` (:mod:`.sampler`).
The /proc text formats themselves are parsed by :mod:`conncap.procfs`.
"""

from __future__ import annotations

from conncap.probes.readers import (
    CONNECTION_CACHES,
    Conntrack,
    KernelMemory,
    ProcessMemory,
    Reader,
    conntrack,
    kernel_memory,
    kernel_memory_from,
    mem_available,
    mem_info,
    netns_reader,
    netstat_counters,
    process_memory,
    read_text,
    sockstat,
)
from conncap.probes.sampler import SAMPLE_KEYS, Sampler, SamplerCost
from conncap.procfs import (
    NetCounters,
    ProbeError,
    SlabCache,
    SockStat,
    parse_meminfo,
    parse_netstat,
    parse_nf_conntrack_stat,
    parse_proc_net_table,
    parse_slabinfo,
    parse_sockstat,
)

__all__ = [
    "CONNECTION_CACHES",
    "SAMPLE_KEYS",
    "Conntrack",
    "KernelMemory",
    "NetCounters",
    "ProbeError",
    "ProcessMemory",
    "Reader",
    "Sampler",
    "SamplerCost",
    "SlabCache",
    "SockStat",
    "conntrack",
    "kernel_memory",
    "kernel_memory_from",
    "mem_available",
    "mem_info",
    "netns_reader",
    "netstat_counters",
    "parse_meminfo",
    "parse_netstat",
    "parse_nf_conntrack_stat",
    "parse_proc_net_table",
    "parse_slabinfo",
    "parse_sockstat",
    "process_memory",
    "read_text",
    "sockstat",
]
