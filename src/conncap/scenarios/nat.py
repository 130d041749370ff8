"""``nat``: client hosts behind a NAT gateway, the SNAT port exhaustion cloud users meet.

Clients on a private LAN (100.64.0.0/16) reach the server only through a gateway namespace
that masquerades them to its one WAN address, with source ports from a narrow range (so it
binds fast). Towards one destination (IP, port) the gateway can hold one connection per
port of that range, for all its clients together; a new connection then finds no free
tuple, conntrack fails to insert it (``insert_failed``) and the SYN is dropped, so the
clients see only time-outs.

1. Every client opens connections to one server port, together more than the gateway's
   ports: the server holds exactly as many as the range has ports, all from the gateway's
   address, each from a port of the range.
2. The same clients open as many again to a second server port: the gateway's ports count
   per destination, so that gives a second full range.

The conntrack table's size (nf_conntrack_max) is one value for the whole kernel and cannot
be set inside a namespace (docs/netns.md), so this scenario fills the NAT's ports, not the
table; the gateway's own entry count is shown.
"""

from __future__ import annotations

from collections.abc import Callable

from conncap.engine import OpenPlan, Target
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.step import Launch, Step

#: (clients, masquerade ports, connections each client asks for per destination)
SIZES = {
    "small": (2, (40000, 40099), 80),
    "full": (8, (40000, 41023), 200),
}


def run(sr: ScenarioRun) -> None:
    n_cli, (plo, phi), each = SIZES[sr.scale]
    nports = ex.range_size(plo, phi)
    nat = sr.topo.nat(n_cli, ports=(plo, phi))
    server = sr.server(nat.server, nat.server_ip, ports=2)
    ports = server.ports
    sr.layout = {
        "clients": [
            {"netns": h.name, "ip": ip} for h, ip in zip(nat.clients, nat.client_ips, strict=True)
        ],
        "gateway": {
            "netns": nat.gateway.name,
            "lan_ip": nat.gateway_lan_ip,
            "wan_ip": nat.gateway_wan_ip,
            "firewall": nat.firewall,
            "masquerade_ports": f"{plo}-{phi}",
        },
        "server": {"netns": nat.server.name, "ip": nat.server_ip, "ports": ports},
    }
    sr.settings = {"clients": n_cli, "masquerade_ports": f"{plo}-{phi}", "per_client": each}
    sr.watch("server", nat.server)
    sr.watch("gateway", nat.gateway, conntrack=True)
    sr.headline = "one-destination"
    sr.say(
        f"  {n_cli} clients on {nat.client_ips[0]}... -> gateway {nat.gateway.name} "
        f"(masquerade to {nat.gateway_wan_ip}:{plo}-{phi}, {nat.firewall}) -> "
        f"server {nat.server_ip}"
    )

    def launches(port: int) -> list[Launch]:
        t = (Target(nat.server_ip, port, port),)
        plan = OpenPlan(t, count=each, timeout_s=2.0, streak=8)
        return [Launch(h, plan) for h in nat.clients]

    def explain(port: int) -> Callable[[Step], None]:
        return lambda s: _name_snat(sr, s, port, (plo, phi))

    s1 = sr.ramp(
        "one-destination",
        f"{n_cli} clients × {each} -> {nat.server_ip}:{ports[0]} through the gateway "
        f"({nports:,} source ports)",
        launches(ports[0]),
        max_s=60.0,
        explain=explain(ports[0]),
        settle="all",
    )
    _snat_ceiling(sr, s1, nat.gateway_wan_ip, [ports[0]], nports, (plo, phi), nports)

    s2 = sr.ramp(
        "second-destination",
        f"the same clients × {each} -> {nat.server_ip}:{ports[1]}: another destination",
        launches(ports[1]),
        max_s=60.0,
        explain=explain(ports[1]),
        settle="all",
    )
    _snat_ceiling(sr, s2, nat.gateway_wan_ip, [ports[1]], nports, (plo, phi), 2 * nports)
    ct = s2.counters.get("conntrack_count")
    cmax = s2.counters.get("conntrack_max")
    sr.check(
        ex.note(
            "the gateway's conntrack table",
            f"{ex.n(ct)} entries of nf_conntrack_max {ex.n(cmax)} (host-wide, cannot be "
            "lowered in a namespace): the ports ran out long before the table",
            step=s2.name,
        )
    )


def _name_snat(sr: ScenarioRun, s: Step, port: int, prange: tuple[int, int]) -> None:
    """Record what the server and the gateway saw (``ss`` at the server, the gateway's
    conntrack counters); the attribution tells SNAT port exhaustion from a full table."""
    view = sr.server_peers([port])
    s.observed["server_ss"] = view.to_json()
    s.observed["snat"] = {
        "gateway_ports": ex.range_size(*prange),
        "insert_failed": s.counters.get("conntrack_insert_failed"),
        "conntrack_count": s.counters.get("conntrack_count"),
        "conntrack_max": s.counters.get("conntrack_max"),
    }


def _snat_ceiling(
    sr: ScenarioRun,
    s: Step,
    wan_ip: str,
    ports: list[int],
    nports: int,
    prange: tuple[int, int],
    server_total: int,
) -> None:
    view = sr.server_peers(ports)
    insert_failed = s.counters.get("conntrack_insert_failed")
    sr.check(
        ex.equal(
            "the gateway's ports are the ceiling towards this destination",
            nports,
            view.connections,
            unit="connections",
            step=s.name,
        )
    )
    sr.check(ex.equal("the clients hold as many", nports, s.held, step=s.name))
    sr.check(
        ex.same(
            "the server sees one source IP: the gateway's",
            {wan_ip},
            set(view.per_peer_ip),
            step=s.name,
        )
    )
    lo, hi = prange
    sr.check(
        ex.holds(
            "every source port from the masquerade range",
            view.distinct_peer_ports == nports
            and view.peer_port_min == lo
            and view.peer_port_max == hi,
            f"{nports:,} distinct ports {lo}-{hi}",
            f"{view.distinct_peer_ports:,} distinct ports "
            f"{view.peer_port_min}-{view.peer_port_max}",
            step=s.name,
        )
    )
    sr.check(ex.equal("the server holds", server_total, s.server_held, step=s.name))
    sr.check(ex.at_least("the gateway dropped the rest", 1, insert_failed, step=s.name))
    sr.check(
        ex.same(
            "named conntrack (SNAT) in the network",
            ("conntrack", "network"),
            (s.attribution.cause, s.attribution.side),
            step=s.name,
        )
    )
