"""The ``conncap.limits/1`` document and the table, from recorded hosts."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from limits_recordings import copy_recording, linux_source, macos_source, windows_source
from rich.console import Console

from conncap.limits import Fact, HostLimits, _linux, _macos, _windows
from conncap.limits._addresses import address_count, usable_source_addresses
from conncap.limits.render import SCHEMA, format_value, limits_to_json, print_limits
from conncap.model.implied import KERNEL_BYTES_PER_LOOPBACK_CONN, fmt_bytes, implied

RECORDINGS = {
    "linux/hybrid-v1": lambda: _linux.read(linux_source("hybrid-v1")),
    "linux/systemd-v2": lambda: _linux.read(linux_source("systemd-v2")),
    "macos/sonoma-m1": lambda: _macos.read(macos_source("sonoma-m1")),
    "windows/win10-22h2": lambda: _windows.read(windows_source("win10-22h2")),
    "windows/server2022-tuned": lambda: _windows.read(windows_source("server2022-tuned")),
    "windows/xp-sp3": lambda: _windows.read(windows_source("xp-sp3")),
}


def _table_text(h: HostLimits, width: int = 200) -> str:
    console = Console(record=True, width=width, force_terminal=False, color_system=None)
    print_limits(h, console)
    return console.export_text()


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_json_document_shape(name: str) -> None:
    h = RECORDINGS[name]()
    doc = json.loads(json.dumps(limits_to_json(h), allow_nan=False))
    assert doc["schema"] == SCHEMA == "conncap.limits/1"
    assert doc["os"] == h.os
    # Every HostLimits fact is there, whatever the OS.
    expected = {f.name for f in fields(HostLimits) if f.name not in ("os", "extra")}
    assert expected <= set(doc["facts"])
    for fact in doc["facts"].values():
        assert fact["status"] in ("known", "unknown", "n/a")
        assert isinstance(fact["source"], str)
        if fact["status"] == "known":
            assert fact["value"] is not None and "reason" not in fact
        else:
            assert fact["value"] is None and fact["reason"]
    for imp in doc["implied"].values():
        assert set(imp) == {"text", "count"} and imp["text"]


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_table_has_the_three_groups(name: str) -> None:
    text = _table_text(RECORDINGS[name]())
    positions = [text.index(g) for g in ("client side", "server side", "system")]
    assert positions == sorted(positions)


def test_json_values_are_plain_json() -> None:
    doc = limits_to_json(_linux.read(linux_source("hybrid-v1")))
    facts = doc["facts"]
    assert facts["port_range"]["value"] == [32768, 60999]
    assert facts["tcp_mem"]["value"] == [287901 * 4096, 383868 * 4096, 575802 * 4096]
    assert facts["sockstat"]["value"] == {
        "tcp_inuse": 1,
        "tcp_orphan": 0,
        "tcp_tw": 0,
        "tcp_alloc": 1,
        "tcp_mem_pages": 380,
        "sockets_used": 14,
    }
    assert facts["cgroup_mem_limit"]["status"] == "unknown"
    assert facts["cgroup_mem_limit"]["reason"].startswith("no limit")
    assert facts["extra.page_size"] == {
        "value": 4096,
        "source": "sysconf(_SC_PAGE_SIZE)",
        "status": "known",
    }
    assert facts["max_user_port"]["status"] == "n/a"


def test_implied_ceilings_linux_default_range() -> None:
    imp = implied(_linux.read(linux_source("hybrid-v1")))
    assert imp["port_range"].count == 28232
    assert imp["port_range"].text == "28,232 connections per (source IP, destination ip:port)"
    # 20000 descriptors, 4 already open when the recording was made.
    assert imp["nofile_soft"].count == 19996
    assert imp["nofile_soft"].text.startswith("≈ 19,996 connections per process")
    assert "a loopback pair costs two" in imp["nofile_soft"].text
    assert "burst a listener absorbs, not how many it holds" in imp["somaxconn"].text
    assert "system-wide" in imp["files_max"].text and imp["files_max"].count == 2466177
    n = 24891445248 // KERNEL_BYTES_PER_LOOPBACK_CONN
    assert imp["mem_available"].count == n
    assert imp["mem_available"].text == (
        f"≈ {n:,} connections at ~8 KB kernel memory per loopback connection (estimate)"
    )
    assert imp["nofile_can_raise"].text.startswith("no (no CAP_SYS_RESOURCE)")
    assert imp["conntrack_max"].count == 262144
    assert imp["cgroup_mem_limit"].text.startswith("no cgroup memory limit")


def test_implied_ceilings_reserved_ports_and_cgroup() -> None:
    imp = implied(_linux.read(linux_source("systemd-v2")))
    # 1024-65535 is 64,512 ports, less 8080 and 9000-9099.
    assert imp["port_range"].count == 64512 - 101
    assert "(101 reserved ports excluded)" in imp["port_range"].text
    assert imp["reserved_ports"].text == "101 ports of the ephemeral range never picked"
    limit_left = 4294967296 - 734003200
    assert imp["cgroup_mem_limit"].count == limit_left // KERNEL_BYTES_PER_LOOPBACK_CONN
    assert "binds before available memory" in imp["cgroup_mem_limit"].text
    assert imp["conntrack_max"].text == "no conntrack limit: nf_conntrack is not loaded"
    assert imp["conntrack_max"].count is None
    assert "files_max" in imp and imp["files_max"].count is None  # LONG_MAX: no limit


def test_implied_windows() -> None:
    tuned = implied(_windows.read(windows_source("server2022-tuned")))
    assert tuned["port_range"].count == 55535
    assert tuned["max_user_port"].text.startswith("not used since Vista")
    assert "≈ 1,851 new connections/s" in tuned["tcp_timed_wait_delay"].text  # 55535 // 30
    assert tuned["tcp_num_connections"].count == 0xFFFFFE
    win10 = implied(_windows.read(windows_source("win10-22h2")))
    # 16,384 ports less the excluded ranges inside 49152-65535 (50000-50059, 52146-52345).
    assert win10["port_range"].count == 16384 - 60 - 200
    xp = implied(_windows.read(windows_source("xp-sp3")))
    assert xp["port_range"].count == 10000 - 1025 + 1
    assert xp["max_user_port"].text == "before Vista connect() uses ports 1025-10000"


def test_implied_macos_unlimited_hard_limit() -> None:
    imp = implied(_macos.read(macos_source("sonoma-m1")))
    assert imp["nofile_hard"].text == "no hard limit: 122,880 (per-process ceiling) still applies"
    assert imp["extra.tcp_msl_ms"].text == "TIME_WAIT lasts 2 × MSL = 30 s"


def test_table_shows_values_and_unknown_with_reason(tmp_path: Path) -> None:
    root = copy_recording("linux", "hybrid-v1", tmp_path)
    (root / "proc/sys/net/ipv4/ip_local_port_range").write_text("garbage\n")
    text = _table_text(_linux.read(linux_source("hybrid-v1", root)), width=400)  # no wrapping
    assert "unknown (malformed: expected two port numbers, got 'garbage')" in text
    assert "no limit" in text  # the cgroup memory limit
    assert "1.1 GiB / 1.5 GiB / 2.2 GiB" in text  # tcp_mem in bytes, not pages
    assert "n/a" not in text  # facts that do not exist on Linux are left out


def test_format_value() -> None:
    h = _windows.read(windows_source("win10-22h2"))
    assert format_value("port_range", h.port_range) == "49152-65535"
    assert format_value("reserved_ports", h.reserved_ports).startswith("1433, 5357, 50000-50059")
    assert format_value("max_user_port", h.max_user_port) == (
        "unknown (not set: the default applies)"
    )
    m = _macos.read(macos_source("sonoma-m1"))
    assert format_value("launchctl_maxfiles", m.launchctl_maxfiles) == "256 / unlimited"
    assert format_value("nofile_hard", m.nofile_hard) == "no limit"
    assert fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(512) == "512 B"


class _Addr:
    def __init__(self, address: str, netmask: str | None) -> None:
        self.address, self.netmask = address, netmask


def test_source_addresses_rules() -> None:
    ifaces = {
        "lo": [_Addr("127.0.0.1", "255.0.0.0"), _Addr("::1", None)],
        "lo:1": [_Addr("127.0.0.1", "255.0.0.0")],  # a duplicate is listed once
        "eth0": [
            _Addr("aa:bb:cc:dd:ee:ff", None),
            _Addr("10.1.2.3", "255.255.255.0"),
            _Addr("fe80::1%eth0", "ffff:ffff:ffff:ffff::"),
            _Addr("2001:db8::5", "ffff:ffff:ffff:ffff::"),
        ],
    }
    linux = usable_source_addresses(ifaces, whole_loopback_prefix=True)
    assert linux == ("127.0.0.0/8", "::1", "10.1.2.3", "2001:db8::5")
    assert address_count(linux) == 2**24 + 3
    mac = usable_source_addresses(ifaces, whole_loopback_prefix=False)
    assert mac == ("127.0.0.1", "::1", "10.1.2.3", "2001:db8::5")
    host_only = {"lo": [_Addr("127.0.0.1", "255.255.255.255")]}
    assert usable_source_addresses(host_only, whole_loopback_prefix=True) == ("127.0.0.1",)


def test_overlapping_reserved_ranges_are_counted_once() -> None:
    h = HostLimits(
        os="linux",
        port_range=Fact.of((32768, 60999), "test"),
        reserved_ports=Fact.of(((30000, 32800), (32790, 32799), (40000, 40000)), "test"),
    )
    # 32768-32800 (33 ports) and 40000; 32790-32799 is inside the first range.
    assert implied(h)["port_range"].count == 28232 - 33 - 1


def test_time_wait_facts_and_what_they_imply() -> None:
    # Linux 6.18 recording: tw 0 now, tcp_tw_reuse_delay 1000 ms, timestamps on
    new = _linux.read(linux_source("hybrid-v1"))
    imp = implied(new)
    assert new.extra["time_wait_now"].value == 0
    assert "for 60 s" in imp["extra.time_wait_now"].text
    assert imp["extra.tcp_tw_reuse_delay_ms"].text.endswith("after 1,000 ms")
    assert imp["extra.tcp_timestamps"].text.startswith("on")
    # Linux 6.8 recording: 2,317 in TIME_WAIT, no tcp_tw_reuse_delay sysctl
    old = _linux.read(linux_source("systemd-v2"))
    assert old.extra["time_wait_now"].value == 2317
    assert old.extra["tcp_tw_reuse_delay_ms"].value is None
    assert "fixed 1 s" in implied(old)["extra.tcp_tw_reuse_delay_ms"].text
    # macOS: 2 of the recorded netstat lines are in TIME_WAIT, each held 2 × MSL = 30 s
    mac = _macos.read(macos_source("sonoma-m1"))
    assert mac.extra["time_wait_now"].value == 2
    assert "for 30 s" in implied(mac)["extra.time_wait_now"].text
    # Windows: 3 in TIME_WAIT, TcpTimedWaitDelay not set: 120 s
    win = _windows.read(windows_source("win10-22h2"))
    assert win.extra["time_wait_now"].value == 3
    assert "for 120 s" in implied(win)["extra.time_wait_now"].text
    # XP: 240 s
    xp = _windows.read(windows_source("xp-sp3"))
    assert "for 240 s" in implied(xp)["extra.time_wait_now"].text
    assert "TIME_WAIT now" in _table_text(win)
