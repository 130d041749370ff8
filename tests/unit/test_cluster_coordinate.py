"""The cluster run's coordination without Ray: clock offsets, the barrier and common start,
merged timelines, a lost agent, the deadline and a stop, the result and its words."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from conncap import procfs
from conncap.cluster import ports as rp
from conncap.cluster.coordinate import (
    AgentLost,
    ClockSample,
    ClusterRun,
    Coordinator,
    NodeRef,
    NodeRun,
    Offset,
    estimate_offset,
    split_count,
)
from conncap.cluster.timeline import merge_timeline, total_series
from conncap.cluster.verdict import (
    cluster_ceiling,
    cluster_prediction,
    cluster_result,
    node_table,
    verdict_lines,
)
from conncap.result import Ceiling, Node, Prediction, from_json, to_json


class FakeClock:
    """The driver's clock: moves only when the coordinator sleeps (or a call takes time)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class FakeAgent:
    """One node: its clock is the driver's plus ``offset``; it ramps ``rate`` connections
    per second from the common start up to ``ceiling`` (then holds); ``die_at`` (driver
    time) makes every later call raise AgentLost."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        offset: float,
        ceiling: int,
        rate: float = 100.0,
        die_at: float | None = None,
        predicted: int | None = None,
    ) -> None:
        self.clock, self.offset, self.ceiling, self.rate = clock, offset, ceiling, rate
        self.die_at = die_at
        self.predicted = ceiling if predicted is None else predicted
        self.start_at: float | None = None  # agent clock
        self.samples: list[dict[str, Any]] = []
        self.stopped = False

    def now(self) -> float:
        return self.clock() + self.offset

    def _alive(self) -> None:
        if self.die_at is not None and self.clock() >= self.die_at:
            raise AgentLost("The actor died unexpectedly (node died)")

    def held(self) -> int:
        if self.start_at is None or self.now() < self.start_at:
            return 0
        return min(self.ceiling, int((self.now() - self.start_at) * self.rate))

    def info(self) -> dict[str, Any]:
        self._alive()
        return {
            "hostname": "fake",
            "share": self.ceiling + 10,
            "workers": 1,
            "limits": {"port_range": [40000, 40000 + self.ceiling - 1], "nofile": 1024},
            "ray_cost": {"listeners_in_range": 0},
            "prediction": {"count": self.predicted, "cause": "ephemeral-ports"},
        }

    def clock_(self) -> float:
        self._alive()
        return self.now()

    def start(self, at: float) -> bool:
        self._alive()
        self.start_at = at
        return True

    def poll(self, cursor: int) -> dict[str, Any]:
        self._alive()
        h = self.held()
        self.samples.append({"t_wall": self.now(), "held": h, "failures_by_cause": {}})
        return {
            "samples": self.samples[cursor:],
            "cursor": len(self.samples),
            "phase": "hold" if h >= self.ceiling else "ramp",
            "ramp_over": h >= self.ceiling,
            "final": None,
        }

    def stop(self, cursor: int, reason: str) -> dict[str, Any]:
        self._alive()
        self.stopped = True
        h = self.held()
        reached = h >= self.ceiling
        return {
            "samples": self.samples[cursor:],
            "cursor": len(self.samples),
            "final": {
                "held": h,
                "ceiling": {
                    "reached": reached,
                    "count": h if reached else None,
                    "cause": "ephemeral-ports" if reached else None,
                    "side": "client" if reached else None,
                    "errno": "EADDRNOTAVAIL" if reached else None,
                },
                "failures_by_cause": {"ephemeral-ports": 2} if reached else {},
                "stop_reason": reason,
            },
        }


class FakeAgents:
    def __init__(self, clock: FakeClock, agents: Mapping[str, FakeAgent], rtt: float = 0.002):
        self._clock, self.agents, self.rtt = clock, dict(agents), rtt
        self.nodes = [NodeRef(nid, f"10.0.0.{i + 1}") for i, nid in enumerate(self.agents)]
        self.calls: list[str] = []

    def call(
        self, method: str, args: Mapping[str, tuple[Any, ...]], timeout: float
    ) -> dict[str, Any]:
        self.calls.append(method)
        out: dict[str, Any] = {}
        for nid, a in args.items():
            agent = self.agents[nid]
            fn = agent.clock_ if method == "clock" else getattr(agent, method)
            self._clock.t += self.rtt / 2  # the request's way there
            try:
                out[nid] = fn(*a)
            except AgentLost as exc:
                out[nid] = exc
            self._clock.t += self.rtt / 2
        return out


def _coordinator(agents: dict[str, FakeAgent], clock: FakeClock, **kw: Any) -> Coordinator:
    return Coordinator(FakeAgents(clock, agents), clock=clock, sleep=clock.sleep, **kw)


# ---- clock offsets --------------------------------------------------------------------------


def test_offset_is_the_agent_clock_less_the_midpoint() -> None:
    s = ClockSample(t0=100.0, agent_t=105.01, t1=100.02)
    assert s.rtt == pytest.approx(0.02)
    assert s.offset == pytest.approx(5.0)
    assert Offset(5.0, 0.02).to_driver(205.0) == pytest.approx(200.0)
    assert Offset(5.0, 0.02).to_agent(200.0) == pytest.approx(205.0)


def test_the_round_trip_with_the_least_delay_wins() -> None:
    slow = ClockSample(0.0, 3.9, 1.0)  # asymmetric delay: 0.5 s off
    fast = ClockSample(2.0, 5.002, 2.004)
    got = estimate_offset([slow, fast])
    assert got.offset == pytest.approx(3.0)
    assert got.rtt == pytest.approx(0.004)
    with pytest.raises(ValueError):
        estimate_offset([])


def test_prepare_measures_each_agents_offset_and_start_is_given_on_its_clock() -> None:
    clock = FakeClock()
    agents = {
        "a": FakeAgent(clock, offset=0.0, ceiling=50),
        "b": FakeAgent(clock, offset=12.5, ceiling=80),
        "c": FakeAgent(clock, offset=-3.25, ceiling=120),
    }
    co = _coordinator(agents, clock)
    co.prepare()
    for nid, agent in agents.items():
        off = co.run.node(nid).offset
        assert off is not None
        assert off.offset == pytest.approx(agent.offset, abs=1e-9)
        assert off.rtt == pytest.approx(0.002)
    at = co.start()
    for agent in agents.values():
        assert agent.start_at == pytest.approx(at + agent.offset)


# ---- the whole run ---------------------------------------------------------------------------


def test_a_run_ends_when_every_ramp_is_over_and_merges_one_true_timeline() -> None:
    clock = FakeClock()
    agents = {
        "a": FakeAgent(clock, offset=0.0, ceiling=50),
        "b": FakeAgent(clock, offset=12.5, ceiling=80),
        "c": FakeAgent(clock, offset=-3.25, ceiling=120),
    }
    co = _coordinator(agents, clock, hold_s=1.0, deadline_s=30.0)
    run = co()
    assert run.stop_reason == "ramp-over"
    assert all(a.stopped for a in agents.values())
    merged = merge_timeline(run)
    assert [r["t"] for r in merged] == sorted(r["t"] for r in merged)
    # On the common time line node b's samples sit where the driver saw them, not 12.5 s on.
    assert max(r["t"] for r in merged) < 3.0
    b_rows = [r for r in merged if r["node"] == "b"]
    # 100 connections/s from the common start: held == 100 × t (to a sample's rounding)
    for r in b_rows:
        if 0 < r["held"] < 80:
            assert r["held"] == pytest.approx(100 * r["t"], abs=1.5)
    totals = total_series(merged)
    assert totals[-1].held == 250
    res = cluster_result(run, requested=280, address="10.0.0.1:6379", server_held=250)
    assert res.command == "open" and res.plan is not None
    assert res.plan["cluster"] == "10.0.0.1:6379" and res.plan["nodes"] == 3
    assert res.held_at_end == 250 and res.requested == 280
    assert res.prediction.count == 250 and res.prediction.cause == "ephemeral-ports"
    assert res.server is not None and res.server.held == 250
    assert [n.held for n in res.nodes] == [50, 80, 120]
    assert all(n.matches_prediction for n in res.nodes)
    assert res.first_stop is not None and res.first_stop.node_id == "a"
    assert [n.node_id for n in res.nodes if n.lost] == []
    # the cluster's ceiling: the verdict every node reached, at what the cluster held
    c = res.ceiling
    assert c.reached and (c.count, c.cause, c.side, c.errno) == (
        250, "ephemeral-ports", "client", "EADDRNOTAVAIL"
    )  # fmt: skip
    assert c.knob is not None  # the catalogue's, through Ceiling.reached_at
    assert [n.ceiling.count for n in res.nodes] == [50, 80, 120]
    # the result's timeline is the cluster's total; each node keeps its own
    assert res.timeline == tuple(totals) and res.timeline[-1].held == 250
    assert res.established_peak == 250
    b = res.nodes[1]
    assert [s.held for s in b.timeline] == [r["held"] for r in b_rows]
    assert [s.t for s in b.timeline] == [r["t"] for r in b_rows]
    assert res.failures_by_cause == {"ephemeral-ports": 6}
    words = "\n".join(verdict_lines(res))
    assert "first to stop: node a (10.0.0.1)" in words
    assert "the server holds 250" in words
    assert res.summary == tuple(verdict_lines(res))
    # the one typed result model: it round-trips through its codec
    doc = json.loads(json.dumps(to_json(res)))
    assert doc["schema"] == "conncap.result/2" and len(doc["nodes"]) == 3
    assert from_json(doc, source="cluster.json") == res


def test_a_lost_agent_is_reported_and_the_rest_finish() -> None:
    clock = FakeClock()
    agents = {
        "a": FakeAgent(clock, offset=0.0, ceiling=50),
        "b": FakeAgent(clock, offset=0.0, ceiling=400, die_at=clock() + 2.0),
        "c": FakeAgent(clock, offset=0.0, ceiling=120),
    }
    run = _coordinator(agents, clock, deadline_s=30.0)()
    assert run.stop_reason == "ramp-over"
    b = run.node("b")
    assert b.lost and "node died" in (b.lost_why or "")
    assert agents["a"].stopped and agents["c"].stopped and not agents["b"].stopped
    res = cluster_result(run, requested=600, address="x")
    assert [n.node_id for n in res.nodes if n.lost] == ["b"]
    assert res.held_at_end == 170  # a lost node's connections are not counted as held
    lost = next(n for n in res.nodes if n.node_id == "b")
    assert lost.lost and lost.held > 0  # its last sample is kept
    assert lost.timeline and lost.timeline[-1].held == lost.held
    assert "LOST" in "\n".join(verdict_lines(res))
    assert res.error is None  # the others finished
    assert res.ceiling.reached and res.ceiling.count == 170


def test_an_agent_lost_before_the_start_is_left_out() -> None:
    clock = FakeClock()
    agents = {
        "a": FakeAgent(clock, offset=0.0, ceiling=50),
        "b": FakeAgent(clock, offset=0.0, ceiling=80, die_at=clock()),
    }
    co = _coordinator(agents, clock)
    run = co()
    assert run.node("b").lost and run.node("b").offset is None
    assert agents["b"].start_at is None
    assert run.node("a").final is not None
    rows = node_table(run)
    assert rows[2][6] == "lost"


def test_the_deadline_stops_every_agent() -> None:
    clock = FakeClock()
    agents = {
        "a": FakeAgent(clock, offset=0.0, ceiling=50),
        "b": FakeAgent(clock, offset=0.0, ceiling=10_000, rate=10.0),
    }
    run = _coordinator(agents, clock, deadline_s=5.0)()
    assert run.stop_reason == "max-duration"
    assert all(a.stopped for a in agents.values())
    assert run.start_at is not None and run.ended_at is not None
    assert 5.0 <= run.ended_at - run.start_at < 6.0
    res = cluster_result(run, requested=20_000, address="x")
    b = next(n for n in res.nodes if n.node_id == "b")
    assert not b.ceiling.reached and b.matches_prediction is None
    assert b.ceiling == Ceiling.none()
    # one node reached a ceiling: the cluster's is that node's verdict
    assert res.ceiling.reached and res.ceiling.cause == "ephemeral-ports"


def test_a_stop_ends_the_run_as_interrupted_and_still_stops_the_agents() -> None:
    clock = FakeClock()
    agents = {"a": FakeAgent(clock, offset=0.0, ceiling=10_000, rate=10.0)}
    stop = threading.Event()
    polls = [0]

    def on_poll(_run: ClusterRun) -> None:
        polls[0] += 1
        if polls[0] == 3:
            stop.set()

    run = _coordinator(agents, clock, stop=stop, on_poll=on_poll, deadline_s=60.0)()
    assert run.stop_reason == "interrupted"
    assert agents["a"].stopped


def test_the_barrier_comes_before_the_start() -> None:
    clock = FakeClock()
    agents = {"a": FakeAgent(clock, offset=0.0, ceiling=5)}
    fakes = FakeAgents(clock, agents)
    seen: list[list[str]] = []
    co = Coordinator(
        fakes, clock=clock, sleep=clock.sleep, on_ready=lambda _r: seen.append(list(fakes.calls))
    )
    co()
    assert seen == [["info", "clock", "clock", "clock", "clock", "clock"]]
    assert fakes.calls.index("start") > fakes.calls.index("info")


# ---- pure helpers -----------------------------------------------------------------------------


def test_split_count_is_exact() -> None:
    assert split_count(370, 3) == [124, 123, 123]
    assert sum(split_count(1_000_003, 7)) == 1_000_003
    with pytest.raises(ValueError):
        split_count(5, 0)


def test_total_series_keeps_each_nodes_last_count() -> None:
    merged = [
        {"t": 0.0, "node": "a", "held": 1},
        {"t": 0.0, "node": "b", "held": 2},
        {"t": 0.5, "node": "a", "held": 10},
        {"t": 1.0, "node": "b", "held": 20},
    ]
    assert [(s.t, s.held) for s in total_series(merged)] == [
        (0.0, 3),
        (0.5, 12),
        (1.0, 30),
    ]


def test_samples_without_a_wall_time_are_left_out() -> None:
    nr = NodeRun(NodeRef("a", "x"), offset=Offset(1.0, 0.0))
    nr.samples = [{"held": 1}, {"t_wall": 11.0, "held": 2}]
    run = ClusterRun([nr], start_at=5.0)
    assert merge_timeline(run) == [{"held": 2, "t": 5.0, "node": "a"}]


def test_ray_ports_lie_outside_the_scenarios_and_linuxs_default_ranges() -> None:
    assert rp.clashes((32768, 60999)) == []
    assert rp.clashes((40000, 40049)) == []
    assert rp.clashes((20000, 20500)) != []
    argv = rp.ray_start_argv("ray", node_ip="10.0.0.1", head_address=None, temp_dir="/tmp/x")
    for flag in [*rp.NODE_PORTS, "--port"]:
        assert flag in argv
    node = rp.ray_start_argv("ray", node_ip="10.0.0.2", head_address="10.0.0.1:20379")
    assert "--head" not in node and "--port" not in node


def test_listening_ports_from_proc_net_tcp() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 00000000:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   1: 020012C6:9C40 010012C6:4F1B 01 00000000:00000000 00:00000000 00000000     0\n"
    )
    assert procfs.parse_listen_ports(text) == frozenset({0x4E21})


def _node(nid: str, cause: str, errno: str, at: float, held: int) -> Node:
    return Node(
        node_id=nid,
        address=f"10.0.0.{nid}",
        held=held,
        prediction=Prediction(count=held, cause=cause),
        ceiling=Ceiling.reached_at(count=held, cause=cause, side="client", errno=errno),
        stopped_at_s=at,
    )


def test_the_clusters_ceiling_is_the_verdict_most_nodes_reached() -> None:
    fds = _node("1", "file-descriptors", "EMFILE", 0.5, 10)  # first to stop, but alone
    ports = [_node("2", "ephemeral-ports", "EADDRNOTAVAIL", 1.0, 20)]
    ports.append(_node("3", "ephemeral-ports", "EADDRNOTAVAIL", 2.0, 30))
    c = cluster_ceiling([fds, *ports], 60)
    assert (c.cause, c.errno, c.count) == ("ephemeral-ports", "EADDRNOTAVAIL", 60)
    assert c.evidence is not None and "3 of 3 nodes reached a ceiling" in c.evidence
    # a tie goes to the verdict of the node that stopped first
    assert cluster_ceiling([fds, ports[0]], 30).cause == "file-descriptors"
    assert cluster_ceiling([], 0) == Ceiling.none()
    assert cluster_prediction([fds, *ports]).count == 60
    assert cluster_prediction([fds, *ports]).cause is None  # the nodes' causes differ
