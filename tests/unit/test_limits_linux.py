"""The Linux limits reader on recorded /proc and /sys trees (tests/fixtures/limits/linux)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from limits_recordings import copy_recording, linux_source

from conncap.limits import _linux
from conncap.limits._common import SockStat
from conncap.limits._facts import is_no_limit

MEMCG = "sys/fs/cgroup/memory/process_api/d3b6b4a7848df6f5aadf2b25b8237ca0"


def test_hybrid_v1_recording_reads_every_fact() -> None:
    h = _linux.read(linux_source("hybrid-v1"))
    assert h.os == "linux"
    assert h.os_release.value == "6.18.44-fc-v657"
    assert h.port_range.value == (32768, 60999)
    assert h.port_range.source == "sysctl net.ipv4.ip_local_port_range"
    assert h.reserved_ports.value == ()
    assert (h.nofile_soft.value, h.nofile_hard.value) == (20000, 20000)
    assert h.nofile_can_raise.value is False  # CapEff 000001fffeffffff: bit 24 clear
    assert h.nofile_max.value == 1048576
    assert (h.nproc_soft.value, h.nproc_hard.value) == (96365, 96365)
    assert h.files_max.value == 2466177
    assert h.files_open.value == 486
    assert h.somaxconn.value == 4096
    assert h.tcp_max_syn_backlog.value == 2048
    # tcp_mem is in pages in /proc; HostLimits holds bytes.
    assert h.tcp_mem.value == (287901 * 4096, 383868 * 4096, 575802 * 4096)
    assert h.tcp_rmem.value == (4096, 131072, 33554432)
    assert h.tcp_wmem.value == (4096, 16384, 4194304)
    assert h.tcp_tw_reuse.value == 2
    assert h.tcp_max_tw_buckets.value == 131072
    assert h.tcp_fin_timeout.value == 60
    assert (h.conntrack_max.value, h.conntrack_count.value) == (262144, 0)
    assert (h.mem_total.value, h.mem_available.value) == (25276510208, 24891445248)
    assert h.cpu_count.value == 2
    assert h.source_addresses.value == ("127.0.0.0/8", "::1", "192.0.2.2", "fd00::2")
    assert h.sockstat.value == SockStat(
        tcp_inuse=1, tcp_orphan=0, tcp_tw=0, tcp_alloc=1, tcp_mem_pages=380, sockets_used=14
    )
    assert h.extra["page_size"].value == 4096
    assert h.extra["fds_open"].value == 4
    assert h.extra["tcp6_inuse"].value == 0


def test_hybrid_v1_cgroups_have_no_limit_and_say_so() -> None:
    h = _linux.read(linux_source("hybrid-v1"))
    # memory.limit_in_bytes is 9223372036854771712 (PAGE_COUNTER_MAX) at every level.
    assert is_no_limit(h.cgroup_mem_limit)
    assert h.cgroup_mem_limit.source == f"/{MEMCG}/memory.limit_in_bytes"
    assert h.cgroup_mem_current.value == 84516864
    # The pids hierarchy's root has no pids.max.
    assert is_no_limit(h.cgroup_pids_max)
    assert "root cgroup" in str(h.cgroup_pids_max.reason)


def test_windows_and_macos_fields_are_not_applicable_on_linux() -> None:
    h = _linux.read(linux_source("hybrid-v1"))
    for name in ("max_user_port", "tcp_timed_wait_delay", "launchctl_maxfiles", "port_range_v6"):
        fact = h.facts()[name]
        assert not fact.applicable and fact.value is None
        assert fact.to_json()["status"] == "n/a"


def test_systemd_v2_recording() -> None:
    h = _linux.read(linux_source("systemd-v2"))
    assert h.port_range.value == (1024, 65535)
    assert h.reserved_ports.value == ((8080, 8080), (9000, 9099))
    assert (h.nofile_soft.value, h.nofile_hard.value) == (1024, 524288)
    assert h.nofile_can_raise.value is True  # CapEff 000001ffffffffff
    assert h.files_max.value == 9223372036854775807  # systemd sets LONG_MAX
    assert h.sockstat.value is not None and h.sockstat.value.tcp_tw == 2317
    assert h.source_addresses.value == (
        "127.0.0.0/8",
        "::1",
        "10.0.3.15",
        "10.0.3.16",
        "2001:db8:3::15",
    )


def test_cgroup_v2_limit_is_the_tightest_of_the_parents() -> None:
    h = _linux.read(linux_source("systemd-v2"))
    # The service's memory.max is "max"; system.slice sets 4 GiB: that one binds.
    assert h.cgroup_mem_limit.value == 4294967296
    assert h.cgroup_mem_limit.source == "/sys/fs/cgroup/system.slice/memory.max"
    assert h.cgroup_mem_current.value == 734003200
    assert h.cgroup_pids_max.value == 4915
    assert h.cgroup_pids_max.source.endswith("conncap-bench.service/pids.max")


def test_conntrack_not_loaded_is_unknown_with_that_reason() -> None:
    h = _linux.read(linux_source("systemd-v2"))
    for fact in (h.conntrack_max, h.conntrack_count):
        assert fact.value is None and fact.applicable
        assert fact.reason == "nf_conntrack not loaded"


@pytest.mark.parametrize(
    ("rel", "content", "field", "words"),
    [
        ("proc/sys/net/ipv4/ip_local_port_range", "garbage\n", "port_range", "'garbage'"),
        ("proc/sys/net/ipv4/ip_local_port_range", "60999\t32768\n", "port_range", "low <= high"),
        ("proc/sys/net/ipv4/ip_local_port_range", "1 2 3\n", "port_range", "two port numbers"),
        ("proc/sys/net/ipv4/ip_local_reserved_ports", "80-x\n", "reserved_ports", "8080"),
        ("proc/sys/net/ipv4/tcp_mem", "1 2\n", "tcp_mem", "3 integers"),
        ("proc/sys/fs/file-max", "lots\n", "files_max", "an integer"),
        ("proc/net/sockstat", "nonsense\n", "sockstat", "TCP: inuse"),
        ("proc/self/status", "CapEff:\tzz\n", "nofile_can_raise", "hexadecimal"),
        ("proc/self/status", "Name:\tx\n", "nofile_can_raise", "no CapEff"),
        (f"{MEMCG}/memory.limit_in_bytes", "lots\n", "cgroup_mem_limit", "an integer"),
    ],
)
def test_malformed_recording_gives_unknown_with_reason(
    tmp_path: Path, rel: str, content: str, field: str, words: str
) -> None:
    root = copy_recording("linux", "hybrid-v1", tmp_path)
    (root / rel).write_text(content)
    h = _linux.read(linux_source("hybrid-v1", root))
    fact = h.facts()[field]
    assert fact.value is None and fact.applicable
    assert fact.reason is not None and fact.reason.startswith("malformed:")
    assert words in fact.reason
    # One damaged file spoils only its own fact.
    assert h.somaxconn.value == 4096
    assert h.nofile_soft.value == 20000


def test_missing_file_is_unknown_not_a_default(tmp_path: Path) -> None:
    root = copy_recording("linux", "hybrid-v1", tmp_path)
    (root / "proc/sys/net/core/somaxconn").unlink()
    h = _linux.read(linux_source("hybrid-v1", root))
    assert h.somaxconn.value is None
    assert h.somaxconn.reason == "/proc/sys/net/core/somaxconn does not exist"
    assert h.somaxconn.to_json()["status"] == "unknown"


def test_cgroup_v1_limit_on_the_leaf(tmp_path: Path) -> None:
    root = copy_recording("linux", "hybrid-v1", tmp_path)
    (root / MEMCG / "memory.limit_in_bytes").write_text("536870912\n")
    h = _linux.read(linux_source("hybrid-v1", root))
    assert h.cgroup_mem_limit.value == 536870912
    assert h.cgroup_mem_limit.source == f"/{MEMCG}/memory.limit_in_bytes"


def test_cgroup_mount_root_inside_a_container(tmp_path: Path) -> None:
    """A container sees its own cgroup mounted at /sys/fs/cgroup/memory (mount root /docker/x)."""
    root = copy_recording("linux", "hybrid-v1", tmp_path)
    (root / "proc/self/cgroup").write_text("4:memory:/docker/x\n8:pids:/docker/x\n")
    (root / "proc/self/mountinfo").write_text(
        "35 31 0:32 /docker/x /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
    )
    (root / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text("1073741824\n")
    h = _linux.read(linux_source("hybrid-v1", root))
    assert h.cgroup_mem_limit.value == 1073741824
    assert h.cgroup_mem_limit.source == "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    assert h.cgroup_pids_max.value is None
    assert h.cgroup_pids_max.reason == "no pids cgroup controller is mounted"


def test_cgroup_v2_controller_not_enabled(tmp_path: Path) -> None:
    root = copy_recording("linux", "systemd-v2", tmp_path)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpuset cpu io memory\n")
    h = _linux.read(linux_source("systemd-v2", root))
    assert h.cgroup_mem_limit.value == 4294967296
    assert h.cgroup_pids_max.reason == "the pids controller is not enabled in cgroup v2"


def test_unlimited_rlimit_is_no_limit_and_failures_are_unknown() -> None:
    base = linux_source("hybrid-v1")

    def getrlimit(name: str) -> tuple[int | None, int | None]:
        if name == "RLIMIT_NPROC":
            return (None, None)
        raise OSError("getrlimit broke")

    h = _linux.read(replace(base, getrlimit=getrlimit))
    assert is_no_limit(h.nproc_soft) and is_no_limit(h.nproc_hard)
    assert h.nofile_soft.value is None and not is_no_limit(h.nofile_soft)
    assert "getrlimit broke" in str(h.nofile_soft.reason)


def test_psutil_and_page_size_failures_are_unknown() -> None:
    base = linux_source("hybrid-v1")

    def boom() -> tuple[int, int]:
        raise RuntimeError("no meminfo")

    def no_page() -> int:
        raise OSError("sysconf")

    h = _linux.read(replace(base, memory=boom, page_size=no_page))
    assert h.mem_total.value is None and "no meminfo" in str(h.mem_total.reason)
    assert h.mem_available.value is None
    assert h.tcp_mem.value is None and "page size unknown" in str(h.tcp_mem.reason)
    assert h.tcp_rmem.value == (4096, 131072, 33554432)  # bytes already: unaffected
