"""Source NAT (masquerade) inside a gateway namespace: nftables first, iptables as fallback.

Rules live only in the gateway namespace's own netfilter tables and vanish with it; nothing
is ever added to the host's ruleset.

Which source port does masquerade pick? The kernel first keeps the client's own source port
if that (ip, port) is still free on the gateway's address; otherwise, with no range given, it
searches 1024-65535 (512-1023 / 1-511 for privileged source ports; net/netfilter/
nf_nat_core.c). The gateway's ``ip_local_port_range`` plays no part. To model SNAT port
exhaustion, narrow the range: nft ``masquerade to :40000-40999`` / iptables ``--to-ports
40000-40999`` (both need the protocol named, hence one rule per tcp and udp).
"""

from __future__ import annotations

from conncap.errors import RunFailed, UsageError
from conncap.netns.iproute import Shell

TABLE = "conncap"


def check_ports(ports: tuple[int, int] | None) -> tuple[int, int] | None:
    if ports is None:
        return None
    lo, hi = ports
    if not (1 <= lo <= hi <= 65535):
        raise UsageError(f"masquerade ports {lo}-{hi}: need 1 <= low <= high <= 65535")
    return (lo, hi)


def nft_ruleset(out_iface: str, ports: tuple[int, int] | None = None) -> str:
    """The nft script (for ``nft -f -``) that masquerades what leaves ``out_iface``."""
    ports = check_ports(ports)
    rules: list[str] = []
    if ports is not None:
        lo, hi = ports
        for proto in ("tcp", "udp"):
            rules.append(f'oifname "{out_iface}" meta l4proto {proto} masquerade to :{lo}-{hi}')
    rules.append(f'oifname "{out_iface}" masquerade')
    body = "\n".join(f"    {r}" for r in rules)
    return (
        f"table ip {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"{body}\n"
        "  }\n"
        "}\n"
    )


def iptables_rules(out_iface: str, ports: tuple[int, int] | None = None) -> list[list[str]]:
    """The iptables argument lists (after ``iptables``) for the same masquerade."""
    ports = check_ports(ports)
    base = ["-t", "nat", "-A", "POSTROUTING", "-o", out_iface]
    rules: list[list[str]] = []
    if ports is not None:
        lo, hi = ports
        for proto in ("tcp", "udp"):
            rules.append([*base, "-p", proto, "-j", "MASQUERADE", "--to-ports", f"{lo}-{hi}"])
    rules.append([*base, "-j", "MASQUERADE"])
    return rules


#: Tried in this order; the first that works inside the namespace is used.
BACKENDS: tuple[str, ...] = ("nft", "iptables", "iptables-legacy")


def masquerade(
    shell: Shell, netns: str, out_iface: str, ports: tuple[int, int] | None = None
) -> str:
    """Install masquerade in ``netns``; returns the backend used (``nft``, ``iptables``…)."""
    errors: list[str] = []
    for backend in BACKENDS:
        try:
            if backend == "nft":
                shell.in_netns(netns, ["nft", "-f", "-"], stdin=nft_ruleset(out_iface, ports))
            else:
                for args in iptables_rules(out_iface, ports):
                    shell.in_netns(netns, [backend, *args])
        except RunFailed as exc:
            errors.append(str(exc))
            continue
        return backend
    raise RunFailed(
        "could not install masquerade in the gateway namespace with nft or iptables "
        f"(install nftables or iptables): {errors[0] if errors else 'no backend'}"
    )
