"""Ready-made layouts built from :class:`Topology`'s building blocks, for the scenarios.

- ``client_server``: ``cli`` and ``srv`` on one veth. With ``extra_client_ips`` the client
  also owns that many /32 source addresses from 198.19.0.0/16, routed by the server via the
  client (so the server's neighbour table holds one entry, not thousands: its size,
  gc_thresh3 = 1024 by default, is one value for the whole kernel).
- ``many_clients``: ``n`` client namespaces and ``srv`` on one bridge inside a ``sw``
  namespace, all in one subnet of 198.18.0.0/16.
- ``nat``: clients on a LAN (100.64.0.0/16, a bridge in the gateway) -> ``gw`` masquerading
  -> ``srv`` on 198.18.x.x. The server has no route to the LAN, so a reply reaches a client
  only through the gateway's NAT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from conncap.errors import UsageError
from conncap.netns.naming import LAN_BLOCK, SOURCE_BLOCK, prefix_for
from conncap.netns.sysctls import SysctlValue, port_range_value

if TYPE_CHECKING:
    from conncap.netns.topology import Host, Topology

Sysctls = Mapping[str, SysctlValue]


@dataclass(frozen=True)
class ClientServer:
    client: Host
    server: Host
    client_ip: str
    server_ip: str
    source_ips: tuple[str, ...]
    """Every address the client may bind as source: ``client_ip`` first, then the extras."""


@dataclass(frozen=True)
class ManyClients:
    server: Host
    server_ip: str
    clients: tuple[Host, ...]
    client_ips: tuple[str, ...]
    switch: Host
    network: IPv4Network


@dataclass(frozen=True)
class Nat:
    clients: tuple[Host, ...]
    client_ips: tuple[str, ...]
    gateway: Host
    gateway_lan_ip: str
    gateway_wan_ip: str
    """The address the server sees as every client's source."""
    server: Host
    server_ip: str
    firewall: str
    """nft, iptables or iptables-legacy."""
    ports: tuple[int, int] | None
    """The masquerade source-port range, None for the kernel's default (see firewall.py)."""


def client_sysctls(
    port_range: tuple[int, int] | None, extra: Sysctls | None
) -> dict[str, SysctlValue]:
    out: dict[str, SysctlValue] = {}
    if port_range is not None:
        out["net.ipv4.ip_local_port_range"] = port_range_value(port_range)
    out.update(extra or {})
    return out


def server_sysctls(
    somaxconn: int | None, max_syn_backlog: int | None, extra: Sysctls | None
) -> dict[str, SysctlValue]:
    out: dict[str, SysctlValue] = {}
    if somaxconn is not None:
        out["net.core.somaxconn"] = _positive(somaxconn, "somaxconn")
    if max_syn_backlog is not None:
        out["net.ipv4.tcp_max_syn_backlog"] = _positive(max_syn_backlog, "max_syn_backlog")
    out.update(extra or {})
    return out


def _positive(n: int, what: str) -> int:
    if n < 1:
        raise UsageError(f"{what} must be at least 1, not {n}")
    return n


def _count(n: int, what: str, topo: Topology) -> int:
    if not 1 <= n <= topo.MAX_HOSTS - 2:
        raise UsageError(f"{what} must be 1 to {topo.MAX_HOSTS - 2}, not {n}")
    return n


def client_server(
    topo: Topology,
    *,
    port_range: tuple[int, int] | None = None,
    somaxconn: int | None = None,
    max_syn_backlog: int | None = None,
    extra_client_ips: int = 0,
    client_extra: Sysctls | None = None,
    server_extra: Sysctls | None = None,
) -> ClientServer:
    """``cli`` -- veth -- ``srv``; ``port_range`` is the client's ip_local_port_range,
    ``somaxconn``/``max_syn_backlog`` the server's; the ``*_extra`` maps add any net.* key."""
    if not 0 <= extra_client_ips <= SOURCE_BLOCK.num_addresses - 2:
        raise UsageError(f"extra_client_ips must be 0 to {SOURCE_BLOCK.num_addresses - 2}")
    cli_sys = client_sysctls(port_range, client_extra)
    srv_sys = server_sysctls(somaxconn, max_syn_backlog, server_extra)
    cli, srv = topo.add_hosts(["cli", "srv"])
    client_ip, server_ip = topo.link(cli, srv)
    extras: list[str] = []
    if extra_client_ips:
        block = IPv4Network((SOURCE_BLOCK.network_address, prefix_for(extra_client_ips)))
        wanted = [str(a) for _, a in zip(range(extra_client_ips), block.hosts(), strict=False)]
        extras = topo.add_addresses(cli, [f"{a}/32" for a in wanted])
        topo.route(srv, str(block), via=client_ip)
    topo.sysctls_set(cli, cli_sys)
    topo.sysctls_set(srv, srv_sys)
    return ClientServer(cli, srv, client_ip, server_ip, (client_ip, *extras))


def many_clients(
    topo: Topology,
    n: int,
    *,
    port_range: tuple[int, int] | None = None,
    somaxconn: int | None = None,
    max_syn_backlog: int | None = None,
    client_extra: Sysctls | None = None,
    server_extra: Sysctls | None = None,
) -> ManyClients:
    """``cli0`` … ``cli<n-1>`` and ``srv`` on a bridge inside ``sw``."""
    _count(n, "n", topo)
    cli_sys = client_sysctls(port_range, client_extra)
    srv_sys = server_sysctls(somaxconn, max_syn_backlog, server_extra)
    hosts = topo.add_hosts(["sw", "srv", *(f"cli{i}" for i in range(n))])
    sw, srv, clients = hosts[0], hosts[1], hosts[2:]
    lan = topo.bridge(sw, [srv, *clients])
    topo.each(clients, lambda c: topo.sysctls_set(c, cli_sys))
    topo.sysctls_set(srv, srv_sys)
    return ManyClients(srv, lan.member_ips[0], tuple(clients), lan.member_ips[1:], sw, lan.network)


def nat(
    topo: Topology,
    n_clients: int,
    *,
    ports: tuple[int, int] | None = None,
    gateway_port_range: tuple[int, int] | None = None,
    port_range: tuple[int, int] | None = None,
    somaxconn: int | None = None,
    max_syn_backlog: int | None = None,
    client_extra: Sysctls | None = None,
    server_extra: Sysctls | None = None,
) -> Nat:
    """Clients -> ``gw`` (bridge + masquerade, source ports from ``ports``) -> ``srv``.

    ``gateway_port_range`` sets the gateway's own ip_local_port_range; masquerade ignores it
    (it keeps the client's port when free, else searches 1024-65535, or ``ports``).
    """
    _count(n_clients, "n_clients", topo)
    cli_sys = client_sysctls(port_range, client_extra)
    srv_sys = server_sysctls(somaxconn, max_syn_backlog, server_extra)
    hosts = topo.add_hosts(["gw", "srv", *(f"cli{i}" for i in range(n_clients))])
    gw, srv, clients = hosts[0], hosts[1], hosts[2:]
    lan_net = IPv4Network((LAN_BLOCK.network_address, prefix_for(n_clients + 1)))
    lan = topo.bridge(gw, clients, lan_net, hub_ip=True)
    assert lan.hub_ip is not None
    wan_ip, server_ip = topo.link(gw, srv)
    wan_iface = next(name for name, a in gw.ifaces.items() if str(a.ip) == wan_ip)
    gw_lan_ip = lan.hub_ip

    def client_setup(c: Host) -> None:
        topo.route(c, "default", via=gw_lan_ip)
        topo.sysctls_set(c, cli_sys)

    topo.each(clients, client_setup)
    gw_sys: dict[str, SysctlValue] = {"net.ipv4.ip_forward": 1}
    if gateway_port_range is not None:
        gw_sys["net.ipv4.ip_local_port_range"] = port_range_value(gateway_port_range)
    topo.sysctls_set(gw, gw_sys)
    backend = topo.masquerade(gw, wan_iface, ports)
    topo.sysctls_set(srv, srv_sys)
    return Nat(
        tuple(clients),
        lan.member_ips,
        gw,
        lan.hub_ip,
        wan_ip,
        srv,
        server_ip,
        backend,
        ports,
    )
