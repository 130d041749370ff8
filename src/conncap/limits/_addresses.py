"""Which local addresses a client can use as source IPs, from ``psutil.net_if_addrs()``.

Each source IP brings its own set of ephemeral ports towards one destination, so this list
multiplies the client-side ceiling. Shared by the Linux, macOS and Windows readers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol


class IfAddr(Protocol):
    """The part of psutil's ``snicaddr`` we use (recordings provide the same attributes)."""

    @property
    def address(self) -> str: ...

    @property
    def netmask(self) -> str | None: ...


#: ``psutil.net_if_addrs`` or a recording of it: interface name -> its addresses.
AddressSource = Callable[[], Mapping[str, Sequence[IfAddr]]]


def psutil_net_if_addrs() -> Mapping[str, Sequence[IfAddr]]:
    """The real system's addresses (psutil reads them with getifaddrs / GetAdaptersAddresses)."""
    import psutil

    return psutil.net_if_addrs()


def usable_source_addresses(
    interfaces: Mapping[str, Sequence[IfAddr]], *, whole_loopback_prefix: bool
) -> tuple[str, ...]:
    """Source IPs a connect() may bind to, loopback first, then IPv4, then IPv6.

    With ``whole_loopback_prefix`` (Linux, Windows) a loopback address with a netmask stands
    for its whole prefix: Linux installs ``local 127.0.0.0/8 dev lo`` for ``127.0.0.1/8``, so
    any 127.x.y.z is a local source; it is shown as ``"127.0.0.0/8"``. macOS answers only on
    the addresses configured on lo0. Link-local IPv6 (fe80::/10) is left out: it needs a scope
    id and reaches only its own link. Hardware (MAC) entries are ignored.
    """
    found: list[tuple[int, str]] = []
    for addrs in interfaces.values():
        for entry in addrs:
            text = entry.address.split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue  # AF_LINK / AF_PACKET hardware address
            if ip.is_unspecified or (ip.version == 6 and ip.is_link_local):
                continue
            shown = str(ip)
            if ip.is_loopback and ip.version == 4 and whole_loopback_prefix and entry.netmask:
                try:
                    net = ipaddress.ip_network(f"{text}/{entry.netmask}", strict=False)
                except ValueError:
                    net = None
                if net is not None and net.prefixlen < 32:
                    shown = str(net)
            rank = (0 if ip.is_loopback else 1) * 10 + ip.version
            found.append((rank, shown))
    seen: set[str] = set()
    out: list[str] = []
    for _, shown in sorted(found, key=lambda r: r[0]):
        if shown not in seen:
            seen.add(shown)
            out.append(shown)
    return tuple(out)


def address_count(addresses: Sequence[str]) -> int:
    """How many single source IPs the list stands for (a prefix counts all its addresses)."""
    total = 0
    for a in addresses:
        total += ipaddress.ip_network(a, strict=False).num_addresses if "/" in a else 1
    return total
