"""conncap.doctor pools, verdict, render and the watch loop on synthetic readings: no sockets,
no /proc."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from doctor_bytes import AF4, ESTABLISHED, LISTEN, TIME_WAIT, counts, msg

from conncap.doctor.live import watch
from conncap.doctor.pools import (
    sustainable_churn_rate,
    time_wait_churn_rate,
    tw_reuse_applies,
)
from conncap.doctor.reading import Conntrack, Counters, Descriptors, ProcessFds, Reading
from conncap.doctor.render import SCHEMA, renderables, to_json
from conncap.doctor.sockdiag import SocketCounts
from conncap.doctor.verdict import Report, analyse
from conncap.limits import Fact, HostLimits, SockStat

RANGE = (40000, 40099)
NO_CONNTRACK = Conntrack(None, None)


def limits(**over: Any) -> HostLimits:
    base = HostLimits(
        os="linux",
        port_range=Fact.of(RANGE, "sysctl net.ipv4.ip_local_port_range"),
        reserved_ports=Fact.of((), "sysctl net.ipv4.ip_local_reserved_ports"),
        tcp_tw_reuse=Fact.of(0, "sysctl net.ipv4.tcp_tw_reuse"),
        files_open=Fact.of(1_000, "/proc/sys/fs/file-nr"),
        files_max=Fact.of(1_000_000, "sysctl fs.file-max"),
        tcp_mem=Fact.of((4096 * 100, 4096 * 200, 4096 * 300), "sysctl net.ipv4.tcp_mem"),
        sockstat=Fact.of(SockStat(0, 0, 0, 0, 3, 0), "/proc/net/sockstat"),
        extra={"page_size": Fact.of(4096, "sysconf")},
    )
    return replace(base, **over)


def reading(
    sockets: SocketCounts | None = None,
    *,
    procs: tuple[ProcessFds, ...] = (),
    host: HostLimits | None = None,
    conntrack: Conntrack = NO_CONNTRACK,
    baseline: Counters | None = None,
    now: Counters | None = None,
    taken_at: float = 1000.0,
) -> Reading:
    return Reading(
        taken_at=taken_at,
        os="linux",
        netns=None,
        limits=host or limits(),
        sockets=sockets if sockets is not None else counts([]),
        descriptors=Descriptors(procs, len(procs), 0, "host"),
        counters=now or Counters(at=10.0),
        baseline=baseline,
        conntrack=conntrack,
        tcp_mem_bytes=3 * 4096,
    )


def clients(n: int, tw: int = 0, dst: str = "10.0.5.1", dport: int = 443, first: int = 40000,
            src: str = "10.0.0.7") -> list[bytes]:  # fmt: skip
    return [
        msg(AF4, TIME_WAIT if i < tw else ESTABLISHED, src, first + i, dst, dport) for i in range(n)
    ]


# --- the churn model -------------------------------------------------------------------------


def test_churn_rates() -> None:
    assert time_wait_churn_rate(19_020) == pytest.approx(317.0)
    assert sustainable_churn_rate(28_232) == pytest.approx(470.53, abs=0.01)
    assert sustainable_churn_rate(28_232, 1.0) == 28_232
    assert sustainable_churn_rate(-5) == 0


def test_tw_reuse_scope() -> None:
    assert tw_reuse_applies(1, "10.0.0.7", "10.0.5.1") is True
    assert tw_reuse_applies(2, "127.0.0.1", "127.0.0.2") is True
    assert tw_reuse_applies(2, "10.0.0.7", "10.0.5.1") is False
    assert tw_reuse_applies(0, "127.0.0.1", "127.0.0.1") is False
    assert tw_reuse_applies(None, "127.0.0.1", "127.0.0.1") is None


# --- the verdict ------------------------------------------------------------------------------


def test_a_pool_at_90_percent_comes_first_with_the_fix() -> None:
    rows = clients(90, tw=10) + clients(30, dst="10.0.5.2")
    report = analyse(reading(counts(rows)))
    first = report.ceilings[0]
    assert (first.cause, first.side, first.subject) == (
        "ephemeral-ports", "client", "10.0.0.7 → 10.0.5.1:443",
    )  # fmt: skip
    assert (first.used, first.limit) == (90, 100)
    assert first.evidence.startswith("90 of 100 ports in use (90.0%), 10 of them TIME_WAIT")
    assert any("ip_local_port_range" in c for c in first.fix.commands)
    assert report.headline.startswith("nearest ceiling: ephemeral-ports (client) 10.0.0.7 →")
    assert [p.in_use for p in report.ports.pools] == [90, 30]  # type: ignore[union-attr]


def test_time_wait_dominating_is_cause_time_wait() -> None:
    report = analyse(reading(counts(clients(90, tw=80))))
    first = report.ceilings[0]
    assert first.cause == "time-wait" and first.used == 90
    assert "tcp_tw_reuse=1 would reuse them after 1 s" in first.evidence
    assert any("tcp_tw_reuse" in c for c in first.fix.commands)
    (tw,) = report.time_wait
    assert tw.churn_per_s == pytest.approx(80 / 60)
    assert tw.sustainable_per_s == pytest.approx(90 / 60)  # 100 ports less 10 open


def test_with_tw_reuse_on_time_wait_ports_do_not_bind() -> None:
    host = limits(tcp_tw_reuse=Fact.of(1, "sysctl net.ipv4.tcp_tw_reuse"))
    report = analyse(reading(counts(clients(90, tw=80)), host=host))
    pool = next(c for c in report.ceilings if c.subject == "10.0.0.7 → 10.0.5.1:443")
    assert pool.cause == "ephemeral-ports" and pool.used == 10
    assert "tcp_tw_reuse applies" in pool.evidence


def test_a_process_at_its_descriptor_limit_is_named() -> None:
    procs = (
        ProcessFds(4242, "nginx", 1020, 1024, 4096),
        ProcessFds(7, "sshd", 10, 1024, 4096),
        ProcessFds(8, "other-user", None, None, None),
    )
    report = analyse(reading(counts(clients(10)), procs=procs))
    first = report.ceilings[0]
    assert (first.cause, first.side, first.subject) == (
        "file-descriptors", "process", "nginx (pid 4242)",
    )  # fmt: skip
    assert (first.used, first.limit, first.details["pid"]) == (1020, 1024, 4242)
    assert "ulimit -n" in " ".join(first.fix.commands)
    assert all("other-user" not in c.subject for c in report.ceilings)  # unknown: not guessed


def test_a_full_accept_queue_and_overflow_rates() -> None:
    listener = msg(AF4, LISTEN, "0.0.0.0", 8080, "0.0.0.0", 0, rqueue=9, wqueue=8, inode=5)
    base = Counters(at=10.0, listen_overflows=100, listen_drops=100)
    now = Counters(at=12.0, listen_overflows=140, listen_drops=150)
    report = analyse(reading(counts([], [listener]), baseline=base, now=now))
    first = report.ceilings[0]
    assert (first.cause, first.side, first.used, first.limit) == ("server-backlog", "server", 8, 8)
    assert "(full: new SYNs are dropped)" in first.evidence
    assert report.rates.listen_overflows == 20 and report.rates.listen_drops == 25
    assert "ListenOverflows 20.0/s" in first.evidence


def test_conntrack_and_memory_and_the_file_table() -> None:
    host = limits(files_open=Fact.of(950_000, "/proc/sys/fs/file-nr"))
    ct = Conntrack(count=50, max=100)
    base = Counters(at=0.0, conntrack_insert_failed=0, conntrack_drop=0)
    now = Counters(at=10.0, conntrack_insert_failed=30, conntrack_drop=0)
    report = analyse(reading(host=host, conntrack=ct, baseline=base, now=now))
    causes = [c.cause for c in report.ceilings]
    assert causes == ["system-file-table", "conntrack", "memory"]
    conn = report.ceilings[1]
    assert "insert_failed 3.0/s (SNAT ports, not the table)" in conn.evidence
    assert report.ceilings[2].used == 3 * 4096 and report.ceilings[2].limit == 300 * 4096


def test_nothing_near_a_ceiling_says_so() -> None:
    report = analyse(reading(counts(clients(5))))
    assert report.headline.startswith("nothing near a ceiling: the fullest is ")
    assert not [c for c in report.nearest if not c.conditional]
    assert to_json(report)["verdict"]["near"] is False


def test_a_source_full_across_destinations_is_a_conditional_ceiling() -> None:
    rows = clients(40, dst="10.0.5.1") + clients(40, dst="10.0.5.2", first=40040)
    report = analyse(reading(counts(rows)))
    cond = [c for c in report.ceilings if c.conditional]
    assert len(cond) == 1 and (cond[0].used, cond[0].limit) == (80, 100)
    assert "IP_BIND_ADDRESS_NO_PORT" in cond[0].evidence
    assert report.headline.startswith("nothing near a ceiling")  # 40 % each with connect()


def test_unknown_facts_are_not_guessed() -> None:
    host = limits(port_range=Fact.unknown("sysctl net.ipv4.ip_local_port_range", "denied"))
    report = analyse(replace(reading(host=host), sockets=None, descriptors=None))
    assert report.ports is None
    doc = to_json(report)
    assert doc["ports"] is None and doc["sockets"] is None
    assert doc["descriptors"]["processes"] == []


def test_the_json_document_and_the_terminal_view() -> None:
    listener = msg(AF4, LISTEN, "0.0.0.0", 5000, "0.0.0.0", 0, rqueue=1, wqueue=8, inode=5)
    report = analyse(reading(counts(clients(90, tw=10), [listener])))
    doc = json.loads(json.dumps(to_json(report, top=3)))
    assert doc["schema"] == SCHEMA == "conncap.doctor/1"
    assert set(doc) >= {
        "os", "netns", "taken_at", "read_s", "verdict", "ceilings", "sockets", "ports",
        "time_wait", "descriptors", "listeners", "conntrack", "memory", "unknown",
    }  # fmt: skip
    pool = doc["ports"]["pools"][0]
    assert (pool["src"], pool["dst"], pool["dport"], pool["in_use"]) == (
        "10.0.0.7",
        "10.0.5.1",
        443,
        90,
    )
    assert doc["listeners"]["sockets"][0]["backlog"] == 8
    assert len(doc["ceilings"]) <= 3
    from rich.console import Console

    console = Console(width=100, record=True)
    for item in renderables(report):
        console.print(item)
    text = console.export_text()
    assert "10.0.0.7 → 10.0.5.1:443" in text and "90 of 100" in text


# --- watch ------------------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.shown: list[Report] = []
        self.closed: tuple[Report | None, bool] | None = None

    def show(self, report: Report) -> None:
        self.shown.append(report)

    def close(self, last: Report | None, interrupted: bool) -> None:
        self.closed = (last, interrupted)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _filling(clock: _Clock) -> Any:
    """Each reading: 20 more ports of one pool in use."""
    n = [0]

    def take(baseline: Counters | None) -> Reading:
        n[0] += 1
        return reading(counts(clients(20 * n[0])), taken_at=clock.t, now=Counters(at=clock.t),
                       baseline=baseline)  # fmt: skip

    return take


def test_watch_gives_rates_and_time_to_full_and_stops_at_count() -> None:
    clock, sink = _Clock(), _Sink()
    last, interrupted = watch(_filling(clock), [sink], interval_s=2.0, count=3,
                              sleep=clock.sleep, clock=clock)  # fmt: skip
    assert not interrupted and len(sink.shown) == 3 and sink.closed == (last, False)
    assert last is not None
    trend = last.trends[(4, "10.0.0.7", "10.0.5.1", 443)]
    assert trend.per_s == 10.0 and trend.seconds_to_full == 4.0  # 40 ports left at 10/s
    assert sink.shown[0].trends == {}
    assert to_json(last)["ports"]["pools"][0]["seconds_to_full"] == 4.0


def test_watch_stops_at_duration() -> None:
    clock, sink = _Clock(), _Sink()
    watch(_filling(clock), [sink], interval_s=1.0, duration_s=2.5, sleep=clock.sleep, clock=clock)
    assert len(sink.shown) == 3  # at 0, 1 and 2 s


def test_ctrl_c_ends_watch_with_the_last_reading() -> None:
    clock, sink = _Clock(), _Sink()
    calls = [0]
    take = _filling(clock)

    def sleep(s: float) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        clock.sleep(s)

    last, interrupted = watch(take, [sink], interval_s=1.0, sleep=sleep, clock=clock)
    assert interrupted and len(sink.shown) == 2 and sink.closed == (last, True)
