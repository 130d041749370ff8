"""``article``: the founding article's experiment, on Linux, between two namespaces.

The article's client ran out at 3,977 connections because Windows gave it the ports
1024-5000 (WSAEADDRINUSE, 10048); raising MaxUserPort to 10000 and then further moved the
ceiling until another limit bound ("nearly 20 thousand"). Here the client namespace's
ip_local_port_range plays MaxUserPort:

1. 1024-5000, connect() picks the port (as the article's program did): EADDRNOTAVAIL once
   the range is used up, at 3,977, or 3,976 in some runs: Linux's connect() searches an
   even number of ports from a moving offset, and in an odd-sized range one end is reached
   from a single offset only (:func:`~conncap.scenarios.expect.connect_ports`). ``ss`` at
   the server shows which ports were used.
2. The same range with conncap binding every port itself: always all 3,977.
3. 1024-10000 (MaxUserPort=10000): 8,977 ports (8,976 in some runs). On Linux the new
   range applies to the next connect(); the article needed a reboot.
4. 1024-65535 with one client process, like the article's program: the next limit is the
   process's descriptors (ulimit -n, 20,000 on this machine): EMFILE with the descriptor
   table full.
5. (full scale) The same range spread over enough processes (each binding its own slice
   of the range, which keeps it fast): the ports bind again, at 64,512.

Throughout, the server listens on one port and holds every connection; ``ss`` in its
namespace shows one local port, one peer IP and as many distinct source ports as
connections: the server tells clients apart by (source IP, source port).
"""

from __future__ import annotations

import math

from conncap.engine import OpenPlan, Target
from conncap.engine.plan import per_worker_capacity
from conncap.netns import Host
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.observe import PeerView
from conncap.scenarios.step import Launch, Step

LOW = 1024
#: MaxUserPort values the article went through, as the top of the client's port range.
TOPS = (5000, 10000, 65535)
#: The server namespace's somaxconn: deeper than any step's connections.
DEEP_BACKLOG = 65535


def run(sr: ScenarioRun) -> None:
    topo = sr.topo
    # A deep accept queue: a server that falls behind under load never drops a handshake,
    # so what the server holds is exactly what the client opened.
    cs = topo.client_server(port_range=(LOW, TOPS[0]), somaxconn=DEEP_BACKLOG)
    hard = ex_nofile()
    full_ports = ex.range_size(LOW, TOPS[-1])
    # Enough server workers to hold the largest step (each under the hard descriptor limit).
    biggest = full_ports if not sr.small else hard
    srv_workers = max(2, math.ceil(biggest / per_worker_capacity(hard)) + 1)
    server = sr.server(cs.server, cs.server_ip, workers=srv_workers)
    port = server.ports[0]
    sr.layout = {
        "client": {"netns": cs.client.name, "ip": cs.client_ip},
        "server": {"netns": cs.server.name, "ip": cs.server_ip, "port": port},
    }
    sr.settings = {"port_ranges": [f"{LOW}-{t}" for t in TOPS], "client_nofile": hard}
    sr.watch("server", cs.server)
    sr.headline = "maxuserport-5000"
    target = (Target(cs.server_ip, port, port),)

    def set_range(top: int) -> None:
        topo.sysctl(cs.client, "net.ipv4.ip_local_port_range", f"{LOW} {top}")

    def step(name: str, title: str, top: int, *, mode: str = "kernel", workers: int = 1) -> Step:
        ports = ex.range_size(LOW, top)
        ask = min(ports + 64, workers * per_worker_capacity(hard) + 64)
        plan = OpenPlan(target, count=ask, workers=workers, timeout_s=5.0, bind_mode=mode)
        pred = sr.predict(
            cs.client,
            None,
            cs.server,
            None,
            bind="explicit" if mode == "explicit" else "none",
            client_processes=workers,
            server_processes=srv_workers,
        )
        return sr.ramp(
            name, title, [Launch(cs.client, plan)], prediction=pred, max_s=120.0, settle="all"
        )

    # 1. the article's range, the OS picks the port
    top = TOPS[0]
    s1 = step(
        "maxuserport-5000",
        f"ip_local_port_range {LOW}-{top} ({ex.range_size(LOW, top):,} ports) plays Windows' "
        "MaxUserPort default (the article's 1024-5000), connect() picks the port",
        top,
    )
    view = server_view(sr, s1, cs.client_ip, port)
    port_ceiling(sr, s1, view, LOW, top)
    sr.release(s1)

    # 2. the same range, every port bound by conncap: the article's 3,977
    s2 = step(
        "maxuserport-5000-explicit",
        f"ports {LOW}-{top}, conncap binds every port itself",
        top,
        mode="explicit",
    )
    sr.check(
        ex.equal(
            "every port of the range is used",
            ex.range_size(LOW, top),
            s2.held,
            unit="connections",
            step=s2.name,
        )
    )
    sr.check(ex.same("the ceiling is the ports", "ephemeral-ports", s2.cause, step=s2.name))
    sr.release(s2)

    # 3. MaxUserPort=10000
    top = TOPS[1]
    set_range(top)
    s3 = step(
        "maxuserport-10000",
        f"ip_local_port_range {LOW}-{top} ({ex.range_size(LOW, top):,}), as MaxUserPort=10000; "
        "applies to the next connect(), no reboot",
        top,
    )
    view = server_view(sr, s3, cs.client_ip, port)
    port_ceiling(sr, s3, view, LOW, top)
    sr.release(s3)

    # 4. MaxUserPort=65535, one process: the next limit
    top = TOPS[2]
    set_range(top)
    s4 = step(
        "maxuserport-65535",
        f"ip_local_port_range {LOW}-{top} ({full_ports:,}), as MaxUserPort=65534; one client "
        "process like the article's: the next limit",
        top,
    )
    descriptor_ceiling(sr, s4, hard, cs.client)
    server_view(sr, s4, cs.client_ip, port)
    sr.release(s4)
    sr.story = story(s1, s3, s4)

    if sr.small:
        sr.note(
            f"the full scale also spreads {LOW}-{top} over several client processes, where "
            f"the ports bind again at {ex.connect_ports(LOW, top)[1]:,}"
        )
        return
    # 5. enough processes: the ports bind again
    workers = math.ceil(full_ports / per_worker_capacity(hard)) + 1
    # Each process binds the ports of its own slice of the range: several processes that
    # all let connect() search a nearly full 64k range slow to a few hundred connects/s.
    s5 = step(
        "maxuserport-65535-spread",
        f"ports {LOW}-{top} over {workers} client processes, each binding its slice of "
        "the range: the ports bind again",
        top,
        workers=workers,
        mode="explicit",
    )
    view = server_view(sr, s5, cs.client_ip, port)
    port_ceiling(sr, s5, view, LOW, top)
    sr.release(s5)


def story(first: Step, raised: Step, last: Step) -> list[str]:
    """The article's story in four sentences: setting, prediction, measured, what changed."""

    def said(s: Step) -> str:
        p = s.prediction
        return f"predicted {ex.n(p.count)} ({p.cause})" if p.count is not None else "no prediction"

    return [
        f"Setting: the client's ip_local_port_range {LOW}-{TOPS[0]} plays Windows' MaxUserPort "
        "default, the range the article's client had; one client, one server ip:port.",
        f"Prediction and measurement: {said(first)}; the client held {first.held:,}, then "
        "connect() failed with EADDRNOTAVAIL, the error Windows calls WSAEADDRINUSE (10048): "
        "the ports ran out, not the server.",
        f"What changed: raising the range as the article raised MaxUserPort (to {TOPS[1]}) "
        f"moved the ceiling to {raised.held:,} ({said(raised)}); with {LOW}-{TOPS[2]} the "
        f"next limit was the process's descriptors, EMFILE at {last.held:,} ({said(last)}): "
        'the article\'s "nearly 20 thousand".',
        "The server held every connection on one port, telling clients apart by (source IP, "
        "source port): ports bound the client, never the server.",
    ]


def ex_nofile() -> int:
    """The descriptor limit each client worker runs with (the hard limit, like a program
    that raises its own soft limit)."""
    from conncap.scenarios.isolated import nofile_hard

    return nofile_hard()


def port_ceiling(sr: ScenarioRun, s: Step, view: PeerView, lo: int, hi: int) -> None:
    """The client stopped with EADDRNOTAVAIL once connect() had used the range: every port,
    or every port but one end of an odd-sized range (which ``ss`` at the server shows)."""
    fewest, most = ex.connect_ports(lo, hi)
    misses = ex.odd_range_misses(lo, hi)
    unused = view.unused(lo, hi)
    outside = view.connections - sum(1 for p in view.peer_ports if lo <= p <= hi)
    ok = (
        fewest <= s.held <= most
        and view.distinct_peer_ports == s.held
        and outside == 0
        and set(unused) <= misses
        and len(unused) <= most - fewest
    )
    if fewest == most:
        expected = f"{most:,}: every port of {lo}-{hi}"
    else:
        ends = " or ".join(str(p) for p in sorted(misses))
        expected = (
            f"{most:,}: every port of {lo}-{hi}, or {fewest:,} without {ends} "
            "(odd-sized range: connect() reaches one end from one start offset only)"
        )
    gap = f", unused: {', '.join(map(str, unused[:5]))}" if unused else ", none unused"
    measured = f"{s.held:,} from {view.distinct_peer_ports:,} ports of {lo}-{hi}{gap}"
    if outside:
        measured += f", {outside:,} from outside the range"
    sr.check(ex.holds("the client uses up its port range", ok, expected, measured, step=s.name))
    sr.check(
        ex.same(
            "then fails with EADDRNOTAVAIL (the article's WSAEADDRINUSE, 10048)",
            "EADDRNOTAVAIL",
            s.errno,
            step=s.name,
        )
    )
    sr.check(ex.same("named ephemeral-ports", "ephemeral-ports", s.cause, step=s.name))
    sr.check(ex.model_note(s.prediction.count, s.prediction.cause, s.held, step=s.name))


def descriptor_ceiling(sr: ScenarioRun, s: Step, nofile: int, client: Host) -> None:
    """The one client process stopped with its descriptor table full (EMFILE)."""
    sr.check(ex.same("the next limit is descriptors", "file-descriptors", s.cause, step=s.name))
    sr.check(ex.same("with EMFILE", "EMFILE", s.errno, step=s.name))
    from conncap.scenarios import observe

    tables = [
        t
        for p in (s.measured.pools if s.measured else [])
        for pid in p.pids()
        if (t := observe.fd_table(pid))
    ]
    if tables:
        t = tables[0]
        s.observed["client_fd_table"] = t.to_json()
        sr.check(
            ex.holds(
                "the client's descriptor table is full",
                t.open == nofile and t.sockets == s.held,
                f"{nofile:,} open of {nofile:,}, one per connection held",
                f"{t.open:,} open of {t.limit or 0:,}, {t.sockets:,} sockets, {s.held:,} held",
                step=s.name,
            )
        )
    sr.check(ex.model_note(s.prediction.count, s.prediction.cause, s.held, step=s.name))
    if s.held < 20000:
        sr.note(
            f"one process stopped at {s.held:,} connections: the article's author saw "
            "'nearly 20 thousand' after raising MaxUserPort, where the next limit bound"
        )


def server_view(sr: ScenarioRun, s: Step, client_ip: str, port: int) -> PeerView:
    """One server port; every connection told apart by its source port (``ss`` inside)."""
    view = sr.server_peers([port])
    s.observed["server_ss"] = view.to_json()
    sr.check(
        ex.same(
            "the server uses one port",
            {port},
            set(view.local_ports),
            step=s.name,
        )
    )
    sr.check(
        ex.same(
            "the server counts every connection from one source IP",
            {client_ip: s.held},
            dict(s.server.per_source_ip if s.server is not None else {}),
            step=s.name,
        )
    )
    sr.check(
        ex.equal(
            "distinct source ports at the server = connections held",
            s.held,
            view.distinct_peer_ports,
            step=s.name,
        )
    )
    return view
