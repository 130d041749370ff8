"""The coordination of one cluster run, without Ray: clock offsets, the barrier and common
start, polling agents for samples, stopping them. Pure: the agents are reached through
:class:`AgentSet` (Ray's edge is ``conncap.cluster.driver``; the tests pass fakes), the clock
and the sleep are injected. The merged timeline is :mod:`conncap.cluster.timeline`, the
verdicts and the result :mod:`conncap.cluster.verdict`.

Times: every agent stamps its samples with its own wall clock (``t_wall``). The driver
measures each agent's offset NTP-style (``offset = agent_t - (t0 + t1) / 2`` around one call,
the round trip with the smallest ``t1 - t0`` wins) and puts every sample on its own clock,
then on the run's time line: seconds since the common start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from conncap.cluster.messages import Final, NodeInfo, PollAnswer, SampleRow

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
        self, method: str, args: Mapping[str, tuple[object, ...]], timeout: float
    ) -> dict[str, object]: ...


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
    info: NodeInfo = field(default_factory=lambda: NodeInfo())
    offset: Offset | None = None
    samples: list[SampleRow] = field(default_factory=list)
    cursor: int = 0
    phase: str = "new"
    ramp_over: bool = False
    final: Final | None = None
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

    def _call(self, method: str, nodes: Sequence[NodeRun], *args: object) -> dict[str, object]:
        """Call ``method`` on ``nodes``; a node whose answer is AgentLost is marked lost and
        left out of the answers."""
        if not nodes:
            return {}
        got = self.agents.call(
            method, {nr.node.node_id: args for nr in nodes}, timeout=self.call_timeout
        )
        out: dict[str, object] = {}
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
            self.run.node(node_id).info = NodeInfo(**cast(NodeInfo, info))
        for nr in self.run.live():
            samples: list[ClockSample] = []
            for _ in range(max(1, self.clock_rounds)):
                t0 = self.clock()
                ans = self._call("clock", [nr]).get(nr.node.node_id)
                t1 = self.clock()
                if ans is None:
                    break
                samples.append(ClockSample(t0, float(cast(float, ans)), t1))
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
            ans = cast(PollAnswer, ans)
            nr.samples.extend(ans.get("samples") or [])
            nr.cursor = int(ans.get("cursor", nr.cursor + len(ans.get("samples") or [])))
            nr.phase = str(ans.get("phase", nr.phase))
            nr.ramp_over = bool(ans.get("ramp_over", nr.ramp_over))
            final = ans.get("final")
            if final is not None:
                nr.final = Final(**final)
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
            ans = cast(PollAnswer, ans)
            nr.samples.extend(ans.get("samples") or [])
            nr.cursor = int(ans.get("cursor", nr.cursor))
            nr.final = cast(Final, dict(ans.get("final") or {}))
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


def split_count(total: int, n: int) -> list[int]:
    """``total`` split exactly over ``n`` nodes (the first ones take the remainder), as the
    engine splits a pool's count over its workers."""
    if n < 1:
        raise ValueError("at least one node")
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]
