"""Names and addresses a topology hands out (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from conncap.errors import UsageError
from conncap.netns.naming import (
    IFNAMSIZ,
    AddressPool,
    check_allowed,
    host_addresses,
    namespace_name,
    new_runid,
    parse_interface,
    parse_namespace,
    parse_network,
    prefix_for,
    veth_names,
    veth_runid,
)


def test_namespace_names_round_trip() -> None:
    runid = new_runid()
    name = namespace_name(runid, "cli12")
    assert name == f"conncap-{runid}-cli12"
    assert parse_namespace(name) == (runid, "cli12")


@pytest.mark.parametrize(
    "name", ["conncap", "conncap-xyz123-cli", "other-abcdef-cli", "conncap-abcdef-"]
)
def test_foreign_names_are_not_ours(name: str) -> None:
    assert parse_namespace(name) is None


@pytest.mark.parametrize("role", ["", "Cli", "1cli", "cli-x", "a" * 17])
def test_bad_roles_are_refused(role: str) -> None:
    with pytest.raises(UsageError):
        namespace_name("abcdef", role)


def test_veth_names_fit_ifnamsiz_up_to_the_last_index() -> None:
    for index in (0, 9, 999_999):
        a, b = veth_names("abcdef", index)
        assert len(a) <= IFNAMSIZ and len(b) <= IFNAMSIZ
        assert a != b
        assert veth_runid(a) == veth_runid(b) == "abcdef"
    with pytest.raises(UsageError):
        veth_names("abcdef", 1_000_000)
    assert veth_runid("eth0") is None


@pytest.mark.parametrize(
    "text", ["10.0.0.0/24", "192.168.1.0/24", "198.17.0.0/24", "100.128.0.0/24"]
)
def test_only_test_ranges_are_allowed(text: str) -> None:
    with pytest.raises(UsageError, match="outside"):
        parse_network(text)


def test_allowed_ranges() -> None:
    assert parse_network("198.19.4.0/24") == IPv4Network("198.19.4.0/24")
    assert parse_network("100.64.0.0/16") == IPv4Network("100.64.0.0/16")
    check_allowed(IPv4Address("198.18.0.1"))
    with pytest.raises(UsageError):
        check_allowed(IPv4Address("127.0.0.1"))
    with pytest.raises(UsageError):
        parse_interface("8.8.8.8")
    assert str(parse_interface("198.18.0.9")) == "198.18.0.9/32"
    with pytest.raises(UsageError, match="too small"):
        parse_network("198.18.0.0/31")


def test_pool_hands_out_aligned_non_overlapping_subnets() -> None:
    pool = AddressPool()
    a = pool.take(30)
    b = pool.take(24)
    c = pool.take(30)
    assert a == IPv4Network("198.18.0.0/30")
    assert b == IPv4Network("198.18.1.0/24")  # aligned up past a
    assert c == IPv4Network("198.18.2.0/30")
    nets = [a, b, c]
    assert not any(x.overlaps(y) for i, x in enumerate(nets) for y in nets[i + 1 :])


def test_pool_skips_claimed_subnets_and_refuses_overlaps() -> None:
    pool = AddressPool()
    pool.claim(IPv4Network("198.18.0.0/29"))
    assert pool.take(30) == IPv4Network("198.18.0.8/30")
    with pytest.raises(UsageError, match="overlaps"):
        pool.claim(IPv4Network("198.18.0.8/29"))


def test_pool_runs_out() -> None:
    pool = AddressPool(IPv4Network("198.18.0.0/29"))
    pool.take(30)
    pool.take(30)
    with pytest.raises(UsageError, match="no free"):
        pool.take(30)


@pytest.mark.parametrize(("hosts", "prefix"), [(1, 30), (2, 30), (3, 29), (254, 24), (255, 23)])
def test_prefix_for(hosts: int, prefix: int) -> None:
    assert prefix_for(hosts) == prefix
    assert len(list(IPv4Network(("198.18.0.0", prefix)).hosts())) >= hosts


def test_host_addresses() -> None:
    net = IPv4Network("198.18.0.0/29")
    assert host_addresses(net, 2) == ["198.18.0.1", "198.18.0.2"]
    assert host_addresses(net, 1, skip=[IPv4Address("198.18.0.1")]) == ["198.18.0.2"]
    with pytest.raises(UsageError):
        host_addresses(net, 7)
