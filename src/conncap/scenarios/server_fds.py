"""``server-fds``: a server with a small RLIMIT_NOFILE, and what the client sees of it.

The server accepts until its descriptor table is full; accept() then fails with EMFILE
(the engine's server backs off and retries, as trio does). The kernel does not care: it
still completes handshakes into the listener's accept queue, so the client's connects
succeed for a while longer, then the queue is full, SYNs are dropped (ListenOverflows in
the server's namespace), the client retransmits them and times out. The client's own errno
is only ETIMEDOUT; conncap names the server's descriptors from the server's evidence.
"""

from __future__ import annotations

from conncap.engine import OpenPlan, Target
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.step import Launch, side_line

#: SYN cookies off in the server's namespace: a handshake whose last ACK meets the full
#: queue then stays in SYN-RECV at the server (counted) instead of becoming a half-open
#: connection only the client knows; under load those would eat the client's count before
#: the server's descriptors run out.
NO_COOKIES = {"net.ipv4.tcp_syncookies": 0}
#: (server ulimit -n, server somaxconn, connections asked)
SIZES = {
    "small": (256, 64, 600),
    "full": (2000, 512, 4000),
}


def run(sr: ScenarioRun) -> None:
    nofile, somaxconn, count = SIZES[sr.scale]
    cs = sr.topo.client_server(somaxconn=somaxconn, server_extra=NO_COOKIES)
    server = sr.server(cs.server, cs.server_ip, nofile=nofile)
    port = server.ports[0]
    sr.layout = {
        "client": {"netns": cs.client.name, "ip": cs.client_ip},
        "server": {"netns": cs.server.name, "ip": cs.server_ip, "port": port},
    }
    sr.settings = {
        "server_nofile": nofile,
        "server_somaxconn": somaxconn,
        "server_syncookies": 0,
        "count": count,
    }
    sr.watch("server", cs.server)
    sr.watch("client", cs.client)
    plan = OpenPlan((Target(cs.server_ip, port, port),), count=count, timeout_s=5.0, streak=16)
    pred = sr.predict(
        cs.client, None, cs.server, nofile, server_processes=1, listen_backlog=somaxconn
    )
    s = sr.ramp(
        "server-ulimit",
        f"{count:,} connections -> {cs.server_ip}:{port}, server ulimit -n {nofile:,}, "
        f"somaxconn {somaxconn}",
        [Launch(cs.client, plan)],
        prediction=pred,
        max_s=60.0,
    )
    tables = sr.server_fd_tables()
    server_held = s.server_held or 0
    if tables:
        t = tables[0]
        s.observed["server_fd_table"] = t.to_json()
        sr.check(
            ex.holds(
                "the server's descriptor table is full",
                t.full and t.open == nofile and t.sockets == server_held + 1,
                f"{nofile:,} open of {nofile:,}: {server_held:,} connections + the listener "
                "+ stdio and epoll",
                f"{t.open:,} open of {t.limit or 0:,}, {t.sockets:,} sockets",
                step=s.name,
            )
        )
    errs = s.server_errors.get("file-descriptors")
    sr.check(ex.at_least("the server's accept() failed with EMFILE", 1, errs, step=s.name))
    sr.check(
        ex.greater(
            "handshakes completed into the backlog, never accepted",
            s.held,
            server_held,
            what="client held",
            than_what="server held",
            step=s.name,
        )
    )
    for check in ex.overflow_and_syn_retries(s.counters, step=s.name):
        sr.check(check)
    sr.check(
        ex.same(
            "the client itself only saw time-outs",
            {"ETIMEDOUT"},
            set(s.failures),
            step=s.name,
        )
    )
    sr.check(
        ex.same(
            "named the server's descriptors, from the server's evidence",
            ("file-descriptors", "server"),
            (s.attribution.cause, s.attribution.side),
            step=s.name,
        )
    )
    side = sr.server_side(s, port)
    queued, backlog = side["accept_queue"], side["backlog"]
    sr.check(
        ex.holds(
            "the accept queue is full (ss -ltn: Recv-Q > Send-Q)",
            queued is not None and backlog is not None and queued > backlog,
            f"more waiting than the backlog {ex.n(backlog)}",
            f"{ex.n(queued)} waiting",
            step=s.name,
        )
    )
    sr.check(
        ex.equal(
            "what the server's kernel holds is accepted or queued",
            (side["server_accepted"] or 0) + (queued or 0),
            side["server_established"],
            step=s.name,
        )
    )
    sr.check(ex.note("at the server", side_line(side), step=s.name))
    sr.check(ex.model_note(s.prediction.count, s.prediction.cause, server_held, step=s.name))
