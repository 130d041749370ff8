"""``four-tuple``: the same client beats its port range by adding source IPs, then
destination ports, because a connection is its 4-tuple.

1. One source IP, one destination port: the client stops at its port range (EADDRNOTAVAIL).
2. N source IPs (bound with IP_BIND_ADDRESS_NO_PORT, so connect() still picks the port with
   the whole 4-tuple known), one destination: N times as many.
3. N source IPs × M destination ports on the same server: N × M times as many.

Every step is checked against the exact count and against the model's prediction. At the
server, ``ss`` shows the same few source port numbers reused across IPs and destinations.
The range has an even number of ports, so connect()'s even-count search uses all of them.
"""

from __future__ import annotations

import math

from conncap.engine import OpenPlan, Target
from conncap.engine.plan import per_worker_capacity
from conncap.scenarios import expect as ex
from conncap.scenarios.article import DEEP_BACKLOG
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.isolated import nofile_hard
from conncap.scenarios.step import Launch, Step

#: (port range, source IPs, destination ports) per scale.
SIZES = {
    "small": ((1024, 1999), 4, 3),
    "full": ((10000, 19999), 2, 3),
}


def run(sr: ScenarioRun) -> None:
    (lo, hi), n_src, n_dst = SIZES[sr.scale]
    pool, most = ex.connect_ports(lo, hi)
    assert pool == most, "an even-sized range: connect() uses every port"
    cs = sr.topo.client_server(
        port_range=(lo, hi), extra_client_ips=n_src - 1, somaxconn=DEEP_BACKLOG
    )
    hard = nofile_hard()
    biggest = pool * n_src * n_dst
    srv_workers = math.ceil(biggest / per_worker_capacity(hard)) + 1
    server = sr.server(cs.server, cs.server_ip, ports=n_dst, workers=srv_workers)
    ports = server.ports
    sr.layout = {
        "client": {"netns": cs.client.name, "source_ips": list(cs.source_ips)},
        "server": {"netns": cs.server.name, "ip": cs.server_ip, "ports": ports},
    }
    sr.settings = {"port_range": f"{lo}-{hi}", "source_ips": n_src, "destination_ports": n_dst}
    sr.watch("server", cs.server)
    sr.headline = "sources-x-ports"

    def step(name: str, title: str, sources: tuple[str, ...], dports: list[int]) -> Step:
        expected = pool * max(1, len(sources)) * len(dports)
        workers = math.ceil(expected / per_worker_capacity(hard)) + (0 if expected < 5000 else 1)
        plan = OpenPlan(
            tuple(Target(cs.server_ip, p, p) for p in dports),
            count=expected + 64,
            source_ips=sources,
            workers=max(1, workers),
            timeout_s=5.0,
        )
        pred = sr.predict(
            cs.client,
            None,
            cs.server,
            None,
            source_ips=max(1, len(sources)),
            destinations=len(dports),
            bind="bind-no-port" if sources else "none",
            client_processes=plan.workers,
            server_processes=srv_workers,
        )
        return sr.ramp(
            name, title, [Launch(cs.client, plan)], prediction=pred, max_s=120.0, settle="all"
        )

    s1 = step("one-source", f"1 source IP -> {cs.server_ip}:{ports[0]}", (), ports[:1])
    _ports_bind(sr, s1, pool, f"the port range {lo}-{hi}: {pool:,}")
    sr.release(s1)

    s2 = step(
        "sources",
        f"{n_src} source IPs -> {cs.server_ip}:{ports[0]}",
        cs.source_ips,
        ports[:1],
    )
    _ports_bind(sr, s2, pool * n_src, f"{n_src} × step 1")
    sr.check(ex.equal(f"× {n_src} source IPs", n_src * s1.held, s2.held, step=s2.name))
    view = sr.server_peers(ports)
    s2.observed["server_ss"] = view.to_json()
    sr.check(
        ex.same(
            "the server holds the same count from each source IP",
            dict.fromkeys(cs.source_ips, pool),
            view.per_peer_ip,
            step=s2.name,
        )
    )
    sr.release(s2)

    s3 = step(
        "sources-x-ports",
        f"{n_src} source IPs × {n_dst} destination ports on {cs.server_ip}",
        cs.source_ips,
        ports,
    )
    _ports_bind(sr, s3, pool * n_src * n_dst, f"{n_dst} × step 2")
    sr.check(ex.equal(f"× {n_dst} destination ports", n_dst * s2.held, s3.held, step=s3.name))
    view = sr.server_peers(ports)
    s3.observed["server_ss"] = view.to_json()
    sr.check(
        ex.holds(
            "source ports are reused: each 4-tuple is unique, not each port",
            view.connections == s3.held
            and view.distinct_peers == n_src * pool
            and view.distinct_peer_ports == pool,
            f"{s3.held:,} connections from {n_src * pool:,} (source IP, source port) pairs "
            f"over {pool:,} port numbers",
            f"{view.connections:,} connections from {view.distinct_peers:,} pairs over "
            f"{view.distinct_peer_ports:,} port numbers",
            step=s3.name,
        )
    )
    sr.release(s3)


def _ports_bind(sr: ScenarioRun, s: Step, expected: int, how: str) -> None:
    sr.check(
        ex.holds(
            "ports bind exactly",
            s.held == expected and s.errno == "EADDRNOTAVAIL",
            f"{expected:,} ({how}), EADDRNOTAVAIL",
            f"{s.held:,}, {s.errno}",
            step=s.name,
        )
    )
    p = s.prediction.count
    sr.check(
        ex.holds(
            "as the model predicts",
            p == s.held and s.prediction.cause == "ephemeral-ports",
            f"{ex.n(p)} ({s.prediction.cause})",
            f"{s.held:,} (ephemeral-ports)" if s.cause == "ephemeral-ports" else f"{s.held:,}",
            step=s.name,
        )
    )
