"""Which sysctls may be set in a namespace, and the masquerade rules (pure)."""

from __future__ import annotations

import pytest

from conncap.errors import UsageError
from conncap.netns import firewall, sysctls


@pytest.mark.parametrize(
    "key",
    [
        "kernel.pid_max",
        "fs.file-max",
        "vm.max_map_count",
        "net.netfilter.nf_conntrack_max",
        "net.core.rmem_max",
        "net.ipv4.tcp_mem",
        "net.ipv4.neigh.default.gc_thresh3",
        "net",
        "net..x",
        "net.ipv4.ip_forward; reboot",
    ],
)
def test_kernel_wide_or_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(UsageError):
        sysctls.check_key(key)


@pytest.mark.parametrize(
    "key", ["net.ipv4.ip_local_port_range", "net.core.somaxconn", "net/ipv4/tcp_tw_reuse"]
)
def test_per_namespace_keys_pass(key: str) -> None:
    assert sysctls.check_key(key) == key.replace("/", ".")


def test_values() -> None:
    assert sysctls.format_value((40000, 40999)) == "40000 40999"
    assert sysctls.format_value(128) == "128"
    assert sysctls.normalise("32768\t60999\n") == "32768 60999"
    for bad in ("", "1\n2", "a=b", ()):
        with pytest.raises(UsageError):
            sysctls.format_value(bad)
    assert str(sysctls.proc_path("net.core.somaxconn")) == "/proc/sys/net/core/somaxconn"
    with pytest.raises(UsageError):
        sysctls.port_range_value((5000, 4000))


def test_nft_ruleset_with_ports() -> None:
    text = firewall.nft_ruleset("wan0", (40000, 40999))
    assert "type nat hook postrouting priority srcnat" in text
    assert 'oifname "wan0" meta l4proto tcp masquerade to :40000-40999' in text
    assert 'oifname "wan0" meta l4proto udp masquerade to :40000-40999' in text
    assert text.rstrip().endswith("}")
    # the catch-all (ICMP) comes after the port-ranged rules
    assert text.index('oifname "wan0" masquerade\n') > text.index("udp masquerade")


def test_nft_ruleset_without_ports_keeps_kernel_default() -> None:
    text = firewall.nft_ruleset("wan0")
    assert "to :" not in text and 'oifname "wan0" masquerade' in text


def test_iptables_rules() -> None:
    rules = firewall.iptables_rules("wan0", (40000, 40999))
    assert rules[0] == [
        "-t", "nat", "-A", "POSTROUTING", "-o", "wan0",
        "-p", "tcp", "-j", "MASQUERADE", "--to-ports", "40000-40999",
    ]  # fmt: skip
    assert rules[-1][-2:] == ["-j", "MASQUERADE"]
    assert len(firewall.iptables_rules("wan0")) == 1


@pytest.mark.parametrize("ports", [(0, 10), (10, 5), (1, 70000)])
def test_bad_port_ranges(ports: tuple[int, int]) -> None:
    with pytest.raises(UsageError):
        firewall.nft_ruleset("wan0", ports)
