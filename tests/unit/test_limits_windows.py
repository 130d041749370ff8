"""The Windows limits reader on recorded English ``netsh``, ``reg query`` and ``ver`` output."""

from __future__ import annotations

from pathlib import Path

import pytest
from limits_recordings import copy_recording, windows_source

from conncap.limits import _windows

REG = "reg_query_HKLM_SYSTEM_CurrentControlSet_Services_Tcpip_Parameters"
DYN4 = "netsh_int_ipv4_show_dynamicport_tcp"


def test_windows_10_defaults() -> None:
    h = _windows.read(windows_source("win10-22h2"))
    assert h.os == "windows"
    assert h.windows_version.value == "10.0.19045"
    assert h.os_release.value == "Microsoft Windows [Version 10.0.19045.4291]"
    assert h.port_range.value == (49152, 65535)
    assert h.port_range.source == "netsh int ipv4 show dynamicport tcp"
    assert h.port_range_v6.value == (49152, 65535)
    assert h.reserved_ports.value == (
        (1433, 1433),
        (5357, 5357),
        (50000, 50059),
        (52146, 52245),
        (52246, 52345),
    )
    assert (h.mem_total.value, h.mem_available.value) == (17058713600, 8631795712)
    assert h.cpu_count.value == 8
    # Windows answers on all of 127.0.0.0/8; the fe80:: address is link-local.
    assert h.source_addresses.value == ("127.0.0.0/8", "::1", "192.168.1.23")


def test_absent_registry_values_are_unknown_the_default_applies() -> None:
    h = _windows.read(windows_source("win10-22h2"))
    for fact in (h.max_user_port, h.tcp_timed_wait_delay, h.tcp_num_connections):
        assert fact.value is None and fact.applicable
        assert fact.reason == "not set: the default applies"
        assert fact.source.startswith("registry HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip")


def test_tuned_server_registry_values() -> None:
    h = _windows.read(windows_source("server2022-tuned"))
    assert h.windows_version.value == "10.0.20348"
    assert h.port_range.value == (10000, 65534)  # Start 10000, 55535 ports
    assert h.port_range_v6.value == (49152, 65535)
    assert h.reserved_ports.value == ()
    assert h.max_user_port.value == 0xFFFE
    assert h.tcp_timed_wait_delay.value == 30
    assert h.tcp_num_connections.value == 0xFFFFFE


def test_windows_xp_uses_max_user_port() -> None:
    """The founding article's Windows: no netsh dynamicport; 1025..MaxUserPort."""
    h = _windows.read(windows_source("xp-sp3"))
    assert h.windows_version.value == "5.1.2600"
    assert h.max_user_port.value == 10000  # REG_DWORD 0x2710, tab-separated (reg.exe 3.0)
    assert h.port_range.value == (1025, 10000)
    assert "MaxUserPort" in h.port_range.source
    assert h.port_range_v6.value is None
    assert "The following command was not found" in str(h.port_range_v6.reason)


def test_windows_xp_without_max_user_port(tmp_path: Path) -> None:
    root = copy_recording("windows", "xp-sp3", tmp_path)
    reg = root / f"{REG}.txt"
    reg.write_text("\n".join(x for x in reg.read_text().splitlines() if "MaxUserPort" not in x))
    h = _windows.read(windows_source("xp-sp3", root))
    assert h.port_range.value is None
    assert "not set: the default applies" in str(h.port_range.reason)


@pytest.mark.parametrize(
    ("fname", "content", "field", "words"),
    [
        (f"{DYN4}.txt", "garbage\n", "port_range", "Start Port"),
        (
            f"{DYN4}.txt",
            "Protokoll tcp Dynamischer Portbereich\n"
            "Startport       : 49152\nAnzahl Ports    : 16384\n",
            "port_range",
            "non-English",
        ),
        (f"{DYN4}.txt", "Start Port      : 60000\nNumber of Ports : 16384\n", "port_range",
         "1-65535"),
        ("netsh_int_ipv4_show_excludedportrange_protocol-tcp.txt", "oops\n", "reserved_ports",
         "Start Port    End Port"),
        (f"{REG}.txt", "garbage\n", "max_user_port", "no HKEY_ line"),
        ("cmd_c_ver.txt", "Microsoft Windows\n", "windows_version", "[Version N.N.N]"),
    ],
)  # fmt: skip
def test_malformed_output_is_unknown_with_reason(
    tmp_path: Path, fname: str, content: str, field: str, words: str
) -> None:
    root = copy_recording("windows", "win10-22h2", tmp_path)
    (root / fname).write_text(content)
    h = _windows.read(windows_source("win10-22h2", root))
    fact = h.facts()[field]
    assert fact.value is None and fact.applicable
    assert str(fact.reason).startswith("malformed:") and words in str(fact.reason)
    assert h.mem_total.value == 17058713600


def test_registry_value_of_the_wrong_type(tmp_path: Path) -> None:
    root = copy_recording("windows", "server2022-tuned", tmp_path)
    reg = root / f"{REG}.txt"
    reg.write_text(reg.read_text().replace("TcpTimedWaitDelay    REG_DWORD    0x1e",
                                           "TcpTimedWaitDelay    REG_SZ    30"))  # fmt: skip
    h = _windows.read(windows_source("server2022-tuned", root))
    assert h.tcp_timed_wait_delay.value is None
    assert "REG_DWORD" in str(h.tcp_timed_wait_delay.reason)
    assert h.max_user_port.value == 0xFFFE


def test_reg_query_failing_makes_all_registry_values_unknown(tmp_path: Path) -> None:
    root = copy_recording("windows", "win10-22h2", tmp_path)
    (root / f"{REG}.txt").unlink()
    (root / f"{REG}.fail").write_text("ERROR: Access is denied.\n")
    h = _windows.read(windows_source("win10-22h2", root))
    for fact in (h.max_user_port, h.tcp_timed_wait_delay, h.tcp_num_connections):
        assert fact.value is None
        assert str(fact.reason).endswith("failed (exit 1): ERROR: Access is denied.")


def test_reg_query_parser_reads_only_the_first_key() -> None:
    raw = (
        "\r\nHKEY_LOCAL_MACHINE\\X\\Parameters\r\n"
        "    NV HostName    REG_SZ    HOST A\r\n"
        "    NameServer    REG_SZ    \r\n"
        "    MaxUserPort    REG_DWORD    0xfffe\r\n\r\n"
        "HKEY_LOCAL_MACHINE\\X\\Parameters\\Interfaces\r\n"
        "    TcpTimedWaitDelay    REG_DWORD    0x1e\r\n"
    )
    values = _windows._parse_reg_query(raw)
    assert values == {
        "NV HostName": ("REG_SZ", "HOST A"),
        "NameServer": ("REG_SZ", ""),
        "MaxUserPort": ("REG_DWORD", "0xfffe"),
    }


def test_platform_fields_are_not_applicable() -> None:
    h = _windows.read(windows_source("win10-22h2"))
    for name in ("nofile_soft", "somaxconn", "tcp_tw_reuse", "cgroup_mem_limit", "files_max"):
        assert h.facts()[name].to_json()["status"] == "n/a"
