"""The one measurement loop: launch client pools (and use a server), sample one timeline,
stop on the ramp's end, a ceiling, the deadline or a signal, settle the server's count, gather
the client's and the server's evidence, and decide the step's ceiling.

``conncap open``, ``conncap run`` and every scenario measure through :class:`Measurement`;
what differs between them (how steps are planned, what the model predicts, what is checked,
how the result reads) stays with them. Bounded: each pool's count and handshake timeout bound
a ramp, and so do the caller's deadline and stop event; :meth:`Measurement.close` stops every
pool it launched and the server it was given.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from conncap.errors import RunFailed
from conncap.latency import merge_all
from conncap.measure.facts import add_counts, as_int, closes_of, counts_growth, growth
from conncap.measure.step import (
    ClientPoolLike,
    ClientTotals,
    Launch,
    MeasuredStep,
    OnEvent,
    Probe,
    ServerLike,
    latency_of,
)
from conncap.measure.verdict import ClientStop, StepFacts, Verdict, decide
from conncap.result import (
    Sample,
    TargetSide,
    sample_from_json,
)

#: The server's count is final once it has not moved for this long (its workers report a few
#: times a second), and the settle waits at most this long by default.
SETTLE_S = 0.4
SETTLE_MAX_S = 2.0
#: A sample's connect rate is measured over at least this long (else the last one is kept).
MIN_RATE_INTERVAL_S = 0.2

#: Cumulative kernel counters whose growth over a step is evidence.
GROWTH_KEYS: tuple[str, ...] = (
    "listen_overflows",
    "listen_drops",
    "syn_retrans",
    "tcp_abort_on_memory",
    "conntrack_drops",
    "conntrack_insert_failed",
    "conntrack_early_drop",
    "syncookies_sent",
    "syncookies_recv",
)
#: Levels read at the end of a step.
LEVEL_KEYS: tuple[str, ...] = ("conntrack_count", "conntrack_max")


def _make_client_pool(launch: Launch) -> ClientPoolLike:
    from conncap.engine import ClientPool

    pool: ClientPoolLike = ClientPool(launch.plan, netns=launch.netns, nofile=launch.nofile)
    return pool


class Measurement:
    """The state of one measurement (see the module docstring)."""

    def __init__(
        self,
        *,
        probe: Probe | None = None,
        stop: threading.Event | None = None,
        deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        make_client: Callable[[Launch], ClientPoolLike] = _make_client_pool,
        on_sample: Callable[[Sample], None] | None = None,
        target: Callable[[], TargetSide | None] | None = None,
        on_event: OnEvent | None = None,
    ) -> None:
        """``deadline_s``: seconds from now after which every ramp and hold stops with
        ``max-duration``; ``on_sample`` sees every sample (the live view, the event stream,
        the metrics); ``on_event`` each step's start and end and each ceiling reached;
        ``target`` reads the server's side of a target on this host when a step concludes (a
        server conncap does not own)."""
        self.read_target = target
        self.target: TargetSide | None = None
        self.clock = clock
        self.t0 = clock()
        self.deadline = None if deadline_s is None else self.t0 + deadline_s
        self.stop_event = stop if stop is not None else threading.Event()
        self.probe = probe
        self.timeline: list[Sample] = []
        self.steps: list[MeasuredStep] = []
        self.server: ServerLike | None = None
        self._make_client = make_client
        self._on_sample = on_sample
        self._on_event = on_event
        #: The client's totals at the last sample (the live figures between samples).
        self.last_totals = ClientTotals()
        self._live: list[ClientPoolLike] = []
        self._done = ClientTotals()
        self._last_established = 0
        self._last_t = self.t0
        self.rate = 0.0

    # ---- clock --------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the measurement began (the timeline's ``t``)."""
        return self.clock() - self.t0

    def past_deadline(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    # ---- the server -----------------------------------------------------------------------------

    def use_server(self, server: ServerLike) -> None:
        """The server this measurement samples and settles (started by the caller; stopped by
        :meth:`close`)."""
        self.server = server

    def settle_server(
        self, *, until: int | None = None, settle_s: float = SETTLE_S, max_s: float = SETTLE_MAX_S
    ) -> Any:
        """The server's stats once its held count has not moved for ``settle_s`` (accepts
        trail the client's handshakes) and, with ``until``, reached it (a handshake whose last
        ACK met a full queue completes only when the server resends its SYN-ACK), at most
        ``max_s``. None without a server."""
        if self.server is None:
            return None
        end = self.clock() + max_s
        last = self.server.stats().held
        still = self.clock()
        while self.clock() < end and not self.stop_event.is_set():
            self.stop_event.wait(0.05)
            held = self.server.stats().held
            if held != last:
                last, still = held, self.clock()
            elif self.clock() - still >= settle_s and (until is None or held >= until):
                break
        return self.server.stats()

    # ---- the client -----------------------------------------------------------------------------

    def client_totals(self) -> ClientTotals:
        t = ClientTotals(
            failures=dict(self._done.failures),
            failures_by_cause=dict(self._done.failures_by_cause),
            dropped=dict(self._done.dropped),
            attempts=self._done.attempts,
            established=self._done.established,
        )
        latencies = [self._done.latency]
        for pool in self._live:
            cs = pool.stats()
            latencies.append(latency_of(cs))
            t.rss_bytes += int(getattr(cs, "rss_bytes", 0) or 0)
            t.held += int(cs.held)
            t.established += int(cs.established)
            t.attempts += int(cs.attempts)
            add_counts(t.failures, cs.failures)
            add_counts(t.failures_by_cause, cs.failures_by_cause)
            add_counts(t.dropped, cs.dropped)
            extra = cs.extra
            if "closed" in extra:
                t.closed = (t.closed or 0) + int(extra["closed"])
            if "time_wait" in extra:
                t.time_wait = max(t.time_wait or 0, int(extra["time_wait"]))
        t.latency = merge_all(latencies)
        return t

    def held(self) -> int:
        """Connections every live pool holds."""
        return sum(int(p.stats().held) for p in self._live)

    def client_pids(self) -> list[int]:
        return [pid for p in self._live for pid in p.pids()]

    # ---- the timeline ----------------------------------------------------------------------------

    def sample(self, step: str, *, phase: str = "ramp", force: bool = False) -> Sample:
        """One timeline sample: the client's totals, the server's count, the probe's figures."""
        now = self.clock()
        totals = self.client_totals()
        dt = now - self._last_t
        if dt >= MIN_RATE_INTERVAL_S:
            # Over a shorter interval (a step's closing sample right after its last one) the
            # pools' counters, reported a few times a second, would give a meaningless rate.
            self.rate = (totals.established - self._last_established) / dt
            self._last_t, self._last_established = now, totals.established
        s: dict[str, object] = {
            "t": round(now - self.t0, 3),
            "step": step,
            "phase": phase,
            "held": totals.held,
            "established": totals.established,
            "failures": sum(totals.failures_by_cause.values()),
            "rate": round(self.rate, 1),
            "failures_by_cause": dict(sorted(totals.failures_by_cause.items())),
        }
        if totals.time_wait is not None:
            s["time_wait"] = totals.time_wait
        if totals.closed is not None:
            s["closed"] = totals.closed
        interval = totals.latency.since(self.last_totals.latency)
        if interval.count:  # the handshakes completed since the last sample
            for key, q in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
                ns = interval.percentile_ns(q)
                if ns is not None:
                    s[key] = round(ns / 1e6, 4)
        self.last_totals = totals
        if self.server is not None:
            ss = self.server.stats()
            s["server_held"] = ss.held
            s["server_accepted"] = ss.accepted
            s["server_errors"] = dict(ss.errors_by_cause)
        if self.probe is not None:
            for k, v in self.probe.read(s, force=force).items():
                s.setdefault(k, v)
        sample = sample_from_json(s)
        self.timeline.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample)
        return sample

    # ---- one step ----------------------------------------------------------------------------

    def begin(self, name: str, launches: Sequence[Launch]) -> MeasuredStep:
        """Sample, then start one client pool per launch (each ready before any goes)."""
        self.sample(name, phase="ramp", force=True)
        ss = self.server.stats() if self.server is not None else None
        step = MeasuredStep(
            name=name,
            launches=tuple(launches),
            pools=[],
            t_start=self.now(),
            i_start=len(self.timeline) - 1,
            server_errors_start=dict(ss.errors_by_cause) if ss is not None else {},
            server_errnos_start=dict(ss.errors) if ss is not None else {},
        )
        self.steps.append(step)
        self._event("step-start", step=name, requested=step.requested, pools=len(launches))
        for launch in launches:
            pool = self._make_client(launch)
            step.pools.append(pool)
            self._live.append(pool)
            pool.start()
        return step

    def _stop_reason(
        self, sample: Sample, should_stop: Callable[[Sample], str | None] | None
    ) -> str | None:
        if self.stop_event.is_set():
            return "interrupted"
        if should_stop is not None:
            why = should_stop(sample)
            if why is not None:
                return why
        if self.past_deadline():
            return "max-duration"
        return None

    def ramp(
        self,
        step: MeasuredStep,
        *,
        hz: float = 4.0,
        should_stop: Callable[[Sample], str | None] | None = None,
        max_s: float | None = None,
    ) -> str:
        """Sample until every pool of ``step`` has its count or its ceiling (``ramp-over``),
        or a stop: ``interrupted``, ``max-duration`` (the deadline or ``max_s``), or what
        ``should_stop`` says (e.g. ``memory-guard``)."""
        end = None if max_s is None else self.clock() + max_s
        interval = 1.0 / hz
        while True:
            sample = self.sample(step.name, phase="ramp")
            why = self._stop_reason(sample, should_stop)
            if why is None and end is not None and self.clock() >= end:
                why = "max-duration"
            if why is not None:
                step.outcome = why
                return why
            if all(p.ramp_over() for p in step.pools):
                self.sample(step.name, phase="ramp")
                step.outcome = "ramp-over"
                return "ramp-over"
            if step.pools and not any(p.pids() for p in step.pools):
                raise RunFailed(
                    f"step {step.name}: every client worker exited before the ramp ended"
                )
            if self.server is not None and not self.server.pids():
                raise RunFailed("every server worker exited during the run")
            self.stop_event.wait(interval)

    def hold(
        self,
        step_name: str,
        seconds: float,
        *,
        hz: float = 4.0,
        should_stop: Callable[[Sample], str | None] | None = None,
    ) -> str | None:
        """Hold what is held ``seconds``, sampling; a stop reason if one comes up first."""
        end = self.clock() + seconds
        interval = 1.0 / hz
        while True:
            sample = self.sample(step_name, phase="hold")
            why = self._stop_reason(sample, should_stop)
            if why is not None:
                return why
            if self.clock() >= end:
                return None
            self.stop_event.wait(min(interval, max(0.0, end - self.clock())))

    def churn(
        self,
        step: MeasuredStep,
        *,
        lifetime: float,
        hz: float = 4.0,
        grace: float = 2.0,
        max_s: float | None = None,
        should_stop: Callable[[Sample], str | None] | None = None,
    ) -> str:
        """A churn step (pools whose plans have a ``lifetime``): sample until every pool has
        opened its share or hit a ceiling, then until the connections still open reach their
        close (at most ``lifetime + grace`` s). ``ceiling`` or ``count``, or the stop that came
        first (``interrupted``, ``max-duration``, what ``should_stop`` says)."""
        outcome = self.ramp(step, hz=hz, should_stop=should_stop, max_s=max_s)
        if outcome != "ramp-over":
            return outcome
        reached = any(cs.ceiling is not None for cs in step.client_stats())
        reason = "ceiling" if reached else "count"

        def drained(sample: Sample) -> str | None:
            why = should_stop(sample) if should_stop is not None else None
            return why or ("drained" if sample.held == 0 else None)

        end = self.hold(step.name, lifetime + grace, hz=hz, should_stop=drained)
        return reason if end in (None, "drained") else end

    def conclude(
        self,
        step: MeasuredStep,
        *,
        settle: str = "stable",
        short_is_ceiling: bool = False,
        count: str = "step",
    ) -> Verdict:
        """The step's evidence and ceiling. ``settle``: ``stable`` waits until the server's
        count stops moving, ``all`` until it holds what every live pool holds (at most 10 s),
        ``none`` reads it at once (a frozen server). ``count``: the client's held count is
        the ``step``'s pools' or ``all`` live pools' (steps that add to what earlier ones
        hold)."""
        outcome = step.outcome or "ramp-over"
        stats = step.client_stats()
        client_held = self.held() if count == "all" else sum(int(cs.held) for cs in stats)
        if self.server is None:
            server = None
        elif settle == "all":
            server = self.settle_server(until=self.held(), max_s=10.0)
        elif settle == "stable":
            server = self.settle_server()
        else:
            server = self.server.stats()
        step.server = server
        last = self.sample(step.name, phase="ramp", force=True)
        step.t_end = self.now()
        step.i_end = len(self.timeline) - 1
        failures: dict[str, int] = {}
        by_cause: dict[str, int] = {}
        for cs in stats:
            add_counts(failures, cs.failures)
            add_counts(by_cause, cs.failures_by_cause)
        stops = [
            ClientStop(errno=str(c.errno), op=str(c.op), evidence=str(c.evidence), cause=c.cause)
            for cs in stats
            if (c := cs.ceiling) is not None
        ]
        window = self.timeline[step.i_start : step.i_end + 1]
        facts = StepFacts(
            requested=step.requested,
            client_held=client_held,
            server_held=int(server.held) if server is not None else None,
            client_stops=stops,
            client_failures=failures,
            client_failures_by_cause=by_cause,
            server_errors=counts_growth(server.errors_by_cause, step.server_errors_start)
            if server is not None
            else {},
            server_errnos=counts_growth(server.errors, step.server_errnos_start)
            if server is not None
            else {},
            counters={k: growth(window, k) for k in GROWTH_KEYS if last.figure(k) is not None},
            levels={k: as_int(last.figure(k)) for k in LEVEL_KEYS if last.figure(k) is not None},
            stop_reason="ceiling" if outcome == "ramp-over" and stops else outcome,
        )
        facts = dataclasses.replace(facts, closes=closes_of(stats))
        if self.read_target is not None:
            self.target = self.read_target()
            facts = dataclasses.replace(facts, target=self.target)
        step.facts = facts
        step.verdict = decide(facts, short_is_ceiling=short_is_ceiling)
        self._conclusion_events(step, step.verdict, client_held)
        return step.verdict

    def _event(self, kind: str, **fields: object) -> None:
        if self._on_event is not None:
            self._on_event(kind, fields)

    def _conclusion_events(self, step: MeasuredStep, verdict: Verdict, held: int) -> None:
        if self._on_event is None:
            return
        c = verdict.ceiling()
        if c.reached:
            self._event(
                "ceiling",
                step=step.name,
                count=c.count,
                cause=c.cause,
                side=c.side,
                errno=c.errno,
                op=c.op,
                evidence=c.evidence,
            )
        lat = step.latency().summary()
        self._event(
            "step-end",
            step=step.name,
            outcome=step.outcome,
            held=held,
            ceiling=c.cause if c.reached else None,
            latency_p50_ms=lat.p50_ms,
            latency_p99_ms=lat.p99_ms,
        )

    # ---- the end --------------------------------------------------------------------------------

    def release(self, step: MeasuredStep, timeout: float = 2.0) -> None:
        """Close a step's connections and reap its workers; their failures stay counted."""
        for pool in step.pools:
            self._stop_pool(pool, timeout)

    def _stop_pool(self, pool: ClientPoolLike, timeout: float) -> None:
        if pool not in self._live:
            return
        final = pool.stop(timeout=timeout)
        self._live.remove(pool)
        self._done.attempts += int(final.attempts)
        self._done.established += int(final.established)
        add_counts(self._done.failures, final.failures)
        add_counts(self._done.failures_by_cause, final.failures_by_cause)
        add_counts(self._done.dropped, final.dropped)
        self._done.latency = self._done.latency + latency_of(final)

    def pause_clients(self) -> None:
        """Stop opening (held connections stay): the memory guard."""
        for pool in self._live:
            pool.pause()

    def close(self, timeout: float = 2.0) -> tuple[Any, list[BaseException]]:
        """Stop every live pool (clients first: they reset their connections), then the
        server; the server's final stats (None without one) and what failed on the way.
        Idempotent."""
        errors: list[BaseException] = []
        # Every client worker of every pool closes at once (each resets its own connections),
        # so the stop takes as long as the busiest worker, not the sum of the pools. The
        # server goes after: closing it first would wake every client for every FIN; it
        # stops watching its connections first, so the resets wake nobody.
        quiet = getattr(self.server, "quiet", None)
        if quiet is not None and self._live:
            with suppress(Exception):
                quiet()
        for p in self._live:
            request = getattr(p, "request_stop", None)
            if request is not None:
                with suppress(Exception):
                    request()
        for pool in reversed(list(self._live)):
            try:
                self._stop_pool(pool, timeout)
            except Exception as exc:
                errors.append(exc)
                with suppress(ValueError):
                    self._live.remove(pool)
        final = None
        if self.server is not None:
            try:
                final = self.server.stop(timeout=timeout)
            except Exception as exc:
                errors.append(exc)
        return final, errors
