"""The one measurement loop with fake pools and server, and its pure verdict, case by case."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from conncap.errors import RunFailed
from conncap.measure import ClientStop, Launch, Measurement, StepFacts, decide

# --- the verdict -------------------------------------------------------------------------------


def test_a_client_port_ceiling_is_the_clients() -> None:
    v = decide(
        StepFacts(
            requested=1000,
            client_held=600,
            server_held=600,
            client_stops=[ClientStop("EADDRNOTAVAIL", "connect", "32 in a row")],
            client_failures={"EADDRNOTAVAIL": 64},
        )
    )
    assert (v.reached, v.count, v.cause, v.side) == (True, 600, "ephemeral-ports", "client")
    assert (v.errno, v.op, v.server_held) == ("EADDRNOTAVAIL", "connect", 600)
    assert v.evidence is not None and "32 in a row" in v.evidence


def test_a_ceiling_without_failures_counts_each_pools_errno_once() -> None:
    # explicit bind: every port of the slice bound, no connect() ever failed
    v = decide(
        StepFacts(
            requested=100,
            client_held=64,
            server_held=None,
            client_stops=[ClientStop("EADDRNOTAVAIL", "bind", "every port of the slice bound")],
        )
    )
    assert (v.reached, v.cause, v.side, v.op) == (True, "ephemeral-ports", "client", "bind")


def test_the_most_common_errno_of_the_pools_is_the_ceilings() -> None:
    stops = [
        ClientStop("EMFILE", "socket", "a"),
        ClientStop("EADDRNOTAVAIL", "connect", "b"),
        ClientStop("EMFILE", "socket", "c"),
    ]
    v = decide(
        StepFacts(requested=9, client_held=5, server_held=None, client_stops=stops,
                  client_failures={"EMFILE": 10, "EADDRNOTAVAIL": 1})
    )  # fmt: skip
    assert (v.errno, v.cause, v.side) == ("EMFILE", "file-descriptors", "client")


def test_a_server_out_of_descriptors_is_the_servers_ceiling() -> None:
    v = decide(
        StepFacts(
            requested=500,
            client_held=500,
            server_held=360,
            server_errors={"file-descriptors": 140},
            server_errnos={"EMFILE": 140},
        )
    )
    assert (v.reached, v.cause, v.side, v.errno, v.op) == (
        True,
        "file-descriptors",
        "server",
        "EMFILE",
        "accept",
    )
    assert v.count == 500 and v.server_held == 360


def test_a_server_holding_fewer_without_a_resource_error_is_no_ceiling() -> None:
    v = decide(StepFacts(requested=500, client_held=500, server_held=450))
    assert not v.reached and v.server_held == 450 and v.cause is None


def test_timeouts_with_listen_overflows_are_the_servers_backlog() -> None:
    v = decide(
        StepFacts(
            requested=500,
            client_held=200,
            server_held=72,
            client_stops=[ClientStop("ETIMEDOUT", "connect", "timed out")],
            client_failures={"ETIMEDOUT": 40},
            counters={"listen_overflows": 300},
        )
    )
    assert (v.cause, v.side) == ("server-backlog", "server")


def test_a_pool_that_saw_its_ports_in_time_wait_names_time_wait() -> None:
    v = decide(
        StepFacts(
            requested=1500,
            client_held=0,
            server_held=None,
            client_stops=[
                ClientStop("EADDRNOTAVAIL", "connect", "800 in TIME_WAIT", cause="time-wait")
            ],
            client_failures={"EADDRNOTAVAIL": 40},
        )
    )
    assert (v.cause, v.side, v.errno) == ("time-wait", "client", "EADDRNOTAVAIL")


def test_a_pool_cannot_turn_a_refusal_into_another_cause() -> None:
    v = decide(
        StepFacts(
            requested=10,
            client_held=0,
            server_held=None,
            client_stops=[ClientStop("ECONNREFUSED", "connect", "refused", cause="time-wait")],
            client_failures={"ECONNREFUSED": 32},
        )
    )
    assert v.cause == "server-refused"


def test_refused_connections_are_the_servers() -> None:
    v = decide(
        StepFacts(
            requested=10,
            client_held=0,
            server_held=None,
            client_stops=[ClientStop("ECONNREFUSED", "connect", "refused")],
            client_failures={"ECONNREFUSED": 32},
        )
    )
    assert (v.cause, v.side) == ("server-refused", "server")


def test_a_deadline_short_of_the_count_is_a_ceiling_only_when_asked() -> None:
    facts = StepFacts(
        requested=100,
        client_held=40,
        server_held=None,
        client_failures={"ETIMEDOUT": 5},
        stop_reason="max-duration",
    )
    assert not decide(facts).reached
    v = decide(facts, short_is_ceiling=True)
    assert v.reached and v.count == 40 and v.cause == "timeout"


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class PoolStats:
    held: int
    established: int
    attempts: int
    established_peak: int
    failures: dict[str, int] = field(default_factory=dict)
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    ceiling: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StopSeen:
    errno: str
    op: str
    evidence: str
    cause: str = "ephemeral-ports"


class FakePool:
    """Opens ``step`` connections per stats() up to ``limit``; past it, EADDRNOTAVAIL."""

    def __init__(self, count: int, limit: int, step: int = 50) -> None:
        self.count, self.limit, self.step = count, limit, step
        self.held = 0
        self.stopped = self.started = self.paused = False
        self.done = False

    def start(self) -> None:
        self.started = True

    def _stats(self) -> PoolStats:
        fails = {"EADDRNOTAVAIL": 3} if self.held >= self.limit < self.count else {}
        return PoolStats(
            held=0 if self.stopped else self.held,
            established=self.held,
            attempts=self.held + sum(fails.values()),
            established_peak=self.held,
            failures=fails,
            failures_by_cause={"ephemeral-ports": 3} if fails else {},
            ceiling=StopSeen("EADDRNOTAVAIL", "connect", "3 in a row") if fails else None,
        )

    def stats(self) -> PoolStats:
        if not (self.stopped or self.paused or self.done):
            self.held = min(self.held + self.step, self.count, self.limit)
        return self._stats()

    def ramp_over(self) -> bool:
        return self.held >= min(self.count, self.limit) and not self.done

    def pids(self) -> list[int]:
        return [] if self.stopped else [4242]

    def pause(self) -> None:
        self.paused = True

    def stop(self, timeout: float = 2.0) -> PoolStats:
        self.stopped = True
        return self._stats()


@dataclass
class Plan:
    count: int


@dataclass
class ServerStats:
    held: int
    accepted: int
    errors_by_cause: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


class FakeServer:
    def __init__(self, pools: list[FakePool], cap: int | None = None) -> None:
        self.pools, self.cap, self.stopped = pools, cap, False

    def stats(self) -> ServerStats:
        held = sum(p.held for p in self.pools if not p.stopped)
        if self.cap is not None and held > self.cap:
            over = held - self.cap
            return ServerStats(self.cap, self.cap, {"file-descriptors": over}, {"EMFILE": over})
        return ServerStats(held, held)

    def pids(self) -> list[int]:
        return [] if self.stopped else [4343]

    def stop(self, timeout: float = 2.0) -> ServerStats:
        self.stopped = True
        return ServerStats(0, 0)


def measurement(limit: int, **kw: Any) -> tuple[Measurement, list[FakePool]]:
    pools: list[FakePool] = []

    def make(la: Launch) -> FakePool:
        pools.append(FakePool(la.plan.count, limit))
        return pools[-1]

    m = Measurement(make_client=make, clock=Clock(), **kw)
    return m, pools


class Clock:
    """A clock that moves 0.1 s at every look: loops end without real time passing."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.1
        return self.t


def test_a_ramp_to_a_port_ceiling() -> None:
    m, pools = measurement(limit=300, stop=_NoWait())
    step = m.begin("one", [Launch(Plan(1000))])
    assert m.ramp(step, hz=1000) == "ramp-over"
    v = m.conclude(step)
    assert (v.reached, v.count, v.cause, v.side) == (True, 300, "ephemeral-ports", "client")
    assert m.timeline[0].held == 0 and m.timeline[-1].held == 300
    assert [s.step for s in m.timeline] == ["one"] * len(m.timeline)
    m.close()
    assert pools[0].stopped


def test_a_server_short_of_descriptors_is_found_after_the_settle() -> None:
    m, pools = measurement(limit=10_000, stop=_NoWait())
    m.use_server(FakeServer(pools, cap=120))
    step = m.begin("one", [Launch(Plan(200))])
    assert m.ramp(step, hz=1000) == "ramp-over"
    v = m.conclude(step, settle="stable")
    assert (v.reached, v.cause, v.side, v.count, v.server_held) == (
        True,
        "file-descriptors",
        "server",
        200,
        120,
    )
    assert m.timeline[-1].server_held == 120
    _, errors = m.close()
    assert errors == [] and pools[0].stopped


def test_the_deadline_and_the_stop_event_end_a_ramp() -> None:
    m, _pools = measurement(limit=10**9, stop=_NoWait(), deadline_s=1.0)
    step = m.begin("one", [Launch(Plan(10**9))])
    assert m.ramp(step, hz=1000) == "max-duration"
    m.close()
    stop = _NoWait()
    m2, _ = measurement(limit=10**9, stop=stop)
    step2 = m2.begin("one", [Launch(Plan(10**9))])
    stop.set()
    assert m2.ramp(step2, hz=1000) == "interrupted"
    m2.close()


def test_released_pools_keep_their_failures_counted() -> None:
    m, _pools = measurement(limit=100, stop=_NoWait())
    step = m.begin("one", [Launch(Plan(500))])
    m.ramp(step, hz=1000)
    before = m.client_totals()
    m.release(step)
    after = m.client_totals()
    assert after.held == 0 and after.failures == before.failures == {"EADDRNOTAVAIL": 3}
    assert m.close()[1] == []


def test_every_worker_gone_is_a_failed_run() -> None:
    m, pools = measurement(limit=10**9, stop=_NoWait())
    step = m.begin("one", [Launch(Plan(10**9))])
    pools[0].stopped = True
    with pytest.raises(RunFailed, match="every client worker exited"):
        m.ramp(step, hz=1000)


def test_counter_growth_over_the_step_is_evidence() -> None:
    class Counters:
        def __init__(self) -> None:
            self.n = 0

        def read(self, sample: Any, *, force: bool = False) -> dict[str, int]:
            self.n += 7
            return {"listen_overflows": self.n, "conntrack_count": 5}

    m, _ = measurement(limit=50, stop=_NoWait(), probe=Counters())
    step = m.begin("one", [Launch(Plan(100))])
    m.ramp(step, hz=1000)
    m.conclude(step)
    assert step.facts is not None
    first, last = m.timeline[step.i_start], m.timeline[-1]
    assert step.facts.counters["listen_overflows"] == last.listen_overflows - first.listen_overflows
    assert step.facts.levels == {"conntrack_count": 5}
    m.close()


class _NoWait(threading.Event):
    """A stop event whose waits return at once (the fake clock moves instead)."""

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


def test_a_rate_is_never_measured_over_a_sliver_of_time() -> None:
    """Two samples a few milliseconds apart (a step's closing sample right after its last)
    keep the rate of the last full interval: pools report a few times a second, so a jump in
    their counts over 3 ms is not 100,000 connections per second."""
    t = [0.0]
    pools: list[FakePool] = []

    def make(la: Launch) -> FakePool:
        pools.append(FakePool(la.plan.count, 10**6, step=1000))
        return pools[-1]

    m = Measurement(make_client=make, clock=lambda: t[0], stop=_NoWait())
    step = m.begin("one", [Launch(Plan(10**6))])
    t[0] = 1.0
    first = m.sample("one")  # 2 stats() calls so far: 2,000 over 1 s
    t[0] = 1.003
    second = m.sample("one")  # 1,000 more in 3 ms: not a rate
    assert first.rate == second.rate
    assert 0 < first.rate < 10_000
    m.close()
    assert step.pools == pools
