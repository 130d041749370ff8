"""``ClientPool``: worker processes that open and hold connections for one :class:`OpenPlan`.

The count is split exactly over the workers; each worker cycles over every (source IP,
destination) pair. The pool samples its workers every 0.25 s into a timeline and decides
when the ramp is over: every worker has its share (``done``) or has hit a ceiling.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from conncap.analysis.closes import CloseTally
from conncap.catalogue import Cause
from conncap.engine import classify as cl
from conncap.engine.plan import OpenPlan, check_plan
from conncap.engine.procs import WorkerSet
from conncap.engine.protocol import ClientConfig, ClientSnapshot
from conncap.latency import Histogram, merge_all
from conncap.model.churn import time_wait_dominates
from conncap.result import JsonValue

#: Seconds between two timeline samples.
SAMPLE_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class PoolCeiling:
    """Where and why the run stopped opening."""

    count: int
    errno: str
    cause: str
    op: str
    evidence: str

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "count": self.count,
            "errno": self.errno,
            "cause": self.cause,
            "op": self.op,
            "evidence": self.evidence,
        }


class ChurnCounters(TypedDict, total=False):
    """``ClientStats.extra`` with a ``lifetime`` (churn; empty otherwise): closed by us,
    TIME_WAIT now and at its peak, the first failure (seconds after go, errno name)."""

    closed: int
    time_wait: int
    time_wait_peak: int
    first_failure_s: float | None
    first_failure_errno: str | None


class ServerCloses(TypedDict, total=False):
    """``ClientStats.extra``: what the server did to connections after their handshake
    (:func:`server_close_extra`; absent keys: nothing seen)."""

    lifetimes: list[int]
    messages: list[list[str | int]]
    icmp: dict[str, int]
    unacked: int


class ClientExtra(ChurnCounters, ServerCloses, total=False):
    """``ClientStats.extra``: the churn counters and what the server did."""


class TimelineSample(TypedDict):
    """One sample of :meth:`ClientPool.timeline` (``time_wait``, ``closed``: with churn)."""

    t: float
    held: int
    established: int
    failures: int
    rate: float
    failures_by_cause: dict[str, int]
    time_wait: NotRequired[int]
    closed: NotRequired[int]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """The pool's counters summed over its workers."""

    t: float
    requested: int
    held: int
    established: int
    established_peak: int
    attempts: int
    inflight: int
    failures: dict[str, int]
    failures_by_cause: dict[str, int]
    dropped: dict[str, int]
    rate: float
    phases: dict[str, int]
    ramp_over: bool
    ceiling: PoolCeiling | None
    pids: list[int]
    rss_bytes: int
    workers: int
    extra: ClientExtra = field(default_factory=ClientExtra)
    latency: Histogram = field(default_factory=Histogram)
    """Connect latency over every worker (cumulative; ``conncap.latency``)."""


class ClientPool:
    """Opens ``plan.count`` connections over ``plan.workers`` processes (docs/engine.md)."""

    def __init__(
        self,
        plan: OpenPlan,
        *,
        netns: str | None = None,
        nofile: int | None = None,
    ) -> None:
        check_plan(plan)
        self.plan = plan
        self.netns = netns
        self.nofile = nofile
        self._set: WorkerSet[ClientSnapshot] = WorkerSet(on_tick=self._sample, tick=SAMPLE_INTERVAL)

        self._lock = threading.Lock()
        self._timeline: list[TimelineSample] = []
        self._t_go = 0.0
        self._peak = 0
        self._last_ok = 0
        self._last_t = 0.0
        self._rate = 0.0
        self._final: ClientStats | None = None
        self._started = False
        self._held_at_ramp_end: int | None = None
        self._tw_peak = 0

    def _config(self, index: int, quota: int) -> ClientConfig:
        p = self.plan
        config: ClientConfig = {
            "role": "client",
            "pairs": list(p.pairs()),
            "quota": quota,
            "rate": None if p.rate is None else p.rate / p.workers,
            "window": p.window,
            "timeout": p.timeout_s,
            "bind_mode": p.bind_mode,
            "slice": [index, p.workers],
            "port_range": list(p.port_range) if p.port_range else None,
            "streak": p.streak,
            "nofile": self.nofile,
            "autostart": False,
            "lifetime": p.lifetime,
            "close": p.close,
        }
        if p.send:
            config["send"] = p.send.hex()
        return config

    def start(self) -> None:
        """Start every worker, wait until each is ready, then tell them all to go at once."""
        quotas = self.plan.split(self.plan.workers)
        try:
            workers = [
                self._set.spawn(self._config(i, q), self.netns) for i, q in enumerate(quotas)
            ]
            self._set.wait_ready(workers)
        except BaseException:
            self._set.stop(timeout=1.0)
            raise
        self._t_go = self._last_t = time.monotonic()
        self._started = True
        self._set.broadcast("go")

    # ---- control ---------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop opening new connections (held ones stay)."""
        self._set.broadcast("pause")

    def resume(self) -> None:
        self._set.broadcast("resume")

    def set_cap(self, held: int | None) -> None:
        """Hold at most ``held`` connections in all (split over workers); None removes it."""
        if held is None:
            self._set.broadcast("cap -1")
            return
        base, extra = divmod(max(0, held), len(self._set.workers))
        for i, w in enumerate(self._set.workers):
            w.send(f"cap {base + (1 if i < extra else 0)}")

    def pids(self) -> list[int]:
        return self._set.pids()

    # ---- observation -----------------------------------------------------------------------

    def stats(self) -> ClientStats:
        if self._final is not None:
            return self._final
        return self._aggregate(self._set.snapshot())

    def timeline(self) -> list[TimelineSample]:
        with self._lock:
            return list(self._timeline)

    def ramp_over(self) -> bool:
        snaps = self._set.snapshot()
        return self._ramp_over(snaps)

    def _ramp_over(self, snaps: list[ClientSnapshot]) -> bool:
        if not self._started or not snaps:
            return False
        for w, s in zip(self._set.workers, snaps, strict=True):
            if w.eof:
                continue  # a dead worker opens nothing more
            if s.get("phase") not in ("done", "ceiling", "stopped"):
                return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the ramp is over (count reached or ceiling); False on timeout."""
        return self._set.wait_until(self.ramp_over, timeout)

    def _aggregate(self, snaps: list[ClientSnapshot]) -> ClientStats:
        failures: dict[str, int] = {}
        dropped: dict[str, int] = {}
        phases: dict[str, int] = {}
        for s in snaps:
            for k, n in s.get("failures", {}).items():
                failures[k] = failures.get(k, 0) + n
            for k, n in s.get("dropped", {}).items():
                dropped[k] = dropped.get(k, 0) + n
            ph = str(s.get("phase", "starting"))
            phases[ph] = phases.get(ph, 0) + 1
        held = sum(s.get("held", 0) for s in snaps)
        self._peak = max(self._peak, held)
        over = self._ramp_over(snaps)
        if over and self._held_at_ramp_end is None:
            self._held_at_ramp_end = held
        ceiling = self._ceiling(snaps, self._held_at_ramp_end or held) if over else None
        by_cause = cl.by_cause(failures, "connect")
        if ceiling is not None and ceiling.cause == str(Cause.TIME_WAIT):
            # the port failures were ports waiting out TIME_WAIT (the ceiling's evidence)
            n = by_cause.pop(str(Cause.EPHEMERAL_PORTS), 0)
            if n:
                by_cause[str(Cause.TIME_WAIT)] = by_cause.get(str(Cause.TIME_WAIT), 0) + n
        return ClientStats(
            t=time.monotonic() - self._t_go if self._started else 0.0,
            requested=self.plan.count,
            held=held,
            established=sum(s.get("ok", 0) for s in snaps),
            established_peak=max(self._peak, held),
            attempts=sum(s.get("attempts", 0) for s in snaps),
            inflight=sum(s.get("inflight", 0) for s in snaps),
            failures=cl.by_name(failures),
            failures_by_cause=by_cause,
            dropped=cl.by_name(dropped),
            rate=self._rate,
            phases=phases,
            ramp_over=over,
            ceiling=ceiling,
            pids=self._set.pids(),
            rss_bytes=sum(s.get("rss", 0) for s in snaps),
            workers=len(snaps),
            extra=ClientExtra(
                **(self._churn_extra(snaps) if self.plan.lifetime is not None else {}),
                **server_close_extra(snaps),
            ),
            latency=merge_all(
                Histogram.of(s.get("lat", ()), s.get("lat_sum", 0), s.get("lat_max", 0))
                for s in snaps
            ),
        )

    def _churn_extra(self, snaps: list[ClientSnapshot]) -> ChurnCounters:
        """Churn counters over workers: closed by us, TIME_WAIT now and at its peak (one
        namespace: the largest any worker saw, not a sum), the first failure."""
        fails = [
            (float(ff), int(s.get("first_fail_errno", 0)))
            for s in snaps
            if (ff := s.get("first_fail")) is not None
        ]
        first = min(fails) if fails else None
        tw_now = max((int(s.get("tw", 0)) for s in snaps), default=0)
        return {
            "closed": sum(int(s.get("closed", 0)) for s in snaps),
            "time_wait": tw_now,
            "time_wait_peak": max(
                [self._tw_peak, tw_now, *(int(s.get("tw_peak", 0)) for s in snaps)]
            ),
            "first_failure_s": first[0] if first else None,
            "first_failure_errno": cl.errno_name(first[1]) if first else None,
        }

    @staticmethod
    def _ceiling(snaps: list[ClientSnapshot], held: int) -> PoolCeiling | None:
        """The dominant ceiling over workers that reported one (most workers, then errno)."""
        found: dict[tuple[int, str], list[str]] = {}
        for s in snaps:
            c = s.get("ceiling")
            if c:
                found.setdefault((int(c["errno"]), str(c.get("op", "connect"))), []).append(
                    str(c.get("evidence", ""))
                )
        if not found:
            return None
        (code, op), evidence = max(found.items(), key=lambda kv: len(kv[1]))
        cause = cl.classify(code, op)
        # One namespace: every worker read the same TIME_WAIT count; take the largest.
        tws = [
            int(tw)
            for s in snaps
            if (c := s.get("ceiling")) and (tw := c.get("time_wait")) is not None
        ]
        tw = max(tws) if tws else None
        tail = ""
        if cause is Cause.EPHEMERAL_PORTS and op == "connect" and time_wait_dominates(tw, held):
            cause = Cause.TIME_WAIT
            tail = (
                f"; {tw:,} sockets in TIME_WAIT in the client's namespace against {held:,} "
                "held: the ports are waiting out TIME_WAIT"
            )
        return PoolCeiling(
            count=held,
            errno=cl.errno_name(code),
            cause=str(cause),
            op=op,
            evidence=f"{evidence[0]} ({len(evidence)} of {len(snaps)} workers){tail}",
        )

    def _sample(self) -> None:
        """Reader-thread tick: one timeline sample (t, held, failures, rate, by cause)."""
        if not self._started or self._final is not None:
            return
        snaps = [w.last.copy() for w in self._set.workers]
        now = time.monotonic()
        ok = sum(s.get("ok", 0) for s in snaps)
        held = sum(s.get("held", 0) for s in snaps)
        dt = now - self._last_t
        if dt > 0:
            self._rate = (ok - self._last_ok) / dt
        self._last_ok, self._last_t = ok, now
        self._peak = max(self._peak, held)
        if self._held_at_ramp_end is None and self._ramp_over(snaps):
            self._held_at_ramp_end = held
        failures: dict[str, int] = {}
        for s in snaps:
            for k, n in s.get("failures", {}).items():
                failures[k] = failures.get(k, 0) + n
        sample: TimelineSample = {
            "t": round(now - self._t_go, 3),
            "held": held,
            "established": ok,
            "failures": sum(failures.values()),
            "rate": round(self._rate, 1),
            "failures_by_cause": cl.by_cause(failures, "connect"),
        }
        if self.plan.lifetime is not None:
            tw = max((int(s.get("tw", 0)) for s in snaps), default=0)
            self._tw_peak = max(self._tw_peak, tw)
            sample["time_wait"] = tw
            sample["closed"] = sum(int(s.get("closed", 0)) for s in snaps)
        with self._lock:
            self._timeline.append(sample)

    # ---- end -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Tell every worker to close its connections now, without waiting (``stop`` reaps)."""
        if self._final is None:
            self._sample()
            self._set.request_stop()

    def stop(self, timeout: float = 2.0) -> ClientStats:
        """Close every connection, reap the workers; the counters as they were at the stop."""
        if self._final is not None:
            return self._final
        self._sample()
        self._set.stop(timeout)
        final = self._aggregate(self._set.snapshot())
        self._final = final
        return final

    def __enter__(self) -> ClientPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_close_extra(snaps: list[ClientSnapshot]) -> ServerCloses:
    """What the server did to connections after their handshake, summed over workers:
    ``lifetimes`` (the log-bucket histogram of connections it closed, bucket k holding
    [2^(k-1), 2^k) ms), ``messages`` (its first bytes: [text, seen, then closed], merged by
    text, most seen first; "" is "other messages"), ``icmp`` ({"icmp 3/13": n}) and
    ``unacked`` (``--send``: first messages never acknowledged). Absent keys: nothing seen."""

    tally = CloseTally()
    for s in snaps:
        tally.add(
            s.get("life") or (), s.get("msgs") or (), s.get("icmp") or {}, s.get("unacked", 0)
        )
    out: ServerCloses = {}
    if any(tally.life):
        out["lifetimes"] = tally.life
    if tally.msgs:
        out["messages"] = [[t, n, c] for t, n, c in tally.ranked()]
    if tally.icmp:
        out["icmp"] = tally.icmp
    if tally.unacked:
        out["unacked"] = tally.unacked
    return out
