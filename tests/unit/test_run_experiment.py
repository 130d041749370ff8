"""conncap.run.experiment with fake pools and a fake sampler: the step logic, every way a run
stops (ceiling, count, memory guard, max-duration, Ctrl-C, error) and that every pool it
started is stopped, without opening a socket (trio's FakeSocketFactory habit)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from conncap.engine import OpenPlan, PoolCeiling
from conncap.errors import RunFailed, UsageError
from conncap.limits import Fact, HostLimits
from conncap.result import REQUIRED_KEYS, SCHEMA, ServerFigures, to_json
from conncap.run import Experiment, RunConfig
from conncap.run.config import Progress


def limits(lo: int = 40000, hi: int = 40499) -> HostLimits:
    return HostLimits(
        os="linux",
        port_range=Fact.of((lo, hi), "test"),
        reserved_ports=Fact.of((), "test"),
        nofile_soft=Fact.of(1024, "test"),
        nofile_hard=Fact.of(20000, "test"),
        mem_available=Fact.of(16 << 30, "test"),
    )


@dataclass
class FakeServerStats:
    held: int = 0
    errors_by_cause: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    accepted: int = 0

    def figures(self) -> ServerFigures:
        return ServerFigures(held=self.held, errors=self.errors_by_cause)


class FakeServer:
    instances: ClassVar[list[FakeServer]] = []
    fail_start = 0

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.ports: list[int] = []
        self.stopped = False
        FakeServer.instances.append(self)

    def start(self) -> None:
        if FakeServer.fail_start:
            FakeServer.fail_start -= 1
            raise RunFailed("port taken")
        self.ports = [p or 50000 + i for i, p in enumerate(self.kw["ports"])]

    def pids(self) -> list[int]:
        return [] if self.stopped else [1]

    def stats(self) -> FakeServerStats:
        return FakeServerStats(held=sum(c.held for c in FakeClient.instances if not c.stopped))

    def stop(self, timeout: float = 2.0) -> FakeServerStats:
        self.stopped = True
        return FakeServerStats()


@dataclass
class FakeClientStats:
    held: int
    established: int
    attempts: int
    failures: dict[str, int]
    failures_by_cause: dict[str, int]
    dropped: dict[str, int]
    ceiling: PoolCeiling | None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeClient:
    """Opens ``per_call`` connections per stats() call until its plan's count or, for a
    one-pair plan, ``port_pool`` (then it reports EADDRNOTAVAIL as a ceiling)."""

    instances: ClassVar[list[FakeClient]] = []
    port_pool = 500
    per_call = 200
    never_done = False

    def __init__(self, plan: OpenPlan, *, netns: str | None = None, nofile: int | None = None):
        self.plan = plan
        self.netns = netns
        self.held = 0
        self.stopped = False
        self.paused = False
        single = plan.pair_count == 1
        self.limit = min(plan.count, self.port_pool) if single else plan.count
        FakeClient.instances.append(self)

    def start(self) -> None:
        pass

    def pids(self) -> list[int]:
        return [] if self.stopped else [2]

    def _over(self) -> bool:
        return self.held >= self.limit and not self.never_done

    def stats(self) -> FakeClientStats:
        if not self.paused and not self.stopped:
            self.held = min(self.limit, self.held + self.per_call)
        fails = {"EADDRNOTAVAIL": 2} if self._over() and self.limit < self.plan.count else {}
        ceiling = (
            PoolCeiling(
                self.held, "EADDRNOTAVAIL", "ephemeral-ports", "connect", "every pair failed"
            )
            if fails
            else None
        )
        return FakeClientStats(
            held=self.held,
            established=self.held,
            attempts=self.held + sum(fails.values()),
            failures=fails,
            failures_by_cause={"ephemeral-ports": 2} if fails else {},
            dropped={},
            ceiling=ceiling,
        )

    def ramp_over(self) -> bool:
        return self._over()

    def pause(self) -> None:
        self.paused = True

    def stop(self, timeout: float = 2.0) -> FakeClientStats:
        self.stopped = True
        return self.stats()


class FakeSampler:
    def __init__(self, mem: Any = None) -> None:
        self.kernel_source: str | None = "slabinfo"
        self.user_method: dict[str, str] = {"client": "uss"}
        self.problems: dict[str, str] = {}
        self.mem = mem or (lambda held: 8 << 30)
        self.pids: dict[str, Any] = {}

    def set_pids(self, *, client: Any = None, server: Any = None) -> None:
        self.pids = {"client": client, "server": server}

    def sample(
        self,
        *,
        held: int,
        rate: float,
        failures: int = 0,
        failures_by_cause: Mapping[str, int] | None = None,
        step: str | None = None,
        t: float | None = None,
    ) -> dict[str, Any]:
        return {
            "t": t,
            "held": held,
            "rate": rate,
            "failures": failures,
            "failures_by_cause": dict(failures_by_cause or {}),
            "step": step,
            "kernel_bytes": 10_000_000 + 8000 * held,
            "user_bytes_client": 30_000_000 + 300 * held,
            "user_bytes_server": 20_000_000 + 100 * held,
            "mem_available": self.mem(held),
            "listen_overflows": 0,
        }


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.progress_seen: list[Progress] = []

    def event(self, text: str) -> None:
        self.events.append(text)

    def progress(self, p: Progress) -> None:
        self.progress_seen.append(p)


@pytest.fixture(autouse=True)
def _reset() -> None:
    FakeServer.instances = []
    FakeServer.fail_start = 0
    FakeClient.instances = []
    FakeClient.port_pool = 500
    FakeClient.per_call = 200
    FakeClient.never_done = False


def document(e: Experiment) -> dict[str, Any]:
    """The run's result as the JSON document it writes (the assertions read that)."""
    return dict(to_json(e.run()))


def experiment(config: RunConfig, sampler: FakeSampler | None = None, **kw: Any) -> Experiment:
    s = sampler or FakeSampler()
    kw.setdefault("observer", Recorder())
    return Experiment(
        config,
        limits=limits(),
        make_server=FakeServer,
        make_client=FakeClient,
        make_sampler=lambda: s,
        mem_available=lambda: 8 << 30,
        read_sockets=lambda: [],
        pick_ports=lambda host, n, rng: [41000 + i for i in range(n)],
        **kw,
    )


def fast(**kw: Any) -> RunConfig:
    base: dict[str, Any] = {"plateau_s": 0.05, "ramp_hz": 200.0, "hold_hz": 200.0}
    base.update(kw)
    return RunConfig(**base)


def all_stopped() -> bool:
    return all(s.stopped for s in FakeServer.instances) and all(
        c.stopped for c in FakeClient.instances
    )


def test_port_ceiling_then_the_lift_to_the_count() -> None:
    rec = Recorder()
    doc = document(experiment(fast(count=1500), observer=rec))
    assert doc["schema"] == SCHEMA and doc["command"] == "run"
    assert all(k in doc for k in REQUIRED_KEYS)
    one, two = doc["steps"]
    assert one["ceiling"]["reached"] and one["ceiling"]["count"] == 500
    assert one["ceiling"]["cause"] == "ephemeral-ports"
    assert one["prediction"]["count"] == 500
    assert one["comparison"]["text"] == "predicted 500, measured 500 ✓"
    assert two["established_peak"] == 1500 and not two["ceiling"]["reached"]
    assert two["prediction"]["count"] > 500
    assert doc["stop_reason"] == "count"
    assert doc["established_peak"] == 1500 and doc["held_at_end"] == 1500
    # the run's headline ceiling is the port ceiling, with its advice
    assert doc["ceiling"]["step"] == "ports" and doc["ceiling"]["advice"]
    # step 1 stays open while step 2 adds: the second pool starts from 500 held
    assert two["held_before"] == 500
    # the server listens outside the range; step 2 fans out over ports and source IPs
    assert FakeServer.instances[0].ports == [41000, 41001, 41002]
    assert FakeClient.instances[1].plan.source_ips == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert doc["memory"]["kernel_bytes_per_conn"] == 8000
    assert doc["memory"]["user_bytes_per_conn"] == 400
    assert {s["step"] for s in doc["timeline"]} >= {"ports", "four-tuple"}
    assert any("Predicted 500, measured 500 ✓" in line for line in doc["summary"])
    assert rec.events[0].startswith("server:") and rec.progress_seen
    assert all_stopped()


def test_no_escalate_ends_at_the_first_ceiling() -> None:
    doc = document(experiment(fast(count=1500, escalate=False)))
    assert [s["name"] for s in doc["steps"]] == ["ports"]
    assert doc["stop_reason"] == "ceiling"
    assert doc["ceiling"]["count"] == 500
    assert all_stopped()


def test_a_count_below_the_ceiling_stops_at_the_count_in_step_one() -> None:
    doc = document(experiment(fast(count=300)))
    assert len(doc["steps"]) == 1
    assert doc["stop_reason"] == "count" and doc["established_peak"] == 300
    assert not doc["ceiling"]["reached"]
    assert doc["steps"][0]["comparison"]["text"].startswith("reached the requested 300")
    assert all_stopped()


def test_memory_guard_stops_the_run_and_pauses_the_clients() -> None:
    # 8 GiB at the start, guard 25 %: 2 GiB; memory "falls" below it past 300 connections
    sampler = FakeSampler(mem=lambda held: (8 << 30) if held < 300 else (1 << 30))
    doc = document(experiment(fast(count=1500), sampler))
    assert doc["stop_reason"] == "memory-guard"
    assert doc["memory"]["guard_bytes"] == 2 << 30
    assert FakeClient.instances[0].paused
    assert doc["established_peak"] < 500
    assert all_stopped()


def test_max_duration_stops_a_ramp_that_never_ends() -> None:
    FakeClient.never_done = True
    doc = document(experiment(fast(count=1500, max_duration=0.3)))
    assert doc["stop_reason"] == "max-duration"
    assert doc["duration_s"] < 5
    assert all_stopped()


def test_ctrl_c_stops_and_cleans_up() -> None:
    FakeClient.never_done = True
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        doc = document(experiment(fast(count=1500), stop_event=stop))
    finally:
        timer.cancel()
    assert doc["stop_reason"] == "interrupted"
    assert all_stopped()


def test_server_start_retries_then_reports_an_error() -> None:
    FakeServer.fail_start = 1
    doc = document(experiment(fast(count=300)))
    assert doc["stop_reason"] == "count"
    assert len(FakeServer.instances) == 2

    FakeClient.instances = []
    FakeServer.instances = []
    FakeServer.fail_start = 10
    doc = document(experiment(fast(count=300)))
    assert doc["stop_reason"] == "error"
    assert "the server could not start" in doc["error"]
    assert any("Error:" in line for line in doc["summary"])
    assert doc.get("steps", []) == [] and all_stopped()  # /2 leaves empty lists out


def test_a_dead_client_is_an_error_and_still_cleaned_up() -> None:
    FakeClient.never_done = True

    class Dying(FakeClient):
        def pids(self) -> list[int]:
            return []

    doc = document(
        Experiment(
            fast(count=1500),
            limits=limits(),
            make_server=FakeServer,
            make_client=Dying,
            make_sampler=FakeSampler,
            mem_available=lambda: 8 << 30,
            read_sockets=lambda: [],
            pick_ports=lambda host, n, rng: [41000 + i for i in range(n)],
        )
    )
    assert doc["stop_reason"] == "error"
    assert "client worker exited" in doc["error"]
    assert all_stopped()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"count": 0}, "--count"),
        ({"max_duration": 0}, "--max-duration"),
        ({"memory_guard": 1.0}, "--memory-guard"),
        ({"memory_guard": -0.1}, "--memory-guard"),
        ({"source_ips": 0}, "--source-ips"),
        ({"client_workers": 5, "count": 3}, "--client-workers"),
        ({"rate": 0}, "--rate"),
        ({"timeout_s": 0}, "--timeout"),
        ({"client_nofile": 10}, "--client-nofile"),
        ({"host": "::1", "source_ips": 2}, "::1"),
    ],
)
def test_bad_config_is_a_usage_error(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RunConfig(**kw).check()


def test_a_cluster_node_fans_out_over_its_own_addresses_and_lingers() -> None:
    """``run --target --cluster``: step 2's sources are the node's own (given), and once the
    steps are over ``linger`` holds before anything is closed."""
    seen: list[tuple[int, bool]] = []

    def linger(m: Any) -> None:
        seen.append((m.held(), any(c.stopped for c in FakeClient.instances)))

    sources = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    doc = document(
        experiment(
            fast(count=1200, host="198.51.100.7", target_port=6379, sources=sources),
            linger=linger,
        )
    )
    one, two = doc["steps"]
    assert one["ceiling"]["count"] == 500 and two["spec"]["source_ips"] == list(sources)
    assert FakeClient.instances[1].plan.source_ips == sources
    assert seen == [(1200, False)] and doc["held_at_end"] == 1200
    assert not FakeServer.instances and all_stopped()


def test_linger_is_not_called_after_a_stop() -> None:
    FakeClient.never_done = True
    seen: list[int] = []
    doc = document(experiment(fast(count=1000, max_duration=0.3), linger=lambda m: seen.append(1)))
    assert doc["stop_reason"] == "max-duration" and seen == []
