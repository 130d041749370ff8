"""``many-clients``: several client hosts (namespaces with their own IPs, on one switch)
against one server port. The server tells them apart by source IP and holds the sum, until
its own limit binds: here its descriptors (a small ulimit -n, so it binds fast).

1. Every client opens a few connections, the sum under the server's limit: the server holds
   exactly the sum, per source IP exactly each client's share.
2. Every client opens more: the server's descriptor table fills, accept() fails with
   EMFILE, the handshakes that still complete wait in the accept queue and the rest time
   out. The clients see only time-outs; conncap names the server's descriptors from the
   server's own evidence. No client is near its own port range.
"""

from __future__ import annotations

from conncap.engine import OpenPlan, Target
from conncap.result import Prediction
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.server_fds import NO_COOKIES
from conncap.scenarios.step import Launch, side_line

#: (clients, server ulimit -n, server somaxconn, step 1 per client, step 2 per client).
#: somaxconn is at least step 1's total, so a server that falls behind under load still
#: holds every step-1 connection in the end; step 2 asks for more than descriptors and
#: backlog together.
SIZES = {
    "small": (4, 300, 256, 50, 150),
    "full": (16, 2000, 2048, 100, 200),
}


def run(sr: ScenarioRun) -> None:
    n_cli, nofile, somaxconn, first, more = SIZES[sr.scale]
    mc = sr.topo.many_clients(n_cli, somaxconn=somaxconn, server_extra=NO_COOKIES)
    server = sr.server(mc.server, mc.server_ip, nofile=nofile)
    port = server.ports[0]
    sr.layout = {
        "clients": [
            {"netns": h.name, "ip": ip} for h, ip in zip(mc.clients, mc.client_ips, strict=True)
        ],
        "server": {"netns": mc.server.name, "ip": mc.server_ip, "port": port},
        "switch": mc.switch.name,
    }
    sr.settings = {
        "clients": n_cli,
        "server_nofile": nofile,
        "server_somaxconn": somaxconn,
        "server_syncookies": 0,
        "per_client": [first, more],
    }
    sr.watch("server", mc.server)
    sr.headline = "beyond-the-server"
    target = (Target(mc.server_ip, port, port),)

    def launches(count: int) -> list[Launch]:
        plan = OpenPlan(target, count=count, timeout_s=5.0, streak=16)
        return [Launch(h, plan) for h in mc.clients]

    def predict() -> Prediction:
        return sr.predict(
            mc.clients[0],
            None,
            mc.server,
            nofile,
            client_processes=n_cli,
            server_processes=1,
            listen_backlog=somaxconn,
        )

    s1 = sr.ramp(
        "within-the-server",
        f"{n_cli} clients × {first} connections -> {mc.server_ip}:{port} "
        f"(server ulimit -n {nofile})",
        launches(first),
        prediction=predict(),
        max_s=30.0,
        settle="all",
    )
    total = n_cli * first
    sr.check(ex.equal("the clients get all they asked", total, s1.held, step=s1.name))
    sr.check(ex.equal("the server holds the sum", total, s1.server_held, step=s1.name))
    sr.check(
        ex.same(
            "told apart by source IP: each client's share",
            dict.fromkeys(mc.client_ips, first),
            dict(s1.server.per_source_ip if s1.server is not None else {}),
            step=s1.name,
        )
    )
    view = sr.server_peers([port])
    s1.observed["server_ss"] = view.to_json()
    sr.check(ex.same("on one server port", {port}, set(view.local_ports), step=s1.name))

    s2 = sr.ramp(
        "beyond-the-server",
        f"{n_cli} clients × {more} more connections: past the server's descriptors",
        launches(more),
        prediction=predict(),
        max_s=60.0,
    )
    tables = sr.server_fd_tables()
    held = s2.server_held or 0
    per_ip = dict(s2.server.per_source_ip if s2.server is not None else {})
    if tables:
        t = tables[0]
        s2.observed["server_fd_table"] = t.to_json()
        sr.check(
            ex.holds(
                "the server's descriptor table is full",
                t.full and t.open == nofile,
                f"{nofile:,} open of {nofile:,}",
                f"{t.open:,} open of {t.limit or 0:,} ({t.sockets:,} sockets)",
                step=s2.name,
            )
        )
    errs = s2.server_errors.get("file-descriptors")
    sr.check(ex.at_least("accept() failed with EMFILE", 1, errs, step=s2.name))
    sr.check(
        ex.equal(
            "the per-source-IP counts add up to the held", held, sum(per_ip.values()), step=s2.name
        )
    )
    sr.check(
        ex.same("every client is still counted", set(mc.client_ips), set(per_ip), step=s2.name)
    )
    sr.check(
        ex.same(
            "named the server's descriptors",
            ("file-descriptors", "server"),
            (s2.attribution.cause, s2.attribution.side),
            step=s2.name,
        )
    )
    side = sr.server_side(s2, port)
    sr.check(
        ex.equal(
            "what the server's kernel holds is accepted or queued",
            held + (side["accept_queue"] or 0),
            side["server_established"],
            step=s2.name,
        )
    )
    sr.check(ex.note("at the server", side_line(side), step=s2.name))
    sr.check(ex.model_note(s2.prediction.count, s2.prediction.cause, held, step=s2.name))
