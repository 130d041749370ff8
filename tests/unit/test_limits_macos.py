"""The macOS limits reader on recorded ``sysctl``, ``launchctl`` and ``vm_stat`` output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from limits_recordings import copy_recording, macos_source

from conncap.limits import _macos
from conncap.limits._facts import is_no_limit


def test_sonoma_recording_reads_every_fact() -> None:
    h = _macos.read(macos_source("sonoma-m1"))
    assert h.os == "darwin"
    assert h.os_release.value == "14.4.1"
    assert h.cpu_count.value == 8
    assert h.port_range.value == (49152, 65535)
    assert h.port_range.source == "sysctl net.inet.ip.portrange.first, net.inet.ip.portrange.last"
    assert h.port_range_high.value == (49152, 65535)
    assert h.files_max.value == 245760
    assert h.nofile_max.value == 122880
    assert h.somaxconn.value == 128
    assert h.files_open.value == 7873
    assert h.mem_total.value == 17179869184
    # vm_stat: (Pages free + Pages inactive) x 16384, as psutil computes "available".
    assert h.mem_available.value == (6211 + 176874) * 16384
    assert h.launchctl_maxfiles.value == (256, _macos.RLIM_INFINITY_DARWIN)
    assert h.nofile_soft.value == 256
    assert is_no_limit(h.nofile_hard)  # RLIM_INFINITY on macOS
    assert h.nofile_can_raise.value is False  # euid 501
    assert (h.nproc_soft.value, h.nproc_hard.value) == (2666, 2666)
    assert h.extra["tcp_msl_ms"].value == 15000
    assert h.extra["maxsockets"].value == 30720


def test_macos_loopback_is_only_the_configured_address() -> None:
    """lo0 has 127.0.0.1/8, but macOS answers only on addresses configured on it."""
    h = _macos.read(macos_source("sonoma-m1"))
    assert h.source_addresses.value == ("127.0.0.1", "::1", "192.168.1.42")


def test_linux_and_windows_fields_are_not_applicable() -> None:
    h = _macos.read(macos_source("sonoma-m1"))
    for name in ("tcp_tw_reuse", "cgroup_mem_limit", "sockstat", "max_user_port", "tcp_mem"):
        assert h.facts()[name].to_json()["status"] == "n/a"


def test_missing_sysctl_is_unknown_with_the_commands_reason() -> None:
    h = _macos.read(macos_source("sonoma-m1", kern__num_files=None))
    assert h.files_open.value is None and h.files_open.applicable
    assert h.files_open.reason == (
        "`sysctl -n kern.num_files` failed (exit 1): sysctl: unknown oid 'kern.num_files'"
    )


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"net__inet__ip__portrange__first": "garbage"}, "port_range", "'garbage'"),
        ({"net__inet__ip__portrange__last": "1024"}, "port_range", "low <= high"),
        ({"net__inet__ip__portrange__last": None}, "port_range", "unknown oid"),
        ({"kern__maxfiles": "many"}, "files_max", "an integer"),
    ],
)
def test_bad_sysctl_output_spoils_only_that_fact(
    change: dict[str, str | None], field: str, words: str
) -> None:
    h = _macos.read(macos_source("sonoma-m1", **change))
    fact = h.facts()[field]
    assert fact.value is None and words in str(fact.reason)
    assert h.somaxconn.value == 128


@pytest.mark.parametrize(
    ("fname", "content", "field", "words"),
    [
        ("launchctl_limit_maxfiles.txt", "\tmaxfiles    lots  unlimited\n", "launchctl_maxfiles",
         "a number or 'unlimited'"),
        ("launchctl_limit_maxfiles.txt", "Could not get limits\n", "launchctl_maxfiles",
         "maxfiles SOFT HARD"),
        ("vm_stat.txt", "Pages free: 12.\n", "mem_available", "page size of N bytes"),
        ("vm_stat.txt", "Mach Virtual Memory Statistics: (page size of 4096 bytes)\n",
         "mem_available", "'Pages free'"),
    ],
)  # fmt: skip
def test_malformed_command_output(
    tmp_path: Path, fname: str, content: str, field: str, words: str
) -> None:
    root = copy_recording("macos", "sonoma-m1", tmp_path)
    (root / fname).write_text(content)
    h = _macos.read(macos_source("sonoma-m1", root))
    fact = h.facts()[field]
    assert fact.value is None
    assert str(fact.reason).startswith("malformed:") and words in str(fact.reason)


def test_command_not_found_is_unknown(tmp_path: Path) -> None:
    root = copy_recording("macos", "sonoma-m1", tmp_path)
    (root / "vm_stat.txt").unlink()
    h = _macos.read(macos_source("sonoma-m1", root))
    assert h.mem_available.reason == "`vm_stat` not found"
    assert h.mem_total.value == 17179869184


def test_root_may_raise_the_hard_limit() -> None:
    h = _macos.read(replace(macos_source("sonoma-m1"), geteuid=lambda: 0))
    assert h.nofile_can_raise.value is True
