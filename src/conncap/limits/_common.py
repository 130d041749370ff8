"""The one type every OS reader returns: :class:`HostLimits`, made of :class:`Fact` values.

A fact that could not be read is *unknown* with the reason, never a guessed default
(psutil's habit). A fact that does not exist on this OS is *not applicable*.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from conncap.procfs import PortRange, SockStat
from conncap.result import JsonValue

T = TypeVar("T")

__all__ = ["Fact", "HostLimits", "PortRange", "SockStat"]


@dataclass(frozen=True, slots=True)
class Fact(Generic[T]):
    """One value read from the host, with where it came from.

    ``value`` is None when unknown (then ``reason`` says why) or not applicable on this OS.
    """

    value: T | None
    source: str = ""
    reason: str | None = None
    applicable: bool = True

    @property
    def known(self) -> bool:
        return self.value is not None

    @classmethod
    def of(cls, value: T, source: str) -> Fact[T]:
        return cls(value=value, source=source)

    @classmethod
    def unknown(cls, source: str, reason: str) -> Fact[T]:
        return cls(value=None, source=source, reason=reason)

    @classmethod
    def na(cls, os_name: str = "") -> Fact[T]:
        why = f"not applicable on {os_name}" if os_name else "not applicable"
        return cls(value=None, source="", reason=why, applicable=False)

    def get(self, default: T) -> T:
        return default if self.value is None else self.value

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"value": _jsonable(self.value), "source": self.source}
        if self.value is not None:
            out["status"] = "known"
        else:
            out["status"] = "unknown" if self.applicable else "n/a"
            out["reason"] = self.reason
        return out


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


_NA: Fact[Any] = Fact.na()


@dataclass(frozen=True, slots=True)
class HostLimits:
    """This host's connection limits, the same shape on Linux, macOS and Windows.

    Fields that an OS lacks are ``Fact.na(os)``. Units: counts, ports, and bytes (never pages).
    """

    os: str  # "linux" | "darwin" | "windows"
    os_release: Fact[str] = _NA
    cpu_count: Fact[int] = _NA

    # --- client side: ephemeral ports -------------------------------------------------
    #: The range connect() draws local ports from (Linux ip_local_port_range; macOS
    #: net.inet.ip.portrange.first/last; Windows `netsh int ipv4 show dynamicport tcp`).
    port_range: Fact[PortRange] = _NA
    #: IPv6 range where it differs (Windows has its own; Linux/macOS share the IPv4 one).
    port_range_v6: Fact[PortRange] = _NA
    #: Linux ip_local_reserved_ports, as inclusive ranges; empty tuple when none.
    reserved_ports: Fact[tuple[PortRange, ...]] = _NA
    #: macOS net.inet.ip.portrange.hifirst/hilast (IP_PORTRANGE_HIGH).
    port_range_high: Fact[PortRange] = _NA
    #: Windows registry Tcpip\Parameters values (None in value when the key is absent is
    #: *unknown*; an absent key means "default" and is recorded as unknown with that reason).
    max_user_port: Fact[int] = _NA
    tcp_timed_wait_delay: Fact[int] = _NA
    tcp_num_connections: Fact[int] = _NA
    tcp_tw_reuse: Fact[int] = _NA
    tcp_max_tw_buckets: Fact[int] = _NA
    tcp_fin_timeout: Fact[int] = _NA
    #: Local addresses usable as source IPs (IPv4 and IPv6, loopback included).
    source_addresses: Fact[tuple[str, ...]] = _NA

    # --- per process: descriptors -------------------------------------------------------
    nofile_soft: Fact[int] = _NA
    nofile_hard: Fact[int] = _NA
    #: Whether this process may raise the hard limit (CAP_SYS_RESOURCE or root on macOS).
    nofile_can_raise: Fact[bool] = _NA
    #: Per-process ceiling for any rlimit (Linux fs.nr_open; macOS kern.maxfilesperproc).
    nofile_max: Fact[int] = _NA
    #: macOS `launchctl limit maxfiles` (soft, hard).
    launchctl_maxfiles: Fact[tuple[int, int]] = _NA
    nproc_soft: Fact[int] = _NA
    nproc_hard: Fact[int] = _NA

    # --- server side ----------------------------------------------------------------------
    somaxconn: Fact[int] = _NA
    tcp_max_syn_backlog: Fact[int] = _NA

    # --- system -----------------------------------------------------------------------------
    #: System-wide open file table (Linux fs.file-max; macOS kern.maxfiles).
    files_max: Fact[int] = _NA
    #: Files open system-wide now (Linux file-nr first field; macOS kern.num_files).
    files_open: Fact[int] = _NA
    #: Linux tcp_mem (min, pressure, max) in bytes.
    tcp_mem: Fact[tuple[int, int, int]] = _NA
    tcp_rmem: Fact[tuple[int, int, int]] = _NA
    tcp_wmem: Fact[tuple[int, int, int]] = _NA
    conntrack_max: Fact[int] = _NA
    conntrack_count: Fact[int] = _NA
    mem_total: Fact[int] = _NA
    mem_available: Fact[int] = _NA
    #: cgroup memory limit in bytes (v2 memory.max / v1 memory.limit_in_bytes); value is
    #: None with reason "no limit" when the cgroup sets none.
    cgroup_mem_limit: Fact[int] = _NA
    cgroup_mem_current: Fact[int] = _NA
    cgroup_pids_max: Fact[int] = _NA
    sockstat: Fact[SockStat] = _NA
    #: Windows version string, e.g. "10.0.19045"; the model uses it for old-vs-new defaults.
    windows_version: Fact[str] = _NA

    extra: dict[str, Fact[Any]] = field(default_factory=dict)

    def facts(self) -> dict[str, Fact[Any]]:
        """Every Fact field by name (``extra`` included, prefixed ``extra.``)."""
        out: dict[str, Fact[Any]] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Fact):
                out[f.name] = v
        for k, v in self.extra.items():
            out[f"extra.{k}"] = v
        return out
