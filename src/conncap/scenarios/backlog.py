"""``backlog``: a server that stops accepting for a while, with a small listen backlog.

1. The server's workers are frozen (SIGSTOP to their pids: a stalled program, a long GC
   pause) while a burst arrives. The kernel completes handshakes into the accept queue until
   it is full (``ss -ltn``: Recv-Q > Send-Q), then drops SYNs (ListenOverflows in the server's
   namespace); the client retransmits them (TCPSynRetrans in its namespace) and times out.
   conncap names the backlog from ListenOverflows. Thawed (SIGCONT), the server accepts
   exactly what waited in the queue.
2. The same burst against the accepting server: it connects, and the server holds far more
   than its backlog. The backlog limits the burst a server absorbs while it is not
   accepting, not how many connections it holds. Under a burst a tiny backlog can still
   leave a few connections half-open (established at the client, unknown to the server:
   a SYN cookie whose last ACK met a full queue); they are counted, not hidden.
"""

from __future__ import annotations

from conncap.engine import OpenPlan, Target
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.step import Launch, side_line

#: (server somaxconn, connections in the burst)
SIZES = {
    "small": (16, 200),
    "full": (128, 2000),
}


def run(sr: ScenarioRun) -> None:
    somaxconn, burst = SIZES[sr.scale]
    cs = sr.topo.client_server(somaxconn=somaxconn)
    server = sr.server(cs.server, cs.server_ip)
    port = server.ports[0]
    sr.layout = {
        "client": {"netns": cs.client.name, "ip": cs.client_ip},
        "server": {"netns": cs.server.name, "ip": cs.server_ip, "port": port},
    }
    sr.settings = {"server_somaxconn": somaxconn, "burst": burst}
    sr.watch("server", cs.server)
    sr.watch("client", cs.client)
    sr.headline = "stalled"
    target = (Target(cs.server_ip, port, port),)

    def launch(timeout_s: float) -> list[Launch]:
        return [Launch(cs.client, OpenPlan(target, count=burst, timeout_s=timeout_s, streak=8))]

    pred = sr.predict(cs.client, None, cs.server, None, listen_backlog=somaxconn)
    pids = sr.stop_server_accepting()
    sr.say(f"  server workers {', '.join(map(str, pids))} frozen (SIGSTOP): nothing is accepted")
    # 2.5 s: long enough for one SYN retransmission (after 1 s), short enough to end.
    s1 = sr.ramp(
        "stalled",
        f"a burst of {burst:,} against a server that does not accept (somaxconn {somaxconn})",
        launch(2.5),
        prediction=pred,
        max_s=60.0,
        settle="none",
        show_model=False,
    )
    queue = sr.server_queue(port)
    if queue is not None:
        s1.observed["accept_queue"] = queue.to_json()
    sr.check(
        ex.equal(
            "the frozen server accepted nothing",
            0,
            s1.server.accepted if s1.server is not None else None,
            step=s1.name,
        )
    )
    sr.check(
        ex.holds(
            "the accept queue filled (ss -ltn: Recv-Q > Send-Q)",
            queue is not None and queue.full,
            f"more waiting than the backlog {somaxconn}",
            f"{ex.n(queue.queued if queue else None)} waiting, backlog "
            f"{ex.n(queue.backlog if queue else None)}",
            step=s1.name,
        )
    )
    sr.check(
        ex.holds(
            "some handshakes completed without accept(), the rest did not",
            0 < s1.held < burst,
            f"between 1 and {burst - 1:,} of {burst:,}",
            f"{s1.held:,}",
            step=s1.name,
        )
    )
    for check in ex.overflow_and_syn_retries(s1.counters, step=s1.name):
        sr.check(check)
    sr.check(ex.same("the client timed out", "ETIMEDOUT", s1.errno, step=s1.name))
    sr.check(
        ex.same(
            "named the server's backlog",
            ("server-backlog", "server"),
            (s1.attribution.cause, s1.attribution.side),
            step=s1.name,
        )
    )
    notes = [x for x in s1.prediction.notes if str(x).startswith("backlog")]
    if notes:
        sr.check(ex.note("model", str(notes[0]), step=s1.name))

    waiting = queue.queued if queue is not None else None
    sr.resume_server()
    srv = sr.wait_server(until=waiting, max_s=10.0)
    s1.observed["server_after_resume"] = {"held": srv.held, "accepted": srv.accepted}
    sr.say(f"  server thawed (SIGCONT): it accepted {ex.n(srv.held)}")
    sr.check(
        ex.equal(
            "thawed, the server accepts exactly what waited in the queue",
            waiting,
            srv.held,
            step=s1.name,
        )
    )

    # 5 s: two SYN retransmissions (after 1 and 3 s) if the queue overflows for a moment.
    s2 = sr.ramp(
        "accepting",
        f"the same burst of {burst:,} against the accepting server",
        launch(5.0),
        prediction=pred,
        max_s=60.0,
        show_model=False,
    )
    sr.check(ex.equal("the whole burst connects", burst, s2.held, step=s2.name))
    sr.check(ex.equal("with no failure", 0, sum(s2.failures.values()), step=s2.name))
    side = sr.server_side(s2, port)
    accepted = side["server_accepted"] or 0
    sr.check(
        ex.greater(
            "an accepting server holds more than its backlog",
            accepted,
            somaxconn + 1,
            what="server held",
            than_what="backlog + 1",
            step=s2.name,
        )
    )
    sr.check(ex.note("at the server", side_line(side), step=s2.name))
