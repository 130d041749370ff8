"""Names and addresses a run gives to what it creates. Pure functions, no I/O.

Every namespace is ``conncap-<runid>-<role>`` so that ``conncap cleanup`` can tell ours from
anyone else's; every veth is ``cc<runid>a<k>`` / ``cc<runid>b<k>`` because interface names are
capped at 15 characters (IFNAMSIZ - 1). Addresses come only from the two blocks reserved for
private test networks, 198.18.0.0/15 (RFC 2544, benchmarking) and 100.64.0.0/10 (RFC 6598,
shared address space), and are configured inside namespaces only: no namespace has a link to
the host's network, so they cannot leave.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface, ip_network

from conncap.errors import UsageError

PREFIX = "conncap-"
"""Every namespace conncap makes starts with this; cleanup looks for nothing else."""

IFNAMSIZ = 15
"""Longest interface name Linux accepts (IFNAMSIZ is 16 with the trailing NUL)."""

BENCHMARK_NET = IPv4Network("198.18.0.0/15")
SHARED_NET = IPv4Network("100.64.0.0/10")
ALLOWED_NETS: tuple[IPv4Network, ...] = (BENCHMARK_NET, SHARED_NET)

LINK_BLOCK = IPv4Network("198.18.0.0/16")
"""Where links and switched subnets take their addresses."""
SOURCE_BLOCK = IPv4Network("198.19.0.0/16")
"""Extra client source addresses (routed, so the server's neighbour table stays small)."""
LAN_BLOCK = IPv4Network("100.64.0.0/16")
"""The private side of the NAT layout (RFC 6598 is the carrier-grade NAT range)."""

_RUNID_RE = re.compile(r"^[0-9a-f]{6}$")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_NS_RE = re.compile(r"^conncap-(?P<runid>[0-9a-f]{6})-(?P<role>[a-z][a-z0-9]{0,15})$")
_VETH_RE = re.compile(r"^cc(?P<runid>[0-9a-f]{6})[ab][0-9]{1,6}$")


def new_runid() -> str:
    """Six random hex characters: short enough for interface names, unlikely to collide."""
    return secrets.token_hex(3)


def check_runid(runid: str) -> str:
    if not _RUNID_RE.match(runid):
        raise UsageError(f"run id {runid!r} is not 6 lower-case hex characters")
    return runid


def check_role(role: str) -> str:
    if not _ROLE_RE.match(role):
        raise UsageError(
            f"namespace role {role!r}: use 1-16 lower-case letters and digits, "
            "starting with a letter (e.g. cli, srv, cli12)"
        )
    return role


def namespace_name(runid: str, role: str) -> str:
    """``conncap-<runid>-<role>``, the name ``ip netns`` knows the namespace by."""
    return f"{PREFIX}{check_runid(runid)}-{check_role(role)}"


def parse_namespace(name: str) -> tuple[str, str] | None:
    """(runid, role) of a conncap namespace name, None if it is not one of ours."""
    m = _NS_RE.match(name)
    return (m["runid"], m["role"]) if m else None


def veth_names(runid: str, index: int) -> tuple[str, str]:
    """The two ends of veth pair number ``index``: ``cc<runid>a<index>``, ``cc<runid>b<index>``."""
    check_runid(runid)
    if not 0 <= index < 1_000_000:
        raise UsageError(f"veth index {index} out of range (0-999999)")
    a, b = f"cc{runid}a{index}", f"cc{runid}b{index}"
    assert len(a) <= IFNAMSIZ and len(b) <= IFNAMSIZ
    return a, b


def veth_runid(ifname: str) -> str | None:
    """The run id a conncap veth name carries, None for any other interface."""
    m = _VETH_RE.match(ifname)
    return m["runid"] if m else None


def check_allowed(net: IPv4Network | IPv4Interface | IPv4Address, what: str = "address") -> None:
    """Refuse anything outside 198.18.0.0/15 and 100.64.0.0/10 (the safety rule)."""
    if isinstance(net, IPv4Interface):
        net = net.network
    ok = (
        any(net.subnet_of(a) for a in ALLOWED_NETS)
        if isinstance(net, IPv4Network)
        else any(net in a for a in ALLOWED_NETS)
    )
    if not ok:
        raise UsageError(
            f"{what} {net} is outside the namespace-only test ranges "
            "198.18.0.0/15 and 100.64.0.0/10; conncap uses no other addresses in namespaces"
        )


def parse_network(text: str | IPv4Network) -> IPv4Network:
    """A subnet inside the allowed ranges, e.g. ``198.18.4.0/24``."""
    try:
        net = text if isinstance(text, IPv4Network) else ip_network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"subnet {text!r}: {exc}") from None
    if not isinstance(net, IPv4Network):
        raise UsageError(f"subnet {text!r}: only IPv4 subnets are supported in namespaces")
    check_allowed(net, "subnet")
    if net.num_addresses < 4:
        raise UsageError(f"subnet {net}: too small, use /30 or larger")
    return net


def parse_interface(text: str, default_prefix: int = 32) -> IPv4Interface:
    """``198.18.0.7`` or ``198.18.0.7/24`` as an interface address inside the allowed ranges."""
    try:
        iface = ip_interface(text if "/" in text else f"{text}/{default_prefix}")
    except ValueError as exc:
        raise UsageError(f"address {text!r}: {exc}") from None
    if not isinstance(iface, IPv4Interface):
        raise UsageError(f"address {text!r}: only IPv4 addresses are supported in namespaces")
    check_allowed(iface.ip)
    return iface


def prefix_for(hosts: int) -> int:
    """Smallest prefix length whose subnet holds ``hosts`` addresses (plus network, broadcast)."""
    need = hosts + 2
    bits = max(2, (need - 1).bit_length())
    return 32 - bits


class AddressPool:
    """Hands out non-overlapping subnets of one allowed block, in order.

    Addresses only need to be unique within one topology (each run has its own namespaces),
    so every topology starts its own pool.
    """

    def __init__(self, block: IPv4Network = LINK_BLOCK) -> None:
        check_allowed(block, "address block")
        self.block = block
        self._cursor = int(block.network_address)
        self._taken: list[IPv4Network] = []

    def claim(self, net: IPv4Network) -> None:
        """Mark a caller-chosen subnet as used; it must not overlap one already handed out."""
        for other in self._taken:
            if net.overlaps(other):
                raise UsageError(f"subnet {net} overlaps {other}, already used in this topology")
        self._taken.append(net)

    def take(self, prefixlen: int) -> IPv4Network:
        """The next free subnet of this size."""
        if not self.block.prefixlen <= prefixlen <= 30:
            raise UsageError(f"/{prefixlen} does not fit in {self.block} (use /30 to /16)")
        size = 1 << (32 - prefixlen)
        end = int(self.block.broadcast_address) + 1
        cur = (self._cursor + size - 1) // size * size
        while cur + size <= end:
            net = IPv4Network((cur, prefixlen))
            clash = next((t for t in self._taken if t.overlaps(net)), None)
            if clash is None:
                self._taken.append(net)
                self._cursor = cur + size
                return net
            cur = (int(clash.broadcast_address) + 1 + size - 1) // size * size
        raise UsageError(f"no free /{prefixlen} left in {self.block} for this topology")


def host_addresses(net: IPv4Network, count: int, skip: Iterable[IPv4Address] = ()) -> list[str]:
    """The first ``count`` usable addresses of ``net`` not in ``skip``."""
    skipped = set(skip)
    out: list[str] = []
    for addr in net.hosts():
        if addr in skipped:
            continue
        out.append(str(addr))
        if len(out) == count:
            return out
    raise UsageError(f"subnet {net} has no {count} free addresses")
