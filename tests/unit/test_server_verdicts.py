"""The verdict against servers conncap does not own (issue 9), case by case from recorded facts:
no kernel, no socket. Each case is what the loop saw (client failures, how the server closed,
its words, lifetimes, ICMP, the server's side read on this host) and the ceiling it must give."""

from __future__ import annotations

import pytest
from result_docs import result_of

from conncap.analysis.closes import bucket_text, lifetime_summary, read_closes
from conncap.errors import UsageError
from conncap.measure import ClientStop, StepFacts, decide
from conncap.probes.target import (
    matching_rules,
    parse_limits_nofile,
    parse_proc_tcp,
    parse_ss_listen,
)
from conncap.result import (
    ServerCloses,
    ServerMessage,
    ServerProcess,
    TargetSide,
    from_json,
    to_json,
)


def hist(**buckets: int) -> tuple[int, ...]:
    """A lifetime histogram from {"b<k>": n}."""
    out = [0] * 24
    for k, n in buckets.items():
        out[int(k[1:])] = n
    return tuple(out)


def closes_stop() -> ClientStop:
    return ClientStop(
        errno="EOF", op="recv", evidence="the server closed 32 connections", cause="server-closed"
    )


def timeout_stop() -> ClientStop:
    return ClientStop(errno="ETIMEDOUT", op="timeout", evidence="32 attempts", cause="timeout")


LISTENING = TargetSide(
    host="127.0.0.1",
    port=6379,
    listening=True,
    processes=(ServerProcess(1234, "nginx", 40, 1024),),
    accept_queue=0,
    backlog=511,
    established=20,
    sources=("/proc/net/tcp",),
)


def facts(**kw: object) -> StepFacts:
    base: dict[str, object] = {"requested": 100, "client_held": 20, "server_held": None}
    base.update(kw)
    return StepFacts(**base)  # type: ignore[arg-type]


# ---- the server closed what it accepted ---------------------------------------------------------


@pytest.mark.parametrize("fin,rst", [(80, 0), (0, 80)])
def test_refused_with_a_message_fin_or_rst_same_verdict(fin: int, rst: int) -> None:
    said = ServerMessage("-ERR max number of clients reached\\r\\n", 80, 80)
    v = decide(
        facts(
            client_stops=[closes_stop()],
            closes=ServerCloses(fin=fin, rst=rst, lifetimes=hist(b0=80), messages=(said,)),
            target=LISTENING,
        )
    )
    assert (v.cause, v.side, v.certainty, v.count) == ("server-closed", "server", "certain", 20)
    assert '"-ERR max number of clients reached\\r\\n"' in (v.evidence or "")
    assert "read on this host" in (v.evidence or "")


def test_closed_at_once_without_a_word() -> None:
    v = decide(facts(client_held=16, closes=ServerCloses(fin=60, lifetimes=hist(b0=50, b3=10))))
    assert (v.reached, v.cause, v.side, v.certainty) == (True, "server-closed", "server", "certain")
    assert "right after accepting" in (v.evidence or "")


def test_closed_after_a_steady_lifetime_is_a_timeout_reading() -> None:
    c = ServerCloses(fin=90, lifetimes=hist(b11=50, b12=40, b13=2))
    v = decide(facts(client_held=10, client_stops=[closes_stop()], closes=c))
    assert (v.cause, v.certainty) == ("server-closed", "likely")
    assert "steady lifetime of 1.02 s-4.1 s" in (v.evidence or "")
    assert "idle or authentication timeout" in (v.evidence or "")


def test_spread_lifetimes_read_as_eviction() -> None:
    c = ServerCloses(rst=40, lifetimes=hist(b4=10, b7=10, b10=10, b13=10))
    reading = read_closes(c)
    assert reading is not None and reading.pattern == "eviction"
    assert reading.certainty == "likely"


def test_no_ceiling_when_nothing_was_refused() -> None:
    v = decide(facts(client_held=100, closes=None, target=None))
    assert not v.reached


def test_held_past_the_servers_side_counts_the_server() -> None:
    """A full accept queue: the client holds 120, the server's side of the port has 34."""
    t = TargetSide(
        host="127.0.0.1",
        port=7000,
        listening=True,
        processes=(ServerProcess(99, "python", 32, 32),),
        accept_queue=16,
        backlog=16,
        established=34,
    )
    v = decide(facts(requested=120, client_held=120, target=t))
    assert v.reached and v.count == 34
    assert (v.cause, v.side) == ("file-descriptors", "server")
    assert "python pid 99: 32 of 32 descriptors" in (v.evidence or "")
    assert "exist only at the client" in (v.evidence or "")


# ---- the server's side on this host ------------------------------------------------------------


def test_server_out_of_descriptors_names_the_process() -> None:
    t = TargetSide(
        host="127.0.0.1",
        port=80,
        listening=True,
        processes=(ServerProcess(1234, "nginx", 360, 360),),
        established=350,
    )
    v = decide(facts(client_held=350, client_stops=[timeout_stop()], target=t))
    assert (v.cause, v.side, v.certainty) == ("file-descriptors", "server", "certain")
    assert "nginx pid 1234: 360 of 360 descriptors" in (v.evidence or "")


def test_full_accept_queue_is_the_backlog() -> None:
    t = TargetSide(
        host="127.0.0.1", port=7000, listening=True, accept_queue=9, backlog=8, established=9
    )
    v = decide(
        facts(
            client_held=9,
            client_stops=[timeout_stop()],
            client_failures={"ETIMEDOUT": 91},
            target=t,
            counters={"listen_overflows": 300},
        )
    )
    assert (v.cause, v.side, v.certainty) == ("server-backlog", "server", "certain")
    assert "accept queue of 8" in (v.evidence or "")


# ---- firewalls, nothing listening, remote ------------------------------------------------------


def test_icmp_admin_prohibited_is_a_firewall_for_certain() -> None:
    v = decide(
        facts(
            client_held=0,
            client_stops=[ClientStop("EHOSTUNREACH", "connect", "32 attempts", "network")],
            client_failures={"EHOSTUNREACH": 50},
            closes=ServerCloses(icmp={"icmp 3/13": 50}),
        )
    )
    assert (v.cause, v.side, v.certainty) == ("firewall", "network", "certain")
    assert "administratively prohibited (icmp 3/13)" in (v.evidence or "")


@pytest.mark.parametrize("errno", ["ETIMEDOUT", "ECONNREFUSED"])
def test_drop_or_reset_with_a_matching_rule(errno: str) -> None:
    rule = "tcp dport 7000 drop"
    t = TargetSide(host="127.0.0.1", port=7000, listening=True, rules=(rule,), established=0)
    v = decide(
        facts(
            client_held=0,
            client_stops=[ClientStop(errno, "connect", "32 attempts", None)],
            client_failures={errno: 50},
            target=t,
        )
    )
    assert (v.cause, v.side, v.certainty) == ("firewall", "network", "certain")
    assert rule in (v.evidence or "")


def test_refused_while_a_server_listens_is_likely_a_reject() -> None:
    t = TargetSide(host="127.0.0.1", port=7000, listening=True, established=0)
    v = decide(
        facts(
            client_held=0,
            client_stops=[ClientStop("ECONNREFUSED", "connect", "32", None)],
            client_failures={"ECONNREFUSED": 50},
            target=t,
        )
    )
    assert (v.cause, v.certainty) == ("firewall", "likely")


def test_nothing_listening_is_certain_on_this_host_likely_remote() -> None:
    stop = ClientStop("ECONNREFUSED", "connect", "32", None)
    t = TargetSide(host="127.0.0.1", port=7000, listening=False, established=0)
    here = decide(
        facts(client_held=0, client_stops=[stop], client_failures={"ECONNREFUSED": 9}, target=t)
    )
    assert (here.cause, here.side, here.certainty) == ("server-refused", "server", "certain")
    assert "nothing listens on 127.0.0.1:7000" in (here.evidence or "")
    remote = decide(facts(client_held=0, client_stops=[stop], client_failures={"ECONNREFUSED": 9}))
    assert (remote.cause, remote.certainty) == ("server-refused", "likely")


def test_remote_timeouts_are_only_likely() -> None:
    v = decide(
        facts(client_held=5, client_stops=[timeout_stop()], client_failures={"ETIMEDOUT": 40})
    )
    assert (v.cause, v.side, v.certainty) == ("timeout", "network", "likely")


def test_eperm_at_connect_is_likely_a_local_filter() -> None:
    v = decide(
        facts(
            client_held=0,
            client_stops=[ClientStop("EPERM", "connect", "32", None)],
            client_failures={"EPERM": 32},
        )
    )
    assert (v.cause, v.certainty) == ("firewall", "likely")


# ---- the readers' pure parts ---------------------------------------------------------------------

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1B58 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0 4242 1
   1: 0100007F:1B58 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 0 1
   2: 0100007F:1B58 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 0 1
   3: 0100007F:1B58 0100007F:9C42 03 00000000:00000000 00:00000000 00000000     0        0 0 1
   4: 0100007F:9C40 0100007F:1B58 01 00000000:00000000 00:00000000 00000000     0        0 77 1
"""


def test_parse_proc_tcp_counts_the_ports_server_side() -> None:
    p = parse_proc_tcp(PROC_TCP, 7000)
    assert p.listeners == [("127.0.0.1", 4242, 9)]
    assert (p.established, p.syn_recv) == (2, 1)


def test_matching_rules_nft_and_iptables() -> None:
    nft = """table ip filter {
        chain INPUT {
                type filter hook input priority filter; policy accept;
                tcp dport 7000 counter packets 3 bytes 180 drop
                tcp dport { 22, 6000-7999 } reject with icmp admin-prohibited
                tcp dport 8080 accept
        }
}"""
    assert matching_rules(nft, 7000) == [
        "tcp dport 7000 drop",
        "tcp dport { 22, 6000-7999 } reject with icmp admin-prohibited",
    ]
    ipt = "-P INPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 7000 -j REJECT --reject-with tcp-reset\n"
    assert matching_rules(ipt, 7000) == [
        "-A INPUT -p tcp -m tcp --dport 7000 -j REJECT --reject-with tcp-reset"
    ]
    assert matching_rules(ipt, 7001) == []


def test_ss_and_limits() -> None:
    assert parse_ss_listen("LISTEN 9      8      127.0.0.1:7000      0.0.0.0:*\n") == (9, 8)
    limits = "Limit Soft Limit Hard Limit Units\nMax open files   360   4096   files\n"
    assert parse_limits_nofile(limits) == 360


def test_lifetime_words() -> None:
    assert bucket_text(0) == "under 1 ms"
    assert bucket_text(11, 12) == "1.02 s-4.1 s"
    assert lifetime_summary(hist(b0=3, b1=1)) == "4 closed after 75% under 1 ms, 25% 1 ms-2 ms"


def test_closes_target_and_certainty_round_trip() -> None:
    import dataclasses

    v = decide(
        facts(
            client_stops=[closes_stop()],
            closes=ServerCloses(fin=5, lifetimes=hist(b0=5)),
            target=LISTENING,
        )
    )
    r = dataclasses.replace(
        result_of(),
        ceiling=v.ceiling(),
        closes=ServerCloses(
            fin=5,
            rst=1,
            lifetimes=hist(b0=5, b2=1),
            messages=(ServerMessage("BUSY\\n", 6, 6), ServerMessage("", 1, 0)),
            icmp={"icmp 3/13": 2},
            unacked=3,
        ),
        target=LISTENING,
    )
    doc = to_json(r)
    ceiling = doc["ceiling"]
    assert isinstance(ceiling, dict) and ceiling["certainty"] == "certain"
    assert from_json(doc, source="test") == r
    likely = dataclasses.replace(r, ceiling=dataclasses.replace(r.ceiling, certainty="likely"))
    assert from_json(to_json(likely), source="test").ceiling.certainty == "likely"
    bad = {**doc, "ceiling": {**ceiling, "certainty": "sure"}}
    with pytest.raises(UsageError, match="certainty"):
        from_json(bad, source="test")


def test_explain_takes_pasted_messages() -> None:
    from conncap.catalogue import code_of_message

    assert code_of_message("connect: Cannot assign requested address") == "EADDRNOTAVAIL"
    assert code_of_message("Too many open files") == "EMFILE"
    assert code_of_message("read: Connection reset by peer") == "ECONNRESET"
    assert code_of_message("Connection refused") == "ECONNREFUSED"
    assert code_of_message("Connection timed out") == "ETIMEDOUT"
    assert code_of_message("EOF") == "server-closed"
    assert (
        code_of_message(
            "Only one usage of each socket address (protocol/network address/port) is "
            "normally permitted."
        )
        == "WSAEADDRINUSE"
    )
    assert (
        code_of_message(
            "An operation on a socket could not be performed because the system lacked "
            "sufficient buffer space or because a queue was full."
        )
        == "WSAENOBUFS"
    )
    assert code_of_message("something else") is None
