"""Read Windows connection limits: ``netsh`` dynamic and excluded port ranges, the Tcpip
registry parameters (``reg query``), the version (``ver``), and psutil for memory and addresses.

Every command goes through :attr:`WindowsSource.run`; the default runs the real command, tests
feed recordings (English output) from tests/fixtures/limits/windows/. One code path for both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conncap.limits._addresses import AddressSource, psutil_net_if_addrs
from conncap.limits._command import CommandFailed, Runner, run_command
from conncap.limits._common import Fact, HostLimits, PortRange
from conncap.limits._facts import (
    NETSTAT_TCP,
    addresses_fact,
    check_port_range,
    cpu_count_fact,
    memory_facts,
    parse_time_wait_count,
    parsed,
    psutil_cpu_count,
    psutil_memory,
    shown,
)

TCPIP_PARAMETERS = r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters"
DYNAMICPORT_V4 = ("netsh", "int", "ipv4", "show", "dynamicport", "tcp")
DYNAMICPORT_V6 = ("netsh", "int", "ipv6", "show", "dynamicport", "tcp")
EXCLUDED_V4 = ("netsh", "int", "ipv4", "show", "excludedportrange", "protocol=tcp")
REG_QUERY = ("reg", "query", TCPIP_PARAMETERS)
VER = ("cmd", "/c", "ver")

#: Before Vista (NT 6.0) connect() took ports 1025..MaxUserPort and netsh had no dynamicport.
_VISTA_MAJOR = 6
_OLD_FIRST_PORT = 1025

NOT_SET = "not set: the default applies"


@dataclass(frozen=True, slots=True)
class WindowsSource:
    """Where the Windows reader gets its inputs; the defaults read this host."""

    #: Runs ``netsh``, ``reg query`` and ``cmd /c ver``; returns stdout.
    run: Runner = run_command
    #: (total, available) bytes: psutil (GlobalMemoryStatusEx).
    memory: Callable[[], tuple[int, int]] = psutil_memory
    addresses: AddressSource = psutil_net_if_addrs
    cpu_count: Callable[[], int | None] = psutil_cpu_count


def read(source: WindowsSource | None = None) -> HostLimits:
    """Read every Windows limit conncap knows; what cannot be read is unknown with the reason."""
    src = source or WindowsSource()

    def command(argv: Sequence[str]) -> tuple[str | None, str]:
        try:
            return src.run(list(argv)), ""
        except CommandFailed as exc:
            return None, str(exc)

    def from_command(argv: Sequence[str], parse: Callable[[str], Any]) -> Fact[Any]:
        label = " ".join(argv)
        raw, why = command(argv)
        return Fact.unknown(label, why) if raw is None else parsed(label, raw, parse)

    version = from_command(VER, _parse_ver)
    reg_label = f"reg query {TCPIP_PARAMETERS}"
    reg_raw, reg_why = command(REG_QUERY)
    registry: Fact[dict[str, tuple[str, str]]]
    if reg_raw is None:
        registry = Fact.unknown(reg_label, reg_why)
    else:
        registry = parsed(reg_label, reg_raw, _parse_reg_query)

    def dword(name: str) -> Fact[int]:
        label = f"registry {TCPIP_PARAMETERS}\\{name}"
        if registry.value is None:
            return Fact.unknown(label, str(registry.reason))
        if name not in registry.value:
            return Fact.unknown(label, NOT_SET)
        kind, data = registry.value[name]
        return parsed(label, data, lambda raw: _parse_dword(kind, raw))

    max_user_port = dword("MaxUserPort")
    port_range: Fact[PortRange] = from_command(DYNAMICPORT_V4, _parse_dynamicport)
    major = _major(version.value[0]) if version.value else None
    if port_range.value is None and major is not None and major < _VISTA_MAJOR:
        port_range = _pre_vista_range(max_user_port)
    mem_total, mem_available = memory_facts(src.memory, "psutil.virtual_memory()")
    na: Fact[Any] = Fact.na("windows")
    return HostLimits(
        os="windows",
        os_release=Fact(
            value=version.value[1] if version.value else None,
            source=version.source,
            reason=version.reason,
        ),
        cpu_count=cpu_count_fact(src.cpu_count),
        port_range=port_range,
        port_range_v6=from_command(DYNAMICPORT_V6, _parse_dynamicport),
        reserved_ports=from_command(EXCLUDED_V4, _parse_excluded),
        port_range_high=na,
        max_user_port=max_user_port,
        tcp_timed_wait_delay=dword("TcpTimedWaitDelay"),
        tcp_num_connections=dword("TcpNumConnections"),
        tcp_tw_reuse=na,
        tcp_max_tw_buckets=na,
        tcp_fin_timeout=na,
        # Windows answers on every 127.x.y.z without configuring it, like Linux.
        source_addresses=addresses_fact(src.addresses, whole_loopback_prefix=True),
        nofile_soft=na,
        nofile_hard=na,
        nofile_can_raise=na,
        nofile_max=na,
        launchctl_maxfiles=na,
        nproc_soft=na,
        nproc_hard=na,
        somaxconn=na,
        tcp_max_syn_backlog=na,
        files_max=na,
        files_open=na,
        tcp_mem=na,
        tcp_rmem=na,
        tcp_wmem=na,
        conntrack_max=na,
        conntrack_count=na,
        mem_total=mem_total,
        mem_available=mem_available,
        cgroup_mem_limit=na,
        cgroup_mem_current=na,
        cgroup_pids_max=na,
        sockstat=na,
        windows_version=Fact(
            value=version.value[0] if version.value else None,
            source=version.source,
            reason=version.reason,
        ),
        extra={
            # Sockets in TIME_WAIT now (conncap.model.churn: each holds its port TcpTimedWaitDelay).
            "time_wait_now": from_command(NETSTAT_TCP, parse_time_wait_count),
        },
    )


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _pre_vista_range(max_user_port: Fact[int]) -> Fact[PortRange]:
    label = "registry MaxUserPort (before Vista connect() uses 1025..MaxUserPort)"
    if max_user_port.value is None:
        return Fact.unknown(label, f"MaxUserPort {max_user_port.reason} (1025-5000)")
    hi = max_user_port.value
    return parsed(label, str(hi), lambda raw: check_port_range(_OLD_FIRST_PORT, hi, raw))


# --- parsers (pure) -------------------------------------------------------------------------

_START = re.compile(r"^\s*Start Port\s*:\s*(\d+)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"^\s*Number of Ports\s*:\s*(\d+)\s*$", re.MULTILINE)


def _parse_dynamicport(raw: str) -> PortRange:
    """``Start Port : 49152`` / ``Number of Ports : 16384`` -> (49152, 65535)."""
    start, number = _START.search(raw), _NUMBER.search(raw)
    if start is None or number is None:
        raise ValueError(
            f"no 'Start Port' and 'Number of Ports' lines (non-English Windows?) in {shown(raw)}"
        )
    lo, n = int(start.group(1)), int(number.group(1))
    if n < 1:
        raise ValueError(f"Number of Ports is {n}")
    return check_port_range(lo, lo + n - 1, f"{lo} + {n} ports")


_EXCLUDED_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s*(\*)?\s*$")


def _parse_excluded(raw: str) -> tuple[PortRange, ...]:
    """Rows ``  50000       50059     *`` under the ``Start Port    End Port`` header."""
    if not re.search(r"Start Port\s+End Port", raw):
        raise ValueError(
            f"no 'Start Port    End Port' header (non-English Windows?) in {shown(raw)}"
        )
    out: list[PortRange] = []
    for line in raw.splitlines():
        row = _EXCLUDED_ROW.match(line)
        if row:
            lo, hi = int(row.group(1)), int(row.group(2))
            out.append(check_port_range(lo, hi, line))
    return tuple(out)


#: "    Name    REG_TYPE    data"; Windows XP's reg.exe separates the three with tabs.
_REG_VALUE = re.compile(
    r"^\s+(?P<name>\S.*?)(?:\t| {4})(?P<kind>REG_[A-Z_]+)(?:(?:\t| {4})(?P<data>.*))?$"
)


def _parse_reg_query(raw: str) -> dict[str, tuple[str, str]]:
    """Values of the first key in ``reg query`` output: name -> (REG_TYPE, data text).

    Subkeys that follow (``...\\Parameters\\Interfaces``) are not read.
    """
    lines = [line.rstrip("\r") for line in raw.splitlines()]
    keys = [i for i, line in enumerate(lines) if line.upper().startswith("HKEY_")]
    if not keys:
        raise ValueError(f"no HKEY_ line in reg query output {shown(raw)}")
    values: dict[str, tuple[str, str]] = {}
    for line in lines[keys[0] + 1 :]:
        if line.upper().startswith("HKEY_"):
            break
        m = _REG_VALUE.match(line)
        if m:
            values[m.group("name")] = (m.group("kind"), (m.group("data") or "").strip())
    return values


def _parse_dword(kind: str, raw: str) -> int:
    if kind != "REG_DWORD":
        raise ValueError(f"expected a REG_DWORD, the value is a {kind} {shown(raw)}")
    try:
        return int(raw, 16) if raw.lower().startswith("0x") else int(raw)
    except ValueError:
        raise ValueError(f"expected a REG_DWORD like 0xfffe, got {shown(raw)}") from None


#: "[Version 10.0.19045.4291]"; the word is translated on other languages ("[Versión ...]").
_VER = re.compile(r"\[[^\]\d]*(\d+\.\d+\.\d+)(?:\.\d+)?\]")


def _parse_ver(raw: str) -> tuple[str, str]:
    """``Microsoft Windows [Version 10.0.19045.4291]`` -> ("10.0.19045", the whole line)."""
    m = _VER.search(raw)
    if m is None:
        raise ValueError(f"no '[Version N.N.N]' in {shown(raw)}")
    line = next(line.strip() for line in raw.splitlines() if m.group(0) in line)
    return (m.group(1), line)
