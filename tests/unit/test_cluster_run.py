"""``run --target --cluster`` without Ray: each node's step plan (its share, the run's steps,
step 2's addresses found on the node), the node's RunConfig, the run result assembled from
fake agents' own run documents, and the flags that do not go with --cluster."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import pytest

from conncap.cluster import agent as agent_mod
from conncap.cluster.agent import run_config, step2_sources
from conncap.cluster.coordinate import AgentLost, Coordinator, NodeRef
from conncap.cluster.driver import run_specs
from conncap.cluster.messages import RayNode, RunSpec
from conncap.cluster.runresult import run_cluster_result
from conncap.errors import UsageError
from conncap.result import (
    Ceiling,
    Comparison,
    Prediction,
    Result,
    Step,
    from_json,
    to_json,
)

# ---- each node's part -------------------------------------------------------------------------


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "target": "10.1.0.2:6379",
        "count": 1001,
        "client_workers": None,
        "rate": 300.0,
        "timeout": 2.0,
        "client_nofile": None,
        "max_duration": 60.0,
        "escalate": True,
        "source_ips": None,
        "plateau": 1.5,
        "memory_guard": 0.25,
    }
    base.update(kw)
    return argparse.Namespace(**base)


NODES = [
    RayNode(NodeID=f"n{i}", NodeManagerAddress=f"10.1.0.{10 + i}", Alive=True) for i in range(3)
]


def test_each_node_gets_its_share_and_the_runs_steps() -> None:
    specs = run_specs(_args(), NODES)
    assert [s["share"] for s in specs] == [334, 334, 333]
    assert all(s["targets"] == ["10.1.0.2:6379"] for s in specs)
    assert all(s["rate"] == pytest.approx(100.0) for s in specs)
    assert all(s["max_duration_s"] == 65.0 for s in specs)  # the agent's own deadline
    run = specs[0]["run"]
    assert run == {
        "host": "10.1.0.2",
        "port": 6379,
        "escalate": True,
        "source_ips": None,
        "plateau_s": 1.5,
        "memory_guard": 0.25,
    }
    assert run_specs(_args(client_workers=500), NODES)[2]["workers"] == "333"
    with pytest.raises(UsageError, match="less than the 3 nodes"):
        run_specs(_args(count=2), NODES)


def _run(**kw: Any) -> RunSpec:
    base: RunSpec = {
        "host": "10.1.0.2",
        "port": 6379,
        "escalate": True,
        "source_ips": None,
        "plateau_s": 1.5,
        "memory_guard": 0.25,
    }
    return RunSpec(**{**base, **kw})  # type: ignore[typeddict-item]


def test_step2_uses_the_nodes_own_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    import conncap.engine.plan as plan_mod

    found = ["10.1.0.10", "10.1.0.110", "10.1.0.111"]
    monkeypatch.setattr(plan_mod, "auto_sources", lambda targets, count, per_ip: list(found))
    assert step2_sources(_run(), 300, (40000, 40049)) == (tuple(found), None)
    assert step2_sources(_run(source_ips=2), 300, (40000, 40049)) == (tuple(found[:2]), None)
    # one address only: no new 4-tuple, so no step 2 (and a note says why)
    sources, why = step2_sources(_run(source_ips=1), 300, (40000, 40049))
    assert sources == () and why is not None and "needs a second one" in why
    # loopback: the run counts 127.0.0.x up itself; --no-escalate: no step 2 at all
    assert step2_sources(_run(host="127.0.0.1"), 300, (40000, 40049)) == (None, None)
    assert step2_sources(_run(escalate=False), 300, (40000, 40049)) == (None, None)


def test_the_nodes_run_config() -> None:
    spec = run_specs(_args(), NODES)[0]
    cfg = run_config(spec, ("10.1.0.10", "10.1.0.110"))
    assert (cfg.count, cfg.host, cfg.target_port) == (334, "10.1.0.2", 6379)
    assert cfg.sources == ("10.1.0.10", "10.1.0.110") and cfg.escalate
    assert cfg.max_duration == 65.0 and cfg.plateau_s == 1.5
    cfg.check()
    assert not run_config(spec, ()).escalate  # no second address: step 1 only
    assert run_config(spec, None).sources is None


# ---- the result from fake agents --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _step(name: str, t0: float, t1: float, predicted: int, measured: int, before: int) -> Step:
    ok = predicted == measured
    return Step(
        name=name,
        title=name,
        spec={"host": "10.1.0.2", "ports": [6379], "source_ips": []},
        t_start=t0,
        t_ramp_end=t1,
        t_end=t1 + 1.5,
        held_before=before,
        opened=measured - before,
        established_peak=measured,
        outcome="ramp-over",
        ceiling=Ceiling.reached_at(
            count=measured, cause="ephemeral-ports", side="client", errno="EADDRNOTAVAIL"
        ),
        prediction=Prediction(count=predicted, cause="ephemeral-ports", side="client"),
        comparison=Comparison(
            predicted=predicted,
            measured=measured,
            difference=measured - predicted,
            exact=True,
            matches=ok,
            text=f"predicted {predicted:,}, measured {measured:,} {'✓' if ok else '✗'}",
        ),
    )


class RunAgent:
    """A node running run's two steps: ``ports`` connections in step 1 (its port range),
    ``sources`` times that in step 2, at ``rate`` per second from the common start."""

    def __init__(self, clock: Clock, ports: int, sources: int, rate: float = 100.0) -> None:
        self.clock, self.ports, self.sources, self.rate = clock, ports, sources, rate
        self.start_at: float | None = None
        self.samples: list[dict[str, Any]] = []

    def held(self) -> int:
        if self.start_at is None:
            return 0
        return min(self.ports * self.sources, int((self.clock() - self.start_at) * self.rate))

    def info(self) -> dict[str, Any]:
        return {
            "share": 1000,
            "workers": 1,
            "limits": {"port_range": [40000, 40000 + self.ports - 1]},
            "prediction": {"count": self.ports, "cause": "ephemeral-ports", "side": "client"},
            "sources": [f"10.1.0.{i}" for i in range(self.sources)],
        }

    def clock_(self) -> float:
        return self.clock()

    def start(self, at: float) -> bool:
        self.start_at = at
        return True

    def _sample(self) -> None:
        t = self.clock() - (self.start_at or self.clock())  # the run starts at the start
        self.samples.append({"t_wall": self.clock(), "t": round(t, 3), "held": self.held()})

    def poll(self, cursor: int) -> dict[str, Any]:
        self._sample()
        over = self.held() >= self.ports * self.sources
        return {"samples": self.samples[cursor:], "cursor": len(self.samples), "ramp_over": over}

    def doc(self) -> Result:
        p, top = self.ports, self.ports * self.sources
        one = _step("ports", 0.0, p / self.rate, p, p, 0)
        two = _step("four-tuple", p / self.rate + 1.5, top / self.rate + 1.5, top, top, p)
        return Result(
            command="run",
            duration_s=10.0,
            requested=1000,
            established_peak=top,
            held_at_end=top,
            failures={"EADDRNOTAVAIL": 2},
            ceiling=two.ceiling,
            prediction=two.prediction or Prediction(),
            timeline=(),
            steps=(one, two),
            notes=("a node's note",),
        )

    def stop(self, cursor: int, reason: str) -> dict[str, Any]:
        self._sample()
        doc = self.doc()
        return {
            "samples": self.samples[cursor:],
            "cursor": len(self.samples),
            "final": {
                "held": self.held(),
                "ceiling": to_json(doc)["ceiling"],
                "stop_reason": "ceiling",
                "failures_by_cause": {"ephemeral-ports": 2},
                "run": {**to_json(doc), "timeline": []},
            },
        }


class Agents:
    def __init__(self, clock: Clock, agents: Mapping[str, RunAgent]) -> None:
        self.clock, self.agents = clock, dict(agents)
        self.nodes = [NodeRef(nid, f"10.1.0.{10 + i}") for i, nid in enumerate(self.agents)]

    def call(
        self, method: str, args: Mapping[str, tuple[Any, ...]], timeout: float
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for nid, a in args.items():
            fn = getattr(self.agents[nid], "clock_" if method == "clock" else method)
            self.clock.t += 0.001
            out[nid] = fn(*a)
        return out


def _cluster(agents: dict[str, RunAgent], clock: Clock) -> Any:
    co = Coordinator(
        Agents(clock, agents), clock=clock, sleep=clock.sleep, hold_s=1.0, deadline_s=60.0
    )
    return co()


def test_the_run_result_has_the_clusters_steps_each_the_nodes_sum() -> None:
    clock = Clock()
    run = _cluster(
        {"a": RunAgent(clock, 50, 2), "b": RunAgent(clock, 80, 2), "c": RunAgent(clock, 120, 2)},
        clock,
    )
    res = run_cluster_result(
        run,
        requested=1000,
        address="10.1.0.10:20379",
        plan={"target": "10.1.0.2:6379"},
        config={"count": 1000},
    )
    assert res.command == "run" and [s.name for s in res.steps] == ["ports", "four-tuple"]
    one, two = res.steps
    assert one.prediction is not None and one.prediction.count == 250
    assert one.held == 250 and one.ceiling.count == 250
    assert one.ceiling.cause == "ephemeral-ports" and one.comparison is not None
    assert one.comparison.matches and one.comparison.text.endswith("measured 250 ✓")
    assert len(one.comparison.reasons) == 3
    assert one.comparison.reasons[0] == "10.1.0.10: predicted 50, measured 50 ✓"
    assert two.held == 500 and two.held_before == 250 and two.opened == 250
    assert res.prediction.count == 500 and res.held_at_end == 500
    # each node's prediction and verdict are its own run's (its last step's)
    assert [n.prediction.count for n in res.nodes] == [100, 160, 240]
    assert all(n.matches_prediction for n in res.nodes)
    # times on the cluster's time line; step 2 after step 1
    assert one.t_start == pytest.approx(0.0, abs=0.05)
    assert two.t_start > one.t_start and (two.t_ramp_end or 0) > (one.t_ramp_end or 0)
    assert res.first_stop is not None and res.first_stop.node_id == "a"
    words = "\n".join(res.summary)
    assert "step 1 (ports" in words and "  10.1.0.11: predicted 80, measured 80 ✓" in words
    assert "first to stop: node a" in words
    assert "10.1.0.10: a node's note" in res.notes
    assert res.config == {"count": 1000}
    doc = json.loads(json.dumps(to_json(res)))
    assert from_json(doc, source="run-cluster.json") == res
    from conncap import report

    html = report.render(res)  # the per-node table and the steps
    assert "10.1.0.12" in html and "four-tuple" in html


def test_a_node_off_its_prediction_makes_the_step_a_miss() -> None:
    clock = Clock()
    odd = RunAgent(clock, 80, 2)
    real_doc = odd.doc

    def short() -> Result:
        d = real_doc()
        one = d.steps[0]
        assert one.comparison is not None
        miss = Comparison(
            predicted=80, measured=79, difference=-1, exact=True, matches=False,
            text="predicted 80, measured 79 (-1) ✗",
        )  # fmt: skip
        return Result(**{**_fields(d), "steps": (_replace(one, comparison=miss), d.steps[1])})

    odd.doc = short  # type: ignore[method-assign]
    run = _cluster({"a": RunAgent(clock, 50, 2), "b": odd}, clock)
    res = run_cluster_result(run, requested=500, address="x", plan={}, config={})
    one = res.steps[0]
    assert one.comparison is not None and not one.comparison.matches
    assert "(1 node(s) off)" in one.comparison.text and one.held == 129


def test_a_lost_node_without_a_run_document_keeps_its_open_verdict() -> None:
    clock = Clock()

    class Dies(RunAgent):
        def stop(self, cursor: int, reason: str) -> dict[str, Any]:
            raise AgentLost("node died")

    agents = {"a": RunAgent(clock, 50, 2), "b": Dies(clock, 80, 2)}
    co = Coordinator(
        _LossyAgents(clock, agents), clock=clock, sleep=clock.sleep, hold_s=0.5, deadline_s=60.0
    )
    res = run_cluster_result(co(), requested=500, address="x", plan={}, config={})
    lost = [n for n in res.nodes if n.lost]
    assert [n.node_id for n in lost] == ["b"] and res.steps[0].held == 50
    assert any("LOST" in line for line in res.summary)


class _LossyAgents(Agents):
    def call(
        self, method: str, args: Mapping[str, tuple[Any, ...]], timeout: float
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for nid, a in args.items():
            try:
                out.update(super().call(method, {nid: a}, timeout))
            except AgentLost as exc:
                out[nid] = exc
        return out


def _fields(r: Result) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}


def _replace(s: Step, **kw: Any) -> Step:
    import dataclasses

    return dataclasses.replace(s, **kw)


# ---- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--cluster", "auto"], "--cluster needs --target"),
        (["run", "--target", "10.0.0.1:80", "--cluster", "auto", "--isolated"], "--isolated"),
        (["run", "--nodes", "2"], "--nodes needs --cluster"),
        (["run", "--target", "10.0.0.1:80", "--cluster", "auto", "--events", "-"], "--events"),
        (["run", "--target", "10.0.0.1:80", "--cluster", "auto", "--ports", "3"], "--ports"),
    ],
)
def test_flags_that_do_not_go_with_cluster_are_one_line_and_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from conncap.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_the_agent_module_imports_no_ray() -> None:
    assert "ray" not in vars(agent_mod)
