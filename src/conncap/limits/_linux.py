"""Read Linux connection limits: procfs sysctls, cgroups in sysfs, getrlimit, and psutil.

Every input comes from a :class:`LinuxSource`: the procfs and sysfs roots (psutil's
``PROCFS_PATH`` idea), a getrlimit function, the page size and psutil's memory, address and
CPU functions. The default source reads this host; tests point it at a recorded tree under
tests/fixtures/limits/linux/. There is one code path for both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from conncap.limits._addresses import AddressSource, psutil_net_if_addrs
from conncap.limits._common import Fact, HostLimits
from conncap.limits._facts import (
    Getrlimit,
    addresses_fact,
    cpu_count_fact,
    memory_facts,
    no_limit,
    parse_int,
    parse_ints,
    parsed,
    posix_getrlimit,
    psutil_cpu_count,
    psutil_memory,
    rlimit_facts,
    shown,
)
from conncap.procfs import (
    parse_port_range,
    parse_reserved_ports,
    parse_sockstat,
    parse_tcp6_inuse,
)

T = TypeVar("T")

#: CAP_SYS_RESOURCE (linux/capability.h): lets a process raise its hard rlimits.
CAP_SYS_RESOURCE = 24

#: The kernel prints an unlimited cgroup v1 memory limit as PAGE_COUNTER_MAX pages in bytes
#: (9223372036854771712 on 4 KiB pages); anything this large is "no limit".
_V1_UNLIMITED = 1 << 62

#: Sources name the real paths, whatever root the files were read from.
_PROC, _SYS = "/proc", "/sys"


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class LinuxSource:
    """Where the Linux reader gets its inputs; the defaults read this host."""

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    getrlimit: Getrlimit = posix_getrlimit
    page_size: Callable[[], int] = _page_size
    #: (MemTotal, MemAvailable) in bytes.
    memory: Callable[[], tuple[int, int]] = psutil_memory
    addresses: AddressSource = psutil_net_if_addrs
    cpu_count: Callable[[], int | None] = psutil_cpu_count


def read(source: LinuxSource | None = None) -> HostLimits:
    """Read every Linux limit conncap knows; what cannot be read is unknown with the reason."""
    return _Reader(source or LinuxSource()).read()


class _Reader:
    def __init__(self, src: LinuxSource) -> None:
        self.src = src

    # --- raw access -----------------------------------------------------------------------

    def _file(self, path: Path, name: str, parse: Callable[[str], T], missing: str) -> Fact[T]:
        try:
            raw = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return Fact.unknown(name, missing)
        except PermissionError:
            return Fact.unknown(name, f"permission denied reading {name}")
        except OSError as exc:
            return Fact.unknown(name, f"cannot read {name}: {exc.strerror or exc}")
        return parsed(name, raw, parse)

    def proc(
        self, rel: str, parse: Callable[[str], T], missing: str | None = None, label: str = ""
    ) -> Fact[T]:
        name = f"{_PROC}/{rel}"
        fact = self._file(self.src.procfs / rel, name, parse, missing or f"{name} does not exist")
        return replace(fact, source=f"{name} {label}") if label else fact

    def sysctl(self, key: str, parse: Callable[[str], T], missing: str | None = None) -> Fact[T]:
        rel = "sys/" + key.replace(".", "/")
        name = f"sysctl {key}"
        why = missing or f"{_PROC}/{rel} does not exist"
        return self._file(self.src.procfs / rel, name, parse, why)

    # --- the facts ---------------------------------------------------------------------------

    def read(self) -> HostLimits:
        page = self._page_size()
        page_size = page.value
        sockstat = self.proc("net/sockstat", parse_sockstat)
        nofile_soft, nofile_hard = rlimit_facts(self.src.getrlimit, "RLIMIT_NOFILE")
        nproc_soft, nproc_hard = rlimit_facts(self.src.getrlimit, "RLIMIT_NPROC")
        mem_total, mem_available = memory_facts(
            self.src.memory, "psutil.virtual_memory() (/proc/meminfo MemTotal, MemAvailable)"
        )

        def in_bytes(raw: str) -> tuple[int, int, int]:
            lo, pressure, hi = parse_ints(raw, 3)
            size = page_size or 0
            return (lo * size, pressure * size, hi * size)

        tcp_mem: Fact[tuple[int, int, int]] = (
            self.sysctl("net.ipv4.tcp_mem", in_bytes)
            if page_size
            else Fact.unknown(
                "sysctl net.ipv4.tcp_mem", "page size unknown: cannot turn its pages into bytes"
            )
        )

        conntrack_missing = "nf_conntrack not loaded"
        na: Fact[Any] = Fact.na("linux")
        tw_now: Fact[int] = (
            Fact.of(sockstat.value.tcp_tw, "/proc/net/sockstat (TCP tw)")
            if sockstat.value is not None
            else Fact.unknown("/proc/net/sockstat (TCP tw)", str(sockstat.reason))
        )
        extra: dict[str, Fact[Any]] = {
            "page_size": page,
            "time_wait_now": tw_now,
            "fds_open": self._fds_open(),
            "tcp6_inuse": self.proc("net/sockstat6", parse_tcp6_inuse),
            # TIME_WAIT reuse (conncap.model.churn): tcp_tw_reuse needs timestamps, and waits
            # tcp_tw_reuse_delay ms (a sysctl since 6.14; before, up to a fixed 1 s).
            "tcp_timestamps": self.sysctl("net.ipv4.tcp_timestamps", parse_int),
            "tcp_tw_reuse_delay_ms": self.sysctl(
                "net.ipv4.tcp_tw_reuse_delay",
                parse_int,
                "no such sysctl (kernels before 6.14): reuse waits up to a fixed 1 s",
            ),
        }
        return HostLimits(
            os="linux",
            os_release=self.sysctl("kernel.osrelease", str.strip),
            cpu_count=cpu_count_fact(self.src.cpu_count),
            port_range=self.sysctl("net.ipv4.ip_local_port_range", parse_port_range),
            port_range_v6=Fact.na("linux (IPv6 uses net.ipv4.ip_local_port_range too)"),
            port_range_high=na,
            max_user_port=na,
            tcp_timed_wait_delay=na,
            tcp_num_connections=na,
            launchctl_maxfiles=na,
            windows_version=na,
            reserved_ports=self.sysctl("net.ipv4.ip_local_reserved_ports", parse_reserved_ports),
            tcp_tw_reuse=self.sysctl("net.ipv4.tcp_tw_reuse", parse_int),
            tcp_max_tw_buckets=self.sysctl("net.ipv4.tcp_max_tw_buckets", parse_int),
            tcp_fin_timeout=self.sysctl("net.ipv4.tcp_fin_timeout", parse_int),
            source_addresses=addresses_fact(self.src.addresses, whole_loopback_prefix=True),
            nofile_soft=nofile_soft,
            nofile_hard=nofile_hard,
            nofile_can_raise=self.proc(
                "self/status", _parse_cap_sys_resource, label="CapEff bit 24 (CAP_SYS_RESOURCE)"
            ),
            nofile_max=self.sysctl("fs.nr_open", parse_int),
            nproc_soft=nproc_soft,
            nproc_hard=nproc_hard,
            somaxconn=self.sysctl("net.core.somaxconn", parse_int),
            tcp_max_syn_backlog=self.sysctl("net.ipv4.tcp_max_syn_backlog", parse_int),
            files_max=self.sysctl("fs.file-max", parse_int),
            files_open=self.sysctl("fs.file-nr", lambda raw: parse_ints(raw, 3)[0]),
            tcp_mem=tcp_mem,
            tcp_rmem=self.sysctl("net.ipv4.tcp_rmem", _parse_triple),
            tcp_wmem=self.sysctl("net.ipv4.tcp_wmem", _parse_triple),
            conntrack_max=self.sysctl(
                "net.netfilter.nf_conntrack_max", parse_int, conntrack_missing
            ),
            conntrack_count=self.sysctl(
                "net.netfilter.nf_conntrack_count", parse_int, conntrack_missing
            ),
            mem_total=mem_total,
            mem_available=mem_available,
            cgroup_mem_limit=self._cgroup_limit("memory"),
            cgroup_mem_current=self._cgroup_current(),
            cgroup_pids_max=self._cgroup_limit("pids"),
            sockstat=sockstat,
            extra=extra,
        )

    def _page_size(self) -> Fact[int]:
        try:
            return Fact.of(int(self.src.page_size()), "sysconf(_SC_PAGE_SIZE)")
        except (OSError, ValueError) as exc:
            return Fact.unknown("sysconf(_SC_PAGE_SIZE)", f"cannot read the page size: {exc}")

    def _fds_open(self) -> Fact[int]:
        name = f"{_PROC}/self/fd"
        try:
            return Fact.of(len(os.listdir(self.src.procfs / "self" / "fd")), name)
        except OSError as exc:
            return Fact.unknown(name, f"cannot list {name}: {exc.strerror or exc}")

    # --- cgroups -------------------------------------------------------------------------------

    def _cgroup_dirs(self, controller: str) -> tuple[list[Path], int] | str:
        """The cgroup directories of this process for ``controller``, leaf first, up to the
        mount's top; with the cgroup version. A string says why there are none."""
        own = self.proc("self/cgroup", _parse_proc_cgroup)
        mounts = self.proc("self/mountinfo", _parse_mountinfo)
        if own.value is None:
            return f"cannot read this process's cgroup: {own.reason}"
        if mounts.value is None:
            return f"cannot read the mount table: {mounts.reason}"
        v1 = [m for m in mounts.value if m.fstype == "cgroup" and controller in m.options]
        v2 = [m for m in mounts.value if m.fstype == "cgroup2"]
        if v1:
            mount, version = v1[0], 1
            path = next((p for hier, ctl, p in own.value if controller in ctl), None)
        elif v2:
            mount, version = v2[0], 2
            path = next((p for hier, ctl, p in own.value if hier == "0"), None)
        else:
            return f"no {controller} cgroup controller is mounted"
        if path is None:
            return f"/proc/self/cgroup has no {controller} line (cgroup v{version})"
        if not mount.point.startswith("/sys/"):
            return f"cgroup mounted outside /sys ({mount.point})"
        top = self.src.sysfs / mount.point[len("/sys/") :]
        if version == 2:
            try:
                enabled = (top / "cgroup.controllers").read_text(encoding="utf-8").split()
            except OSError:
                enabled = None
            if enabled is not None and controller not in enabled:
                return f"the {controller} controller is not enabled in cgroup v2"
        rel = path
        if mount.root != "/" and (path + "/").startswith(mount.root.rstrip("/") + "/"):
            rel = path[len(mount.root.rstrip("/")) :]
        leaf = top / rel.strip("/") if rel.strip("/") else top
        if not leaf.is_dir():
            leaf = top  # the process's cgroup is not visible here (another cgroup namespace)
        dirs = [leaf]
        while dirs[-1] != top and top in dirs[-1].parents:
            dirs.append(dirs[-1].parent)
        return dirs, version

    def _shown_sys(self, path: Path) -> str:
        try:
            return f"{_SYS}/{path.relative_to(self.src.sysfs)}"
        except ValueError:
            return str(path)

    def _cgroup_limit(self, controller: str) -> Fact[int]:
        """The tightest limit among this cgroup and its ancestors (the one that binds)."""
        found = self._cgroup_dirs(controller)
        if isinstance(found, str):
            return Fact.unknown(f"cgroup {controller}", found)
        dirs, version = found
        fname = {"memory": "memory.max" if version == 2 else "memory.limit_in_bytes"}.get(
            controller, "pids.max"
        )
        tightest: tuple[int, str] | None = None
        seen_file = False
        for d in dirs:
            path = d / fname
            name = self._shown_sys(path)
            try:
                raw = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue  # the root cgroup has no limit files
            except OSError as exc:
                return Fact.unknown(name, f"cannot read {name}: {exc.strerror or exc}")
            seen_file = True
            if raw.strip() == "max":
                continue
            try:
                value = parse_int(raw)
            except ValueError as exc:
                return Fact.unknown(name, f"malformed: {exc}")
            if controller == "memory" and version == 1 and value >= _V1_UNLIMITED:
                continue
            if tightest is None or value < tightest[0]:
                tightest = (value, name)
        leaf_name = self._shown_sys(dirs[0] / fname)
        if tightest is not None:
            return Fact.of(tightest[0], tightest[1])
        if not seen_file:
            return no_limit(leaf_name, f"no {fname} in this cgroup or above (root cgroup)")
        return no_limit(leaf_name, f"{fname} is unlimited here and in every parent")

    def _cgroup_current(self) -> Fact[int]:
        found = self._cgroup_dirs("memory")
        if isinstance(found, str):
            return Fact.unknown("cgroup memory", found)
        dirs, version = found
        path = dirs[0] / ("memory.current" if version == 2 else "memory.usage_in_bytes")
        name = self._shown_sys(path)
        return self._file(path, name, parse_int, f"{name} does not exist (root cgroup?)")


# --- parsers (pure) -------------------------------------------------------------------------


def _parse_triple(raw: str) -> tuple[int, int, int]:
    a, b, c = parse_ints(raw, 3)
    return (a, b, c)


def _parse_cap_sys_resource(raw: str) -> bool:
    """Whether CapEff in /proc/self/status has CAP_SYS_RESOURCE (bit 24)."""
    for line in raw.splitlines():
        if line.startswith("CapEff:"):
            value = line.split(":", 1)[1].strip()
            try:
                return bool(int(value, 16) >> CAP_SYS_RESOURCE & 1)
            except ValueError:
                raise ValueError(f"CapEff is not hexadecimal: {shown(value)}") from None
    raise ValueError("no CapEff line in /proc/self/status")


def _parse_proc_cgroup(raw: str) -> list[tuple[str, frozenset[str], str]]:
    """/proc/self/cgroup lines ``hierarchy:controllers:path``."""
    out: list[tuple[str, frozenset[str], str]] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"not 'hierarchy:controllers:path': {shown(line)}")
        out.append((parts[0], frozenset(parts[1].split(",")) - {""}, parts[2]))
    return out


@dataclass(frozen=True, slots=True)
class _Mount:
    root: str
    point: str
    fstype: str
    options: frozenset[str]


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _parse_mountinfo(raw: str) -> list[_Mount]:
    def mounts() -> Iterator[_Mount]:
        for line in raw.splitlines():
            left, sep, right = line.partition(" - ")
            fields_l, fields_r = left.split(), right.split()
            if not sep or len(fields_l) < 5 or len(fields_r) < 3:
                continue
            yield _Mount(
                root=_unescape(fields_l[3]),
                point=_unescape(fields_l[4]),
                fstype=fields_r[0],
                options=frozenset(fields_r[2].split(",")),
            )

    return list(mounts())
