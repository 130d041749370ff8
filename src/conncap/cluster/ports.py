"""Where a Ray node's own ports go so that they do not distort the measurement: every port
``ray start`` opens is given explicitly, outside the node's ephemeral port range. Left to
themselves several (the node manager, the object manager, the dashboard agent's gRPC port,
the metrics port, the runtime-env agent) bind port 0, i.e. a port of the ephemeral range,
and each such listener takes its port from every pool conncap's client draws from. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

#: GCS port of the head (``ray start --head --port``).
GCS_PORT = 20379
#: Every other port a Ray node opens, one flag each; all below Linux's default ephemeral
#: range (32768-60999) and below the scenarios' ranges (40000+).
NODE_PORTS: dict[str, int] = {
    "--node-manager-port": 20001,
    "--object-manager-port": 20002,
    "--dashboard-agent-grpc-port": 20003,
    "--dashboard-agent-listen-port": 20004,
    "--runtime-env-agent-port": 20006,
    "--metrics-export-port": 20007,
    "--min-worker-port": 20100,
    "--max-worker-port": 20199,
}
#: Small nodes for a shared machine: one CPU, an 80 MB object store.
NUM_CPUS = 1
OBJECT_STORE_BYTES = 80_000_000


def ray_ports(head: bool) -> list[int]:
    """Every port a node started with :func:`port_flags` may listen on."""
    lo, hi = NODE_PORTS["--min-worker-port"], NODE_PORTS["--max-worker-port"]
    fixed = [p for k, p in NODE_PORTS.items() if not k.endswith("-worker-port")]
    return sorted({*fixed, *range(lo, hi + 1), *([GCS_PORT] if head else [])})


def clashes(port_range: tuple[int, int], head: bool = True) -> list[int]:
    """Ray's ports inside ``port_range`` (none with the defaults above and a range from
    20200 up)."""
    lo, hi = port_range
    return [p for p in ray_ports(head) if lo <= p <= hi]


def port_flags(head: bool) -> list[str]:
    """The ``ray start`` flags that put every port of the node outside the ephemeral range."""
    out: list[str] = ["--port", str(GCS_PORT)] if head else []
    for flag, port in NODE_PORTS.items():
        out += [flag, str(port)]
    return out


def ray_start_argv(
    ray: str,
    *,
    node_ip: str,
    head_address: str | None,
    temp_dir: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``ray start --block`` for a head (``head_address`` None) or a node joining it: small,
    quiet (no dashboard, no usage stats), every port placed by :func:`port_flags`.
    ``--block`` keeps the command in the foreground, so its caller owns its pid, and on
    SIGTERM it ends the node's processes."""
    head = head_address is None
    argv = [ray, "start", "--block", "--node-ip-address", node_ip]
    argv += ["--head", "--include-dashboard=false"] if head else ["--address", str(head_address)]
    if head and temp_dir:
        argv += ["--temp-dir", temp_dir]
    argv += [
        "--num-cpus",
        str(NUM_CPUS),
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        "--disable-usage-stats",
        *port_flags(head),
        *extra,
    ]
    return argv
