"""``churn``: opening and closing connections at a rate, and what TIME_WAIT does to it.

A client port is busy while its connection is open and, when the client closed first with a
FIN, for the 60 s its socket stays in TIME_WAIT. With a narrow port range and
``tcp_tw_reuse`` 0 a modest rate runs out of ports at ports ÷ rate seconds: every port is
waiting out TIME_WAIT (``time-wait``). Each step checks the churn model's prediction
(:mod:`conncap.model.churn`) against the measurement:

1. ``fin-client-closes``: FIN closes by the client, tcp_tw_reuse 0: stops after as many
   connections as the range has ports, at the predicted time, cause ``time-wait``.
2. ``rst-closes``: the same with RST closes (SO_LINGER 0): no TIME_WAIT, never runs out.
3. ``server-closes``: the server closes first (``serve --close-after``): TIME_WAIT is on the
   server's side (at most one per client port) and the client's ports never run out.
4. ``loopback-tw-reuse``: client and server in one namespace, tcp_tw_reuse 2 (loopback
   only, Linux's default): connect() takes TIME_WAIT ports back after the reuse delay.

Then a note: what the founding article's Windows client (ports 1025-5000, TcpTimedWaitDelay
240 s) would sustain. Each step uses a client namespace of its own, so no step starts with
another's TIME_WAIT.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from conncap.engine import OpenPlan, Target
from conncap.model import churn as ch
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.step import Launch

if TYPE_CHECKING:
    from conncap.engine.results import ChurnRun

#: (client port range, new connections per second, seconds of opening) per scale.
SIZES = {
    "small": ((40000, 40199), 100.0, 3.0),
    "full": ((40000, 40999), 250.0, 6.0),
}
#: The loopback step's server port: outside the range, so every port of it is the client's.
LOOP_PORT = 1000
#: The founding article's Windows client: MaxUserPort 5000 (ports 1025-5000; Windows before
#: Vista) and, before Server 2003, a TcpTimedWaitDelay of 240 s.
ARTICLE_PORTS = (1025, 5000)
#: The first failure may come this much later (or earlier) than ports ÷ rate: the pool's
#: rate is paced per worker and the first handshakes take a moment to start.
TIME_SLACK = 0.3


def run(sr: ScenarioRun) -> None:
    (lo, hi), rate, duration = SIZES[sr.scale]
    ports = hi - lo + 1
    count = math.ceil(rate * duration)
    mc = sr.topo.many_clients(3, port_range=(lo, hi), client_extra={"net.ipv4.tcp_tw_reuse": 0})
    fin_ns, rst_ns, srv_first_ns = mc.clients
    server = sr.server(mc.server, mc.server_ip, workers=1)
    port = server.ports[0]
    sr.layout = {
        "clients": {h.name: ip for h, ip in zip(mc.clients, mc.client_ips, strict=True)},
        "server": {"netns": mc.server.name, "ip": mc.server_ip, "port": port},
    }
    sr.settings = {
        "port_range": f"{lo}-{hi}",
        "rate": rate,
        "duration_s": duration,
        "tcp_tw_reuse": "0 (steps 1-3), 2 (step 4, loopback)",
    }
    sr.headline = "fin-client-closes"

    def plan(ip: str, dport: int, *, lifetime: float = 0.0, close: str = "fin") -> OpenPlan:
        return OpenPlan(
            (Target(ip, dport, dport),),
            count=count,
            workers=1,
            rate=rate,
            timeout_s=3.0,
            lifetime=lifetime,
            close=close,
            duration_s=duration,
        )

    max_s = duration + 10.0

    # 1. FIN closes by the client, no reuse: TIME_WAIT takes every port.
    s1, c1 = sr.churn(
        "fin-client-closes",
        f"{rate:g}/s, FIN closes by the client, {ports:,} ports, tcp_tw_reuse 0",
        Launch(fin_ns, plan(mc.server_ip, port)),
        max_s=max_s,
    )
    t_exh = _num(c1["time_to_exhaustion_predicted_s"])
    sr.check(
        ex.holds(
            "the ports run out: one connection per port, then EADDRNOTAVAIL",
            c1["opened"] == ports and s1.errno == "EADDRNOTAVAIL",
            f"{ports:,} opened (the range), EADDRNOTAVAIL",
            f"{c1['opened']:,} opened, {s1.errno or 'no failure'}",
            step=s1.name,
        )
    )
    sr.check(
        ex.holds(
            "cause time-wait, as the model predicted",
            s1.cause == "time-wait" and c1["exhausts_predicted"] is True,
            f"time-wait (model: exhausts, {_rate(c1['sustainable_rate_predicted'])} sustainable)",
            f"{s1.cause}",
            step=s1.name,
        )
    )
    first = c1["first_failure_s"]
    sr.check(
        ex.holds(
            "at the predicted time",
            t_exh is not None
            and first is not None
            and abs(first - t_exh) <= TIME_SLACK * t_exh + 0.5,
            f"≈ {t_exh:.2f} s ({ports:,} ports ÷ {rate:g}/s)" if t_exh else "a time",
            f"first EADDRNOTAVAIL after {first:.2f} s" if first is not None else "no failure",
            step=s1.name,
        )
    )
    sr.check(
        ex.holds(
            "TIME_WAIT holds every port",
            c1["time_wait_peak"] >= ports,
            f"≥ {ports:,} sockets in TIME_WAIT in the client's namespace",
            f"{c1['time_wait_peak']:,}",
            step=s1.name,
        )
    )
    pred, meas = _num(c1["sustainable_rate_predicted"]), c1["sustainable_rate_measured"]
    sr.check(
        ex.holds(
            "sustainable rate: predicted vs measured",
            pred is not None and meas is not None and abs(meas - pred) <= 0.05 * pred + 0.1,
            f"{_rate(pred)} ({ports:,} ports ÷ 60 s TIME_WAIT)",
            f"{_rate(meas)} ({c1['opened']:,} opened before the ports ran out ÷ 60 s)",
            step=s1.name,
        )
    )

    # 2. RST closes: no TIME_WAIT at all.
    s2, c2 = sr.churn(
        "rst-closes",
        f"{rate:g}/s, RST closes (SO_LINGER 0), {ports:,} ports, tcp_tw_reuse 0",
        Launch(rst_ns, plan(mc.server_ip, port, close="rst")),
        max_s=max_s,
    )
    _keeps_going(sr, s2.name, c2, count, ports)
    sr.check(ex.equal("an RST leaves no TIME_WAIT", 0, c2["time_wait_peak"], step=s2.name))

    # 3. The server closes first: TIME_WAIT is the server's.
    tw_before = sr.time_wait_in(mc.server)
    server = sr.server(mc.server, mc.server_ip, workers=1, close_after=0.0, replace=True)
    s3, c3 = sr.churn(
        "server-closes",
        f"{rate:g}/s, the server closes at once, the client after 1 s, {ports:,} ports",
        Launch(srv_first_ns, plan(mc.server_ip, server.ports[0], lifetime=1.0)),
        closer="server",
        max_s=max_s + 1.0,
    )
    tw_server = sr.time_wait_in(mc.server)
    s3.observed["server_time_wait"] = tw_server
    _keeps_going(sr, s3.name, c3, count, ports)
    sr.check(
        ex.holds(
            "TIME_WAIT is on the server's side, at most one per client port",
            tw_server is not None
            and 0 < tw_server - (tw_before or 0) <= ports
            and c3["time_wait_peak"] <= ports // 10,
            f"server: 1 to {ports:,}; client: few (≤ {ports // 10:,})",
            f"server {ex.n(tw_server)}, client peak {c3['time_wait_peak']:,}; the server "
            f"closed {c3['closed_by_peer']:,} of {c3['opened']:,} first",
            step=s3.name,
        )
    )

    # 4. One namespace, loopback, tcp_tw_reuse 2: connect() reuses TIME_WAIT ports.
    loop = sr.topo.add_host("loop")
    sr.topo.sysctls_set(
        loop, {"net.ipv4.ip_local_port_range": f"{lo} {hi}", "net.ipv4.tcp_tw_reuse": 2}
    )
    sr.server(loop, "127.0.0.1", port=LOOP_PORT, workers=1, replace=True)
    sr.layout["loopback"] = {"netns": loop.name, "server": f"127.0.0.1:{LOOP_PORT}"}
    s4, c4 = sr.churn(
        "loopback-tw-reuse",
        f"{rate:g}/s, FIN closes by the client, client and server on loopback in one "
        f"namespace, {ports:,} ports, tcp_tw_reuse 2",
        Launch(loop, plan("127.0.0.1", LOOP_PORT)),
        max_s=max_s,
    )
    _keeps_going(sr, s4.name, c4, count, ports)
    sr.check(
        ex.holds(
            "TIME_WAIT sockets exist, and connect() reuses their ports",
            c4["time_wait_peak"] > 0 and c4["failed"] == 0,
            "TIME_WAIT > 0 and no failure",
            f"TIME_WAIT peak {c4['time_wait_peak']:,}, {c4['failed']:,} failures",
            step=s4.name,
        )
    )

    # 5. The founding article's Windows client, from the model alone.
    a_lo, a_hi = ARTICLE_PORTS
    a_ports = a_hi - a_lo + 1
    old = ch.WINDOWS_OLD_TIME_WAIT_S
    sr.check(
        ex.note(
            "the article's Windows client (model, not measured)",
            f"ports {a_lo}-{a_hi} ({a_ports:,}) ÷ TcpTimedWaitDelay {old:g} s = "
            f"{a_ports / old:,.1f} new connections/s sustainable; at 100/s its ports run "
            f"out after {a_ports / 100:,.1f} s (WSAEADDRINUSE 10048); the 120 s default of "
            f"later Windows doubles it to {a_ports / ch.WINDOWS_TIME_WAIT_S:,.1f}/s",
        )
    )


def _keeps_going(sr: ScenarioRun, step: str, c: ChurnRun, count: int, ports: int) -> None:
    """Every connection asked for (more than the range has ports) opened without a failure,
    as the model said beforehand."""
    sr.check(
        ex.holds(
            "never runs out, as the model predicted",
            c["opened"] == count and c["failed"] == 0 and c["exhausts_predicted"] is False,
            f"all {count:,} opened ({count / ports:.1f} × the range), no failure "
            f"(model: {_model_rate(c)})",
            f"{c['opened']:,} opened, {c['failed']:,} failures; achieved "
            f"{_rate(c['achieved_rate'])}",
            step=step,
        )
    )


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _rate(value: object) -> str:
    v = _num(value)
    return "unknown" if v is None else f"{v:,.1f}/s"


def _model_rate(c: ChurnRun) -> str:
    if c["predicted_unbounded"] is True:
        return "no port limit"
    return f"{_rate(c['sustainable_rate_predicted'])} sustainable"
