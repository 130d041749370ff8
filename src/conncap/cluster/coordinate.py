"""The coordination of one cluster run, without Ray: clock offsets, the barrier and common
start, polling agents for samples, stopping them, the merged timeline and the per-node
verdicts. Pure: the agents are reached through :class:`AgentSet` (Ray's edge is
``conncap.cluster.driver``; the tests pass fakes), the clock and the sleep are injected.

Times: every agent stamps its samples with its own wall clock (``t_wall``). The driver
measures each agent's offset NTP-style (``offset = agent_t - (t0 + t1) / 2`` around one call,
the round trip with the smallest ``t1 - t0`` wins) and puts every sample on its own clock,
then on the run's time line: seconds since the common start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from conncap import __version__
from conncap.errors import UsageError
from conncap.result import (
    SIDES,
    Ceiling,
    Host,
    JsonObject,
    Node,
    Prediction,
    Result,
    Sample,
    ServerFigures,
    Side,
    json_object,
    prediction_from_json,
    sample_from_json,
)

#: Seconds between two polls of the agents for new samples.
POLL_S = 0.5
#: Seconds between the barrier and the common start (every agent gets its start before it).
START_DELAY_S = 1.0
#: Round trips per agent when measuring its clock offset.
CLOCK_ROUNDS = 5
#: Seconds an agent is given to answer one call before it counts as lost.
CALL_TIMEOUT_S = 30.0


class AgentLost(Exception):
    """An agent (or its node) stopped answering: the actor died, its node died, or a call
    timed out. The run goes on without it."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    """One node of the cluster the run uses: its id (Ray's node id) and its address."""

    node_id: str
    address: str


class AgentSet(Protocol):
    """The agents of one run, one per node, reached by method name. ``call`` runs the method
    on every named node at once and returns each node's answer, or an :class:`AgentLost` in
    its place (never raises for one node)."""

    @property
    def nodes(self) -> Sequence[NodeRef]: ...

    def call(
        self, method: str, args: Mapping[str, tuple[Any, ...]], timeout: float
    ) -> dict[str, Any]: ...


# ---- clock offsets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One round trip: the driver's clock when it asked (t0) and got the answer (t1), and the
    agent's clock in between."""

    t0: float
    agent_t: float
    t1: float

    @property
    def rtt(self) -> float:
        return self.t1 - self.t0

    @property
    def offset(self) -> float:
        return self.agent_t - (self.t0 + self.t1) / 2.0


@dataclass(frozen=True, slots=True)
class Offset:
    """An agent's clock minus the driver's (seconds), good to within ``±rtt / 2``."""

    offset: float
    rtt: float

    def to_driver(self, agent_t: float) -> float:
        return agent_t - self.offset

    def to_agent(self, driver_t: float) -> float:
        return driver_t + self.offset


def estimate_offset(samples: Iterable[ClockSample]) -> Offset:
    """The offset of the round trip with the smallest delay (the least room for error)."""
    best = min(samples, key=lambda s: s.rtt, default=None)
    if best is None:
        raise ValueError("no clock samples")
    return Offset(best.offset, best.rtt)


# ---- per-node state -----------------------------------------------------------------------------


@dataclass
class NodeRun:
    """What the driver knows of one node's agent."""

    node: NodeRef
    info: dict[str, Any] = field(default_factory=dict)
    offset: Offset | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    phase: str = "new"
    ramp_over: bool = False
    final: dict[str, Any] | None = None
    lost: bool = False
    lost_why: str | None = None
    lost_at: float | None = None

    @property
    def active(self) -> bool:
        return not self.lost and self.final is None


@dataclass
class ClusterRun:
    """The run as the driver saw it: the nodes, the common start (driver clock), why it
    stopped and when."""

    nodes: list[NodeRun]
    start_at: float | None = None
    stop_reason: str = "error"
    ended_at: float | None = None
    notes: list[str] = field(default_factory=list)

    def node(self, node_id: str) -> NodeRun:
        return next(n for n in self.nodes if n.node.node_id == node_id)

    def live(self) -> list[NodeRun]:
        return [n for n in self.nodes if not n.lost]


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class Coordinator:
    """Runs the agents of one :class:`AgentSet` through info, clock, barrier, start, polling,
    hold and stop. Bounded: every call has ``call_timeout``, the ramp has ``deadline_s``
    (from the common start), and ``stop`` (Ctrl-C) ends it at the next poll."""

    agents: AgentSet
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    deadline_s: float | None = None
    hold_s: float = 0.0
    poll_s: float = POLL_S
    start_delay_s: float = START_DELAY_S
    clock_rounds: int = CLOCK_ROUNDS
    call_timeout: float = CALL_TIMEOUT_S
    on_ready: Callable[[ClusterRun], None] | None = None
    on_poll: Callable[[ClusterRun], None] | None = None
    run: ClusterRun = field(init=False)

    def __post_init__(self) -> None:
        self.run = ClusterRun([NodeRun(n) for n in self.agents.nodes])

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            self.stop.wait(seconds)

    def _lose(self, nr: NodeRun, why: object) -> None:
        if not nr.lost:
            nr.lost, nr.lost_why = True, str(why) or type(why).__name__
            nr.lost_at = self.clock()

    def _call(self, method: str, nodes: Sequence[NodeRun], *args: Any) -> dict[str, Any]:
        """Call ``method`` on ``nodes``; a node whose answer is AgentLost is marked lost and
        left out of the answers."""
        if not nodes:
            return {}
        got = self.agents.call(
            method, {nr.node.node_id: args for nr in nodes}, timeout=self.call_timeout
        )
        out: dict[str, Any] = {}
        for nr in nodes:
            ans = got.get(nr.node.node_id, AgentLost(f"no answer to {method}"))
            if isinstance(ans, BaseException):
                self._lose(nr, ans)
            else:
                out[nr.node.node_id] = ans
        return out

    def prepare(self) -> ClusterRun:
        """The barrier: every agent reports its node's limits and prediction; then each
        agent's clock offset."""
        for node_id, info in self._call("info", self.run.nodes).items():
            self.run.node(node_id).info = dict(info)
        for nr in self.run.live():
            samples: list[ClockSample] = []
            for _ in range(max(1, self.clock_rounds)):
                t0 = self.clock()
                ans = self._call("clock", [nr]).get(nr.node.node_id)
                t1 = self.clock()
                if ans is None:
                    break
                samples.append(ClockSample(t0, float(ans), t1))
            if samples and not nr.lost:
                nr.offset = estimate_offset(samples)
        for nr in self.run.live():
            nr.phase = "ready"
        if self.on_ready is not None:
            self.on_ready(self.run)
        return self.run

    def start(self) -> float:
        """The common start, ``start_delay_s`` from now on the driver's clock; each agent is
        told it on its own clock. Returns it (driver clock)."""
        at = self.clock() + self.start_delay_s
        self.run.start_at = at
        live = self.run.live()
        if live:
            got = self.agents.call(
                "start",
                {nr.node.node_id: ((nr.offset or Offset(0.0, 0.0)).to_agent(at),) for nr in live},
                timeout=self.call_timeout,
            )
            for nr in live:
                ans = got.get(nr.node.node_id, AgentLost("no answer to start"))
                if isinstance(ans, BaseException):
                    self._lose(nr, ans)
                else:
                    nr.phase = "started"
        return at

    def poll_once(self) -> None:
        """New samples from every agent still running; marks ramps over and lost agents."""
        active = [nr for nr in self.run.nodes if nr.active]
        got = self.agents.call(
            "poll", {nr.node.node_id: (nr.cursor,) for nr in active}, timeout=self.call_timeout
        )
        for nr in active:
            ans = got.get(nr.node.node_id, AgentLost("no answer to poll"))
            if isinstance(ans, BaseException):
                self._lose(nr, ans)
                continue
            nr.samples.extend(ans.get("samples") or [])
            nr.cursor = int(ans.get("cursor", nr.cursor + len(ans.get("samples") or [])))
            nr.phase = str(ans.get("phase", nr.phase))
            nr.ramp_over = bool(ans.get("ramp_over", nr.ramp_over))
            if ans.get("final") is not None:
                nr.final = dict(ans["final"])
        if self.on_poll is not None:
            self.on_poll(self.run)

    def _stop_reason(self, hold_until: float | None) -> str | None:
        if self.stop.is_set():
            return "interrupted"
        now = self.clock()
        start = self.run.start_at if self.run.start_at is not None else now
        if self.deadline_s is not None and now >= start + self.deadline_s:
            return "max-duration"
        if not any(nr.active for nr in self.run.nodes):
            return "ramp-over"
        if hold_until is not None and now >= hold_until:
            return "ramp-over"
        return None

    def watch(self) -> str:
        """Poll until every agent's ramp is over (and then ``hold_s`` more), every agent is
        lost or done, the deadline, or ``stop``. Returns why."""
        hold_until: float | None = None
        while True:
            self.poll_once()
            if hold_until is None and all(nr.ramp_over for nr in self.run.nodes if nr.active):
                hold_until = self.clock() + self.hold_s
            why = self._stop_reason(hold_until)
            if why is not None:
                return why
            self._wait(self.poll_s)

    def finish(self, reason: str) -> ClusterRun:
        """Stop every agent still running and collect its final account (and last samples)."""
        self.run.stop_reason = reason
        active = [nr for nr in self.run.nodes if nr.active]
        got = (
            self.agents.call(
                "stop",
                {nr.node.node_id: (nr.cursor, reason) for nr in active},
                timeout=self.call_timeout,
            )
            if active
            else {}
        )
        for nr in active:
            ans = got.get(nr.node.node_id, AgentLost("no answer to stop"))
            if isinstance(ans, BaseException):
                self._lose(nr, ans)
                continue
            nr.samples.extend(ans.get("samples") or [])
            nr.cursor = int(ans.get("cursor", nr.cursor))
            nr.final = dict(ans.get("final") or {})
            nr.phase = "stopped"
        self.run.ended_at = self.clock()
        return self.run

    def __call__(self) -> ClusterRun:
        """prepare, start, watch, finish; ``finish`` also runs on Ctrl-C or an error."""
        reason = "error"
        try:
            self.prepare()
            if not self.stop.is_set() and self.run.live():
                self.start()
                reason = self.watch()
            else:
                reason = "interrupted" if self.stop.is_set() else "lost"
        except KeyboardInterrupt:
            reason = "interrupted"
            self.stop.set()
            raise
        finally:
            self.finish(reason)
        return self.run


# ---- the merged timeline and the verdicts --------------------------------------------------------


def node_times(nr: NodeRun, start_at: float) -> list[dict[str, Any]]:
    """A node's samples on the run's time line: ``t`` = seconds since the common start on the
    driver's clock (the agent's ``t_wall`` less its offset), ``node`` = its id."""
    off = nr.offset or Offset(0.0, 0.0)
    out: list[dict[str, Any]] = []
    for s in nr.samples:
        t_wall = s.get("t_wall")
        if not isinstance(t_wall, (int, float)):
            continue
        row = {k: v for k, v in s.items() if k != "t_wall"}
        row["t"] = round(off.to_driver(float(t_wall)) - start_at, 3)
        row["node"] = nr.node.node_id
        out.append(row)
    return out


def merge_timeline(run: ClusterRun) -> list[dict[str, Any]]:
    """Every node's samples on one time line, in time order (ties by node)."""
    start = run.start_at if run.start_at is not None else 0.0
    rows = [row for nr in run.nodes for row in node_times(nr, start)]
    rows.sort(key=lambda r: (r["t"], r["node"]))
    return rows


def total_series(merged: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """The cluster's figures over time: at each sample's time, the sum of every node's latest
    ``held``, ``failures``, ``failures_by_cause`` and ``rate`` (a node not heard from yet
    counts 0; a lost node keeps its last)."""
    last: dict[str, Mapping[str, Any]] = {}
    out: list[Sample] = []
    for row in merged:
        last[str(row["node"])] = row
        by_cause: dict[str, int] = {}
        for r in last.values():
            for cause, n in (r.get("failures_by_cause") or {}).items():
                by_cause[str(cause)] = by_cause.get(str(cause), 0) + int(n)
        total = Sample(
            t=float(row["t"]),
            held=sum(int(r.get("held") or 0) for r in last.values()),
            failures=sum(int(r.get("failures") or 0) for r in last.values()),
            rate=round(sum(float(r.get("rate") or 0.0) for r in last.values()), 3),
            failures_by_cause=dict(sorted(by_cause.items())),
        )
        if out and out[-1].t == total.t:
            out[-1] = total
        else:
            out.append(total)
    return out


def split_count(total: int, n: int) -> list[int]:
    """``total`` split exactly over ``n`` nodes (the first ones take the remainder), as the
    engine splits a pool's count over its workers."""
    if n < 1:
        raise ValueError("at least one node")
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def stopped_at(nr: NodeRun, start_at: float) -> float | None:
    """When a node's ramp ended on the run's time line: its first sample at its final held
    count after which it never rose again (None: no ceiling)."""
    ceiling = (nr.final or {}).get("ceiling") or {}
    if not ceiling.get("reached"):
        return None
    rows = node_times(nr, start_at)
    peak = max((int(r.get("held") or 0) for r in rows), default=0)
    return next((float(r["t"]) for r in rows if int(r.get("held") or 0) >= peak), None)


# ---- the result ---------------------------------------------------------------------------------


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _counts(v: object) -> dict[str, int]:
    if not isinstance(v, Mapping):
        return {}
    return {str(k): int(n) for k, n in sorted(v.items()) if _int(n) is not None}


def _json_part(v: object, what: str) -> JsonObject | None:
    """A free-form part the agent sent (its limits, Ray's cost), or None when it has none or
    it is not JSON."""
    if not isinstance(v, Mapping) or not v:
        return None
    try:
        return json_object(v, what)
    except ValueError:
        return None


def _prediction(info: Mapping[str, Any]) -> Prediction:
    """The node's prediction as its agent sent it (empty when it sent none)."""
    p = info.get("prediction")
    if not isinstance(p, Mapping) or not p:
        return Prediction()
    keep = {k: v for k, v in p.items() if k in ("count", "cause", "side", "bounds", "reason")}
    try:
        return prediction_from_json(keep, source="the agent's prediction")
    except UsageError as exc:
        return Prediction.unknown(str(exc))


def _side(v: object) -> Side:
    return next((s for s in SIDES if s == v), "unknown")


def _ceiling(final: Mapping[str, Any], os_name: str | None) -> Ceiling:
    """The node's verdict, rebuilt with the one ceiling builder (the catalogue's advice for
    the node's OS)."""
    c = final.get("ceiling") or {}
    if not c.get("reached"):
        return Ceiling.none()
    return Ceiling.reached_at(
        count=_int(c.get("count")),
        cause=_str(c.get("cause")) or "unknown",
        side=_side(c.get("side")),
        errno=_str(c.get("errno")),
        op=_str(c.get("op")),
        evidence=_str(c.get("evidence")),
        os_name=os_name,
    )


def node_timeline(nr: NodeRun, start_at: float) -> tuple[Sample, ...]:
    """A node's own samples on the run's time line (a sample the codec refuses is left out:
    the agent is conncap's, so that would be a bug, not a reason to lose the run)."""
    out: list[Sample] = []
    for row in node_times(nr, start_at):
        doc = {"failures": 0, "rate": 0.0, "failures_by_cause": {}}
        doc.update({k: v for k, v in row.items() if k != "node" and v is not None})
        try:
            out.append(sample_from_json(doc, source=f"node {nr.node.node_id}"))
        except UsageError:
            continue
    return tuple(out)


def node_result(nr: NodeRun, start_at: float) -> Node:
    """One node's verdict: what it held, what the model said, what stopped it."""
    info = nr.info
    final = nr.final or {}
    last = nr.samples[-1] if nr.samples else {}
    held = int(final.get("held", last.get("held", 0)) or 0)
    pred = _prediction(info)
    ceil = _ceiling(final, _str(info.get("os")))
    match: bool | None = None
    if pred.count is not None and ceil.reached:
        match = ceil.count == pred.count and ceil.cause == pred.cause
    off = nr.offset
    return Node(
        node_id=nr.node.node_id,
        address=nr.node.address,
        hostname=_str(info.get("hostname")),
        share=_int(info.get("share")),
        held=held,
        attempts=_int(final.get("attempts")),
        prediction=pred,
        ceiling=ceil,
        matches_prediction=match,
        failures=_counts(final.get("failures")),
        failures_by_cause=_counts(final.get("failures_by_cause") or last.get("failures_by_cause")),
        limits=_json_part(info.get("limits"), "limits"),
        ray_cost=_json_part(info.get("ray_cost"), "ray_cost"),
        clock_offset_s=round(off.offset, 6) if off else None,
        clock_rtt_s=round(off.rtt, 6) if off else None,
        stopped_at_s=stopped_at(nr, start_at),
        lost=nr.lost,
        lost_reason=nr.lost_why,
        error=_str(final.get("error")),
        timeline=node_timeline(nr, start_at),
    )


def cluster_ceiling(nodes: Sequence[Node], held: int) -> Ceiling:
    """The cluster's ceiling. Reached when any node (not lost) reached one: the cluster then
    held less than it asked for. Its cause, side, errno and op are the verdict most of those
    nodes reached, a tie going to the verdict of the node that stopped first; ``count`` is
    what the whole cluster held at the end; ``evidence`` names every node's count and
    cause."""
    reached = [n for n in nodes if n.ceiling.reached and not n.lost]
    if not reached:
        return Ceiling.none()
    order = sorted(
        reached, key=lambda n: (n.stopped_at_s is None, n.stopped_at_s or 0.0, n.node_id)
    )

    def verdict(n: Node) -> tuple[str | None, str | None, str | None]:
        return (n.ceiling.cause, n.ceiling.side, n.ceiling.errno)

    votes = Counter(verdict(n) for n in order)
    most = max(votes.values())
    lead = next(n for n in order if votes[verdict(n)] == most)
    evidence = f"{len(reached)} of {len(nodes)} nodes reached a ceiling: " + "; ".join(
        f"{n.address} held {n.held:,} "
        f"({'lost' if n.lost else n.ceiling.cause if n.ceiling.reached else 'no ceiling'})"
        for n in nodes
    )
    return dataclasses.replace(lead.ceiling, count=held, evidence=evidence)


def cluster_prediction(nodes: Sequence[Node]) -> Prediction:
    """The sum of the nodes' predictions, when every node has one (its cause and side when
    every node's agree)."""
    if not nodes:
        return Prediction.unknown("no node ran")
    missing = [n.address for n in nodes if n.prediction.count is None]
    if missing:
        return Prediction.unknown(f"no prediction for {', '.join(missing)}")
    causes = {n.prediction.cause for n in nodes}
    sides = {n.prediction.side for n in nodes}
    return Prediction(
        count=sum(n.prediction.count or 0 for n in nodes),
        cause=causes.pop() if len(causes) == 1 else None,
        side=sides.pop() if len(sides) == 1 else None,
        notes=(f"the sum of the {len(nodes)} nodes' predictions",),
    )


def cluster_result(
    run: ClusterRun,
    *,
    requested: int,
    address: str,
    plan: Mapping[str, Any] | None = None,
    server_held: int | None = None,
    host: Host | None = None,
    notes: Sequence[str] = (),
) -> Result:
    """The one place the cluster's result is built (docs/cluster.md): an ``open`` result
    whose ``nodes`` hold each node's verdict and timeline, whose ``timeline`` is the cluster's
    total, and whose ``summary`` is what the terminal prints. ``plan``: what was asked (the
    cluster's address and node count are added); ``server_held``: what the target held,
    when the caller knows (a conncap server); ``host``: the driver's machine."""
    start = run.start_at if run.start_at is not None else 0.0
    nodes = tuple(node_result(nr, start) for nr in run.nodes)
    timeline = tuple(total_series(merge_timeline(run)))
    held = sum(n.held for n in nodes if not n.lost)
    failures: Counter[str] = Counter()
    by_cause: Counter[str] = Counter()
    for n in nodes:
        failures.update(n.failures)
        by_cause.update(n.failures_by_cause)
    attempts = [n.attempts for n in nodes]
    ok = any(not n.lost and n.error is None for n in nodes)
    result = Result(
        conncap_version=__version__,
        command="open",
        started_at=dt.datetime.fromtimestamp(run.start_at, dt.UTC).isoformat(
            timespec="milliseconds"
        )
        if run.start_at is not None
        else None,
        duration_s=round((run.ended_at or start) - start, 3) if run.start_at else 0.0,
        host=host,
        plan=json_object(
            {"cluster": address, "nodes": len(nodes), "count": requested, **(plan or {})}, "plan"
        ),
        requested=requested,
        established_peak=max([held, *(s.held for s in timeline)]),
        held_at_end=held,
        attempts=sum(a or 0 for a in attempts) if all(a is not None for a in attempts) else None,
        failures=dict(sorted(failures.items())),
        failures_by_cause=dict(sorted(by_cause.items())),
        stop_reason=run.stop_reason,
        ceiling=cluster_ceiling(nodes, held),
        prediction=cluster_prediction(nodes),
        timeline=timeline,
        server=ServerFigures(held=server_held) if server_held is not None else None,
        nodes=nodes,
        notes=(*run.notes, *notes),
        error=None if ok else "no node finished: every one was lost or failed",
    )
    return dataclasses.replace(result, summary=tuple(verdict_lines(result)))


# ---- what the terminal shows ---------------------------------------------------------------------


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "?" if v is None else str(v)


def node_table(run: ClusterRun) -> list[list[str]]:
    """The table printed before the start: one row per node (header first)."""
    rows = [
        [
            "node",
            "address",
            "port range",
            "nofile",
            "workers",
            "share",
            "predicted",
            "cause",
            "listeners in range",
            "clock offset",
        ]
    ]
    for nr in run.nodes:
        info = nr.info
        lim = info.get("limits") or {}
        pr = lim.get("port_range")
        pred = _prediction(info)
        off = nr.offset
        rows.append(
            [
                nr.node.node_id[:8],
                nr.node.address,
                f"{pr[0]}-{pr[1]}" if pr else "?",
                _n(lim.get("nofile")),
                _n(info.get("workers")),
                _n(info.get("share")),
                "lost" if nr.lost else _n(pred.count),
                str(nr.lost_why) if nr.lost else str(pred.cause),
                _n((info.get("ray_cost") or {}).get("listeners_in_range")),
                f"{off.offset * 1000:+.1f} ms (rtt {off.rtt * 1000:.1f})" if off else "?",
            ]
        )
    return rows


def verdict_lines(result: Result) -> list[str]:
    """The verdict in words: per node, the total, which node stopped first and why."""
    lines: list[str] = []
    for n in result.nodes:
        c, p = n.ceiling, n.prediction
        head = f"node {n.node_id[:8]} ({n.address})"
        if n.lost:
            lines.append(f"{head}: LOST ({n.lost_reason}), last held {_n(n.held)}")
            continue
        if n.error:
            lines.append(f"{head}: failed: {n.error}")
            continue
        if c.reached:
            mark = {True: "= model", False: "≠ model", None: ""}[n.matches_prediction]
            lines.append(
                f"{head}: held {_n(n.held)}, stopped by {c.cause} ({c.side}, "
                f"{c.errno}); predicted {_n(p.count)} ({p.cause}) {mark}".rstrip()
            )
        else:
            lines.append(
                f"{head}: held {_n(n.held)} of its share {_n(n.share)}, no ceiling; "
                f"predicted {_n(p.count)} ({p.cause})"
            )
    total = f"total held {_n(result.held_at_end)} of {_n(result.requested)} requested"
    if result.prediction.count is not None:
        total += f" (predicted ceiling {_n(result.prediction.count)})"
    if result.server is not None and result.server.held is not None:
        total += f"; the server holds {_n(result.server.held)}"
    lines.append(total + f"; stopped by {result.stop_reason}")
    fs = result.first_stop
    if fs is not None:
        c = fs.ceiling
        lines.append(
            f"first to stop: node {fs.node_id[:8]} ({fs.address}) at {fs.stopped_at_s or 0.0:.2f}"
            f" s, {_n(c.count)} held: {c.cause} ({c.side}, {c.errno})"
        )
    lost = [n.node_id[:8] for n in result.nodes if n.lost]
    if lost:
        lines.append(f"lost: {', '.join(lost)}")
    return lines
