"""Read macOS connection limits: ``sysctl -n``, ``launchctl limit maxfiles``, ``vm_stat``,
getrlimit and psutil's address list.

Every command goes through :attr:`MacSource.run`; the default runs the real command, tests
feed recordings from tests/fixtures/limits/macos/. There is one code path for both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from conncap.limits._addresses import AddressSource, psutil_net_if_addrs
from conncap.limits._command import CommandFailed, Runner, run_command
from conncap.limits._common import Fact, HostLimits, PortRange
from conncap.limits._facts import (
    NETSTAT_TCP,
    Getrlimit,
    addresses_fact,
    check_port_range,
    parse_int,
    parse_time_wait_count,
    parsed,
    posix_getrlimit,
    rlimit_facts,
    shown,
)

T = TypeVar("T")

#: macOS RLIM_INFINITY; ``launchctl limit`` prints it as "unlimited".
RLIM_INFINITY_DARWIN = (1 << 63) - 1


def _geteuid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


@dataclass(frozen=True, slots=True)
class MacSource:
    """Where the macOS reader gets its inputs; the defaults read this host."""

    #: Runs ``sysctl -n NAME``, ``launchctl limit maxfiles`` and ``vm_stat``.
    run: Runner = run_command
    getrlimit: Getrlimit = posix_getrlimit
    geteuid: Callable[[], int] = _geteuid
    addresses: AddressSource = psutil_net_if_addrs


def read(source: MacSource | None = None) -> HostLimits:
    """Read every macOS limit conncap knows; what cannot be read is unknown with the reason."""
    src = source or MacSource()

    def sysctl_as(name: str, parse: Callable[[str], T]) -> Fact[T]:
        label = f"sysctl {name}"
        try:
            raw = src.run(["sysctl", "-n", name])
        except CommandFailed as exc:
            return Fact.unknown(label, str(exc))
        return parsed(label, raw, parse)

    def sysctl(name: str) -> Fact[int]:
        return sysctl_as(name, parse_int)

    def port_range(first: str, last: str) -> Fact[PortRange]:
        lo, hi = sysctl(first), sysctl(last)
        label = f"sysctl {first}, {last}"
        a, b = lo.value, hi.value
        if a is None or b is None:
            return Fact.unknown(label, str(lo.reason if a is None else hi.reason))
        return parsed(label, f"{a}-{b}", lambda raw: check_port_range(a, b, raw))

    nofile_soft, nofile_hard = rlimit_facts(src.getrlimit, "RLIMIT_NOFILE")
    nproc_soft, nproc_hard = rlimit_facts(src.getrlimit, "RLIMIT_NPROC")
    try:
        euid = src.geteuid()
        can_raise: Fact[bool] = Fact.of(euid == 0, "geteuid() == 0 (root may raise the hard limit)")
    except OSError as exc:
        can_raise = Fact.unknown("geteuid()", f"geteuid failed: {exc}")
    na: Fact[Any] = Fact.na("darwin")
    return HostLimits(
        os="darwin",
        os_release=sysctl_as("kern.osproductversion", str.strip),
        cpu_count=sysctl("hw.ncpu"),
        port_range=port_range("net.inet.ip.portrange.first", "net.inet.ip.portrange.last"),
        port_range_v6=Fact.na("darwin (IPv6 uses net.inet.ip.portrange too)"),
        reserved_ports=na,
        port_range_high=port_range("net.inet.ip.portrange.hifirst", "net.inet.ip.portrange.hilast"),
        max_user_port=na,
        tcp_timed_wait_delay=na,
        tcp_num_connections=na,
        tcp_tw_reuse=na,
        tcp_max_tw_buckets=na,
        tcp_fin_timeout=na,
        source_addresses=addresses_fact(src.addresses, whole_loopback_prefix=False),
        nofile_soft=nofile_soft,
        nofile_hard=nofile_hard,
        nofile_can_raise=can_raise,
        nofile_max=sysctl("kern.maxfilesperproc"),
        launchctl_maxfiles=_launchctl_maxfiles(src.run),
        nproc_soft=nproc_soft,
        nproc_hard=nproc_hard,
        somaxconn=sysctl("kern.ipc.somaxconn"),
        tcp_max_syn_backlog=na,
        files_max=sysctl("kern.maxfiles"),
        files_open=sysctl("kern.num_files"),
        tcp_mem=na,
        tcp_rmem=na,
        tcp_wmem=na,
        conntrack_max=na,
        conntrack_count=na,
        mem_total=sysctl("hw.memsize"),
        mem_available=_vm_stat_available(src.run),
        cgroup_mem_limit=na,
        cgroup_mem_current=na,
        cgroup_pids_max=na,
        sockstat=na,
        windows_version=na,
        extra={
            # TIME_WAIT lasts 2 x MSL on macOS (15000 ms by default: 30 s).
            "tcp_msl_ms": sysctl("net.inet.tcp.msl"),
            # Sockets in TIME_WAIT now (conncap.model.churn: each holds its port 2 × MSL).
            "time_wait_now": _time_wait_now(src.run),
            # System-wide socket ceiling (mbuf-sized at boot).
            "maxsockets": sysctl("kern.ipc.maxsockets"),
            "maxproc": sysctl("kern.maxproc"),
            "maxprocperuid": sysctl("kern.maxprocperuid"),
        },
    )


def _time_wait_now(run: Runner) -> Fact[int]:
    label = "netstat -an -p tcp (lines in TIME_WAIT)"
    try:
        raw = run(list(NETSTAT_TCP))
    except CommandFailed as exc:
        return Fact.unknown(label, str(exc))
    return parsed(label, raw, parse_time_wait_count)


def _launchctl_maxfiles(run: Runner) -> Fact[tuple[int, int]]:
    label = "launchctl limit maxfiles"
    try:
        raw = run(["launchctl", "limit", "maxfiles"])
    except CommandFailed as exc:
        return Fact.unknown(label, str(exc))
    return parsed(label, raw, _parse_launchctl_maxfiles)


def _parse_launchctl_maxfiles(raw: str) -> tuple[int, int]:
    """``\\tmaxfiles    256            unlimited`` -> (256, RLIM_INFINITY_DARWIN)."""
    parts = raw.split()
    if len(parts) != 3 or parts[0] != "maxfiles":
        raise ValueError(f"expected 'maxfiles SOFT HARD', got {shown(raw)}")

    def one(word: str) -> int:
        if word == "unlimited":
            return RLIM_INFINITY_DARWIN
        if not word.isdigit():
            raise ValueError(f"expected a number or 'unlimited', got {shown(word)}")
        return int(word)

    return (one(parts[1]), one(parts[2]))


_VM_PAGE = re.compile(r"page size of (\d+) bytes")


def _vm_stat_available(run: Runner) -> Fact[int]:
    label = "vm_stat (free + inactive pages, as psutil counts available)"
    try:
        raw = run(["vm_stat"])
    except CommandFailed as exc:
        return Fact.unknown(label, str(exc))
    return parsed(label, raw, _parse_vm_stat_available)


def _parse_vm_stat_available(raw: str) -> int:
    page = _VM_PAGE.search(raw)
    if page is None:
        raise ValueError(f"no 'page size of N bytes' header in {shown(raw, 60)}")
    counts: dict[str, int] = {}
    for line in raw.splitlines()[1:]:
        key, sep, value = line.partition(":")
        value = value.strip().rstrip(".")
        if sep and value.isdigit():
            counts[key.strip().strip('"')] = int(value)
    missing = [k for k in ("Pages free", "Pages inactive") if k not in counts]
    if missing:
        raise ValueError(f"no {' / '.join(repr(m) for m in missing)} line in vm_stat output")
    return (counts["Pages free"] + counts["Pages inactive"]) * int(page.group(1))
