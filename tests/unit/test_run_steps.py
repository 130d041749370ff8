"""conncap.run.steps: the plan of each step, the model's word on it, and the comparison."""

from __future__ import annotations

import pytest

from conncap.catalogue import Cause
from conncap.engine.protocol import CLIENT_WORKER_FDS
from conncap.errors import UsageError
from conncap.limits import Fact, HostLimits
from conncap.run import steps as st


def limits(lo: int = 40000, hi: int = 40499, nofile: int = 20000) -> HostLimits:
    return HostLimits(
        os="linux",
        port_range=Fact.of((lo, hi), "test"),
        reserved_ports=Fact.of((), "test"),
        nofile_soft=Fact.of(1024, "test"),
        nofile_hard=Fact.of(nofile, "test"),
        mem_available=Fact.of(16 << 30, "test"),
    )


def test_source_addresses_count_up_from_the_host() -> None:
    assert st.source_addresses("127.0.0.1", 3) == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert st.source_addresses("127.0.0.254", 3)[-1] == "127.0.1.0"


def test_source_addresses_refuse_what_loopback_cannot_give() -> None:
    with pytest.raises(UsageError, match="::1"):
        st.source_addresses("::1", 2)
    assert st.source_addresses("::1", 1) == ("::1",)
    with pytest.raises(UsageError, match=r"127\.0\.0\.0/8"):
        st.source_addresses("127.255.255.250", 10)
    with pytest.raises(UsageError):
        st.source_addresses("127.0.0.1", 0)


def test_plan_steps_step1_is_one_pair_step2_the_cross_product() -> None:
    one, two = st.plan_steps("127.0.0.1", [61000, 61001, 61002], escalate=True, source_ips=2)
    assert one.ports == (61000,) and one.source_ips == ()
    assert two.ports == (61000, 61001, 61002)
    assert two.source_ips == ("127.0.0.1", "127.0.0.2")
    assert "2 source IPs × 3 server ports" in two.title
    only = st.plan_steps("127.0.0.1", [61000, 61001], escalate=False, source_ips=2)
    assert [s.name for s in only] == ["ports"]


def test_workers_for_adds_the_margin() -> None:
    assert st.workers_for(28232, 19968, 1.1) == 2
    assert st.workers_for(19968, 19968, 1.0) == 1
    assert st.workers_for(19969, 19968, 1.0) == 2
    assert st.workers_for(0, 19968, 1.1) == 1


def test_auto_fanout_keeps_new_pools_at_most_half_full() -> None:
    # 100,000 on a default range: step 1 takes 28,232; 71,768 over n*n-1 pools of 14,116
    assert st.auto_fanout(100_000, 28_232) == 3
    assert st.auto_fanout(40_000, 28_232) == 2
    assert st.auto_fanout(1_500, 500) == 3
    assert st.auto_fanout(10, 28_232) == 2  # nothing left for step 2: the smallest fan-out
    assert st.auto_fanout(10**9, 100) == st.MAX_AUTO_FANOUT
    assert st.auto_fanout(5000, None) == 2


def test_step1_prediction_is_the_port_range_and_one_process_hits_descriptors() -> None:
    lim = limits(32768, 60999)
    spec = st.plan_steps("127.0.0.1", [61000], escalate=False, source_ips=1)[0]
    pred = st.predict_step(lim, st.model_plan(spec, client_processes=2, server_processes=5))
    assert (pred.count, pred.cause) == (28232, Cause.EPHEMERAL_PORTS)
    assert "will stop at 28,232" in pred.line and "32768-60999" in pred.line
    assert pred.single_process is not None
    assert pred.single_process["count"] == 20000 - CLIENT_WORKER_FDS
    assert pred.single_process["binds_first"] is True


def test_listeners_in_the_range_lower_the_port_prediction() -> None:
    spec = st.plan_steps("127.0.0.1", [41000], escalate=False, source_ips=1)[0]
    plan = st.model_plan(spec, client_processes=1, server_processes=1, ports_in_use=3)
    assert st.predict_step(limits(), plan).count == 497


def test_step2_prediction_multiplies_the_pools() -> None:
    spec = st.plan_steps("127.0.0.1", [41000, 41001], escalate=True, source_ips=2)[1]
    plan = st.model_plan(spec, client_processes=2, server_processes=1)
    assert plan.bind == "bind-no-port"
    pred = st.predict_step(limits(), plan)
    assert (pred.count, pred.cause) == (2000, Cause.EPHEMERAL_PORTS)


def _pred(count: int | None, cause: str, estimate: bool = False) -> st.StepPrediction:
    return st.StepPrediction(
        doc={"count": count, "cause": cause, "estimate": estimate}, line="with ..."
    )


def test_compare_exact_port_ceiling_gets_a_tick() -> None:
    c = st.compare(
        _pred(28232, "ephemeral-ports"),
        reached=True,
        measured=28232,
        cause="ephemeral-ports",
        requested=100000,
        stop_reason="count",
    )
    assert c.text == "predicted 28,232, measured 28,232 ✓"
    assert c.exact and c.matches
    assert c.result().difference == 0


def test_compare_a_miss_gives_the_difference_and_why() -> None:
    c = st.compare(
        _pred(28232, "ephemeral-ports"),
        reached=True,
        measured=28229,
        cause="ephemeral-ports",
        requested=100000,
        stop_reason="count",
        reasons=["3 ports held by listening sockets"],
    )
    assert not c.matches
    assert "(-3)" in c.text and "3 ports held by listening sockets" in c.text
    assert "✓" not in c.text


def test_compare_another_cause_is_said_to_be_unforeseen() -> None:
    c = st.compare(
        _pred(28232, "ephemeral-ports"),
        reached=True,
        measured=19992,
        cause="file-descriptors",
        requested=100000,
        stop_reason="count",
    )
    assert not c.matches and "did not foresee" in c.text


def test_compare_reaching_the_count_is_below_the_ceiling() -> None:
    c = st.compare(
        _pred(112928, "ephemeral-ports"),
        reached=False,
        measured=100000,
        cause=None,
        requested=100000,
        stop_reason="count",
    )
    assert c.matches
    assert c.text == "reached the requested 100,000, below the predicted ceiling of 112,928 " + (
        "(ephemeral-ports)"
    )


def test_compare_an_estimate_matches_within_five_percent() -> None:
    near = st.compare(
        _pred(1_000_000, "memory", estimate=True),
        reached=True,
        measured=1_030_000,
        cause="memory",
        requested=2_000_000,
        stop_reason="count",
    )
    far = st.compare(
        _pred(1_000_000, "memory", estimate=True),
        reached=True,
        measured=700_000,
        cause="memory",
        requested=2_000_000,
        stop_reason="count",
    )
    assert near.matches and "✓" in near.text and not near.exact
    assert not far.matches and "-30.0%" in far.text
