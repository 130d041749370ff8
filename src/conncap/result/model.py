"""The result document ``conncap.result/2`` as typed, immutable values.

One class per object of docs/result-schema.md. ``codec.from_json`` builds them (and checks
every field once, so readers never re-validate) and ``codec.to_json`` writes them. Fields that
a command does not write are None or empty. The few parts owned by another schema (the plan,
the limits document, the topology, the flags, what a scenario observed) stay JSON, under the
named aliases below.

:meth:`Ceiling.none` and :meth:`Ceiling.reached_at` are the one place a ``ceiling`` object is
made: the knob, the advice and the Windows line always come from the catalogue.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from conncap import catalogue
from conncap import latency as lat
from conncap.result.server import ServerCloses, ServerFigures, TargetSide

#: Any JSON value, as ``json.loads`` returns it (objects as mappings, arrays as lists).
JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | Mapping[str, JsonValue] | None"
JsonObject: TypeAlias = Mapping[str, JsonValue]

# The escape hatches: parts whose schema another module owns. Kept as JSON, named for what
# they hold.
#: ``plan``: ``OpenPlan.to_json`` (open, run, a run's step), ``{scenario, settings}`` (a
#: scenario), ``{clients: [...]}`` (a scenario's step).
PlanJson: TypeAlias = JsonObject
#: ``limits`` / ``server_limits``: a ``conncap.limits/1`` document (docs/limits-schema.md).
LimitsJson: TypeAlias = JsonObject
#: ``topology``: the namespaces and addresses of a scenario or of ``run --isolated``.
TopologyJson: TypeAlias = JsonObject
#: ``config``: ``RunConfig.to_json``, the flags of ``conncap run``.
ConfigJson: TypeAlias = JsonObject
#: ``spec``: ``StepSpec.to_json`` (name, title, host, ports, source_ips).
SpecJson: TypeAlias = JsonObject
#: ``observed``: what a scenario step read with the system's tools (``ss``, fd tables, ...).
ObservedJson: TypeAlias = JsonObject
#: ``churn``: the churn run of ``open --lifetime`` (``engine.results.churn_json``; the
#: "churn object" of docs/result-schema.md).
ChurnJson: TypeAlias = JsonObject
#: ``nodes[].limits``: what a cluster node's agent read of its limits (``port_range``,
#: ``nofile``, ``mem_available``, ``files_open``, ``files_max``; docs/cluster.md).
NodeLimitsJson: TypeAlias = JsonObject
#: ``nodes[].ray_cost``: Ray's footprint on a cluster node (``listeners_in_range``, ``ports``,
#: ``object_store_bytes``, ``agent_fds``; docs/cluster.md).
RayCostJson: TypeAlias = JsonObject

SCHEMA_V1 = "conncap.result/1"
SCHEMA_V2 = "conncap.result/2"

Command = Literal["open", "run", "scenario"]
COMMANDS: tuple[Command, ...] = ("open", "run", "scenario")

#: Whose limit a ceiling is. The catalogue's sides (client, server, network) plus two that
#: ``analysis.attribute`` gives a scenario step: ``host`` (memory both ends share, conncap's
#: own memory guard) and ``unknown`` (nothing explained the stall).
Side = Literal["client", "server", "network", "host", "unknown"]
#: How sure a ceiling's reading is: ``certain`` (the evidence names it: the client's own errno,
#: the server's words, an ICMP code, a full queue or descriptor table read on this host) or
#: ``likely`` (the most likely reading of what the client saw: a timeout behind which a firewall,
#: a full SYN queue or a lost route look the same).
Certainty = Literal["certain", "likely"]
CERTAINTIES: tuple[Certainty, ...] = ("certain", "likely")
SIDES: tuple[Side, ...] = ("client", "server", "network", "host", "unknown")

ExpectationKind = Literal["check", "note"]
EXPECTATION_KINDS: tuple[ExpectationKind, ...] = ("check", "note")


@dataclass(frozen=True, slots=True)
class Host:
    """The machine that measured: ``host``."""

    hostname: str | None = None
    os: str | None = None
    kernel: str | None = None
    cpu_count: int | None = None


@dataclass(frozen=True, slots=True)
class Ceiling:
    """What stopped connections from growing, whose limit it is and how to raise it.

    ``count``: connections held when it was hit; ``side``: whose limit; ``errno``/``op``: the
    error and the call that returned it; ``knob``/``advice``/``windows``: from the catalogue;
    ``evidence``: one line, what showed it. ``server_held``: what the server held then
    (``run``); ``step``: the step that reached it (``run``'s top-level ceiling)."""

    reached: bool
    count: int | None
    cause: str | None
    side: Side | None
    errno: str | None
    op: str | None
    knob: str | None
    advice: tuple[str, ...]
    windows: str | None
    evidence: str | None
    server_held: int | None = None
    step: str | None = None
    certainty: Certainty | None = None

    @classmethod
    def none(cls) -> Ceiling:
        """No ceiling was reached."""
        return cls(False, None, None, None, None, None, None, (), None, None)

    @classmethod
    def reached_at(
        cls,
        *,
        count: int | None,
        cause: str,
        side: Side,
        errno: str | None = None,
        op: str | None = None,
        evidence: str | None = None,
        server_held: int | None = None,
        step: str | None = None,
        os_name: str | None = None,
        certainty: Certainty | None = None,
    ) -> Ceiling:
        """A reached ceiling with the catalogue's knob, advice and Windows line for ``cause`` on
        ``os_name`` (default: this OS). A cause the catalogue does not know has no advice."""
        knob, commands, windows = advice_for(cause, os_name)
        return cls(
            True,
            count,
            cause,
            side,
            errno,
            op,
            knob,
            commands,
            windows,
            evidence,
            server_held,
            step,
            certainty,
        )

    def at_step(self, name: str | None) -> Ceiling:
        """This ceiling, naming the step that reached it."""
        return dataclasses.replace(self, step=name)

    @property
    def known_cause(self) -> catalogue.Cause | None:
        """``cause`` as a catalogue id (None: none, or one this version does not know)."""
        try:
            return catalogue.Cause(self.cause) if self.cause is not None else None
        except ValueError:
            return None


def advice_for(
    cause: str, os_name: str | None = None
) -> tuple[str | None, tuple[str, ...], str | None]:
    """``(knob, commands, windows line)`` from ``catalogue.advice`` (empty for an unknown cause
    or OS)."""
    try:
        a = catalogue.advice(catalogue.Cause(cause), os_name or sys.platform)
    except (KeyError, ValueError):
        return None, (), None
    return a.knob or None, tuple(a.commands), a.windows or None


@dataclass(frozen=True, slots=True)
class Bound:
    """One limit's verdict in a prediction: at most ``count`` connections (None: unknown)."""

    cause: str
    count: int | None
    detail: str
    estimate: bool
    knob: str | None = None


@dataclass(frozen=True, slots=True)
class PredictionSide:
    """One side's predicted ceiling (``prediction.client`` / ``prediction.server``)."""

    side: str
    count: int | None
    cause: str | None
    estimate: bool | None = None
    bounds: tuple[Bound, ...] = ()


@dataclass(frozen=True, slots=True)
class SingleProcess:
    """``prediction.single_process`` (``run``): one client process's descriptor bound."""

    count: int
    cause: str
    detail: str
    binds_first: bool


@dataclass(frozen=True, slots=True)
class Prediction:
    """The ceiling model's answer as stored (``conncap.model.to_json``). ``count`` None and a
    ``reason``: the model could not answer. ``line`` and ``single_process``: ``run``'s steps."""

    count: int | None = None
    cause: str | None = None
    side: str | None = None
    estimate: bool | None = None
    bounds: tuple[Bound, ...] = ()
    client: PredictionSide | None = None
    server: PredictionSide | None = None
    notes: tuple[str, ...] = ()
    line: str | None = None
    single_process: SingleProcess | None = None
    reason: str | None = None

    @classmethod
    def unknown(cls, reason: str) -> Prediction:
        return cls(reason=reason)


@dataclass(frozen=True, slots=True)
class Sample:
    """One timeline sample. ``t``: seconds since the start; ``failures`` and
    ``failures_by_cause`` are cumulative; kernel counters (``listen_*``, ``syn_retrans``,
    ``tcp_abort_on_memory``, ``conntrack_drops``/``insert_failed``, ``syncookies_*``) are
    growth since the first sample. Keys this version does not know are kept in ``extra``."""

    t: float
    held: int
    failures: int
    rate: float
    failures_by_cause: Mapping[str, int]
    step: str | None = None
    phase: str | None = None
    established: int | None = None
    server_held: int | None = None
    server_accepted: int | None = None
    server_errors: Mapping[str, int] | None = None
    server_curr_estab: int | None = None
    kernel_bytes: int | None = None
    slab_bytes: int | None = None
    sock_inuse: int | None = None
    sock_tw: int | None = None
    sock_mem_bytes: int | None = None
    user_bytes_client: int | None = None
    user_bytes_server: int | None = None
    mem_available: int | None = None
    listen_overflows: int | None = None
    listen_drops: int | None = None
    syn_retrans: int | None = None
    tcp_abort_on_memory: int | None = None
    syncookies_sent: int | None = None
    syncookies_recv: int | None = None
    conntrack_count: int | None = None
    conntrack_max: int | None = None
    conntrack_drops: int | None = None
    conntrack_insert_failed: int | None = None
    time_wait: int | None = None
    closed: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    extra: Mapping[str, JsonValue] = field(default_factory=dict)

    def figure(self, key: str) -> float | None:
        """A numeric figure by its JSON key (typed or in ``extra``), None when not measured."""
        value = getattr(self, key, None) if key in SAMPLE_KEYS else self.extra.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """``latency.histogram``: ``counts[i]`` connections took less than ``bounds_ms[i]`` and at
    least ``bounds_ms[i-1]`` (0 for the first); a count beyond the last bound (``counts`` one
    longer than ``bounds_ms``) took at least the last bound. Empty buckets at the top are left
    out."""

    bounds_ms: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Latency:
    """Connect latency (``latency``, a step's ``latency``): from connect() to the epoll
    wake-up that reported the handshake complete, per established connection, in
    milliseconds (``conncap.latency`` says what is included and the resolution)."""

    count: int
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    histogram: LatencyHistogram | None = None

    @classmethod
    def of(cls, h: lat.Histogram) -> Latency | None:
        """The result's latency of a histogram (None when no connection was measured)."""
        if h.count == 0:
            return None
        s = h.summary()
        n = len(lat.trimmed(h.counts))
        bounds = tuple(round(b / 1e6, 6) for b in lat.BOUNDS_NS[:n])
        return cls(
            count=s.count,
            p50_ms=s.p50_ms,
            p90_ms=s.p90_ms,
            p99_ms=s.p99_ms,
            p999_ms=s.p999_ms,
            max_ms=s.max_ms,
            mean_ms=round(h.sum_ns / s.count / 1e6, 4) if h.sum_ns else None,
            histogram=LatencyHistogram(bounds_ms=bounds, counts=tuple(h.counts[:n])),
        )


@dataclass(frozen=True, slots=True)
class ClientFigures:
    """``client`` (``open``): the client workers' own figures."""

    workers: int | None = None
    rss_bytes: int | None = None
    established: int | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """``memory`` (``run``): bytes per connection (least-squares slopes over one step's ramp)
    and where memory binds; conncap's own guard. A figure the data cannot support is None,
    with ``kernel_reason``/``user_reason`` saying why ("not measured: ...")."""

    kernel_bytes_per_conn: int | None = None
    user_bytes_per_conn: int | None = None
    user_bytes_per_conn_client: int | None = None
    user_bytes_per_conn_server: int | None = None
    method: str | None = None
    samples: int | None = None
    kernel_r2: float | None = None
    user_r2: float | None = None
    mem_available: int | None = None
    guard_bytes: int | None = None
    extrapolated_ceiling: int | None = None
    kernel_source: str | None = None
    guard_fraction: float | None = None
    mem_available_start: int | None = None
    guard_ceiling: int | None = None
    both_ends: bool | None = None
    kernel_reason: str | None = None
    user_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """A ``run`` step's measured ceiling against its prediction."""

    predicted: int | None
    measured: int | None
    exact: bool
    matches: bool
    text: str
    difference: int | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attribution:
    """A scenario step's ``attribution`` (``analysis.attribute``)."""

    cause: str
    side: str
    evidence: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step (``steps[]``). Every step has ``name``, ``title``, ``t_start``,
    ``established_peak`` and ``ceiling``; ``run`` writes ``spec``, ``t_ramp_end``,
    ``held_before``, ``opened``, ``server_held``, ``outcome``, ``comparison``; a scenario
    ``requested``, ``held``, ``attempts``, ``failures*``, ``stop_reason``, ``attribution``,
    ``server``, ``counters``, ``observed``."""

    name: str
    title: str
    spec: SpecJson | None = None
    plan: PlanJson | None = None
    t_start: float
    t_end: float | None = None
    t_ramp_end: float | None = None
    requested: int | None = None
    held_before: int | None = None
    opened: int | None = None
    held: int | None = None
    established_peak: int
    attempts: int | None = None
    failures: Mapping[str, int] = field(default_factory=dict)
    failures_by_cause: Mapping[str, int] = field(default_factory=dict)
    server_held: int | None = None
    outcome: str | None = None
    stop_reason: str | None = None
    ceiling: Ceiling
    prediction: Prediction | None = None
    comparison: Comparison | None = None
    attribution: Attribution | None = None
    server: ServerFigures | None = None
    counters: Mapping[str, int | None] = field(default_factory=dict)
    observed: ObservedJson | None = None
    latency: Latency | None = None


@dataclass(frozen=True, slots=True)
class Expectation:
    """One expected outcome of a scenario (``expectations[]``); ``ok`` None for a note."""

    name: str
    kind: ExpectationKind
    ok: bool | None
    expected: str
    measured: str
    step: str
    why: str


@dataclass(frozen=True, slots=True)
class Scenario:
    """``scenario``: which scenario ran and whether its checks held."""

    name: str
    title: str | None = None
    shows: str | None = None
    scale: str | None = None
    passed: bool | None = None
    checks_passed: int | None = None
    checks: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One node of ``open --cluster`` (``nodes[]``): its share, what it held, what the model
    predicted for it and what stopped it. ``ceiling.count``: what this node held when it hit
    its ceiling; ``stopped_at_s``: when, and ``timeline``: its own samples, both in seconds on
    the result's time line. ``held``: its last count (a lost node's is not in the result's
    ``held_at_end``). ``clock_offset_s``: its clock less the driver's, good to
    ``clock_rtt_s / 2``."""

    node_id: str
    address: str
    hostname: str | None = None
    share: int | None = None
    held: int
    attempts: int | None = None
    prediction: Prediction
    ceiling: Ceiling
    matches_prediction: bool | None = None
    failures: Mapping[str, int] = field(default_factory=dict)
    failures_by_cause: Mapping[str, int] = field(default_factory=dict)
    limits: NodeLimitsJson | None = None
    ray_cost: RayCostJson | None = None
    clock_offset_s: float | None = None
    clock_rtt_s: float | None = None
    stopped_at_s: float | None = None
    lost: bool = False
    lost_reason: str | None = None
    error: str | None = None
    timeline: tuple[Sample, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """A whole ``conncap.result/2`` document (docs/result-schema.md). Required: ``command``,
    ``duration_s``, ``requested``, ``established_peak``, ``held_at_end``, ``failures``,
    ``ceiling``, ``prediction``, ``timeline``."""

    schema: str = SCHEMA_V2
    conncap_version: str | None = None
    command: Command
    argv: tuple[str, ...] = ()
    scenario: Scenario | None = None
    started_at: str | None = None
    duration_s: float
    host: Host | None = None
    plan: PlanJson | None = None
    config: ConfigJson | None = None
    topology: TopologyJson | None = None
    requested: int
    established_peak: int
    held_at_end: int
    attempts: int | None = None
    failures: Mapping[str, int]
    failures_by_cause: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    ceiling: Ceiling
    prediction: Prediction
    timeline: tuple[Sample, ...]
    server: ServerFigures | None = None
    client: ClientFigures | None = None
    steps: tuple[Step, ...] = ()
    nodes: tuple[Node, ...] = ()
    expectations: tuple[Expectation, ...] = ()
    memory: Memory | None = None
    latency: Latency | None = None
    churn: ChurnJson | None = None
    closes: ServerCloses | None = None
    target: TargetSide | None = None
    limits: LimitsJson | None = None
    server_limits: LimitsJson | None = None
    notes: tuple[str, ...] = ()
    probe_problems: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    summary: tuple[str, ...] = ()

    # --- what readers need, so they never re-validate ----------------------------------------

    def steps_or_self(self) -> tuple[Step, ...]:
        """The steps, or the whole result as one step (``open`` has none)."""
        if self.steps:
            return self.steps
        return (
            Step(
                name=self.command,
                title=self.command,
                t_start=self.timeline[0].t if self.timeline else 0.0,
                t_end=self.timeline[-1].t if self.timeline else None,
                established_peak=self.established_peak,
                ceiling=self.ceiling,
                prediction=self.prediction,
                plan=self.plan,
                held=self.held_at_end,
                requested=self.requested,
                attempts=self.attempts,
                failures=self.failures,
                failures_by_cause=self.failures_by_cause,
                stop_reason=self.stop_reason,
                server=self.server,
            ),
        )

    def step(self, name: str) -> Step | None:
        """The step called ``name``."""
        return next((s for s in self.steps if s.name == name), None)

    def series(self, key: str) -> list[tuple[float, float]]:
        """``(t, value)`` of a numeric timeline figure, skipping samples that lack it."""
        out: list[tuple[float, float]] = []
        for s in self.timeline:
            v = s.figure(key)
            if v is not None:
                out.append((s.t, v))
        return out

    @property
    def first_stop(self) -> Node | None:
        """``open --cluster``: the node whose ceiling came first on the result's time line
        (the smallest ``stopped_at_s`` of the nodes that reached one; ties by ``node_id``)."""
        stopped = [n for n in self.nodes if n.ceiling.reached and n.stopped_at_s is not None]
        return min(stopped, key=lambda n: (n.stopped_at_s or 0.0, n.node_id), default=None)

    @property
    def checks(self) -> Sequence[Expectation]:
        """The scenario's expectations that can fail (not the notes)."""
        return [e for e in self.expectations if e.kind == "check"]


#: The JSON keys of a sample's typed fields (everything else goes to ``extra``).
SAMPLE_KEYS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(Sample) if f.name != "extra"
)
