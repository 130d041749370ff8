"""The result a run builds: each step (:class:`StepRun` while it runs, :func:`step_result`
after), the memory figures (:func:`memory_result`) and the whole document
(:func:`run_result`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from conncap import __version__, analysis
from conncap.engine import OpenPlan
from conncap.limits import HostLimits
from conncap.measure import ClientTotals, MeasuredStep
from conncap.result import (
    Ceiling,
    JsonObject,
    JsonValue,
    Latency,
    Memory,
    Prediction,
    Result,
    Sample,
    ServerCloses,
    ServerFigures,
    Step,
    TargetSide,
    json_object,
)
from conncap.run import steps as st
from conncap.run.config import IsolatedSides, RunConfig, SamplerLike


@dataclass(slots=True)
class StepRun:
    """A step while and after it runs."""

    spec: st.StepSpec
    index: int
    plan: OpenPlan | None = None
    measured: MeasuredStep | None = None
    """The loop's step (its pool holds until the run ends)."""
    prediction: st.StepPrediction | None = None
    t_start: float = 0.0
    t_end: float | None = None
    t_ramp_end: float | None = None
    i_start: int = 0
    i_end: int | None = None
    held_before: int = 0
    peak: int = 0
    outcome: str | None = None
    ceiling: Ceiling = field(default_factory=Ceiling.none)
    comparison: st.Comparison | None = None
    server_held: int | None = None
    """What the server held at the end of the ramp, once its count settled (None: not read)."""
    opened: int = 0


def step_result(s: StepRun) -> Step:
    """A step as the result's ``steps[]`` entry."""
    return Step(
        name=s.spec.name,
        title=s.spec.title,
        spec=json_object(s.spec.to_json(), "spec"),
        plan=json_object(s.plan.to_json(), "plan") if s.plan is not None else None,
        t_start=round(s.t_start, 3),
        t_end=round(s.t_end, 3) if s.t_end is not None else None,
        t_ramp_end=round(s.t_ramp_end, 3) if s.t_ramp_end is not None else None,
        held_before=s.held_before,
        opened=s.opened,
        established_peak=s.peak,
        server_held=s.server_held,
        outcome=s.outcome,
        ceiling=s.ceiling,
        prediction=s.prediction.result() if s.prediction is not None else None,
        comparison=s.comparison.result() if s.comparison is not None else None,
        latency=Latency.of(s.measured.latency()) if s.measured is not None else None,
    )


def memory_result(
    timeline: Sequence[Sample],
    sampler: SamplerLike | None,
    *,
    guard_fraction: float,
    guard_bytes: int | None,
    mem_start: int | None,
) -> Memory:
    """The ``memory`` object: the slopes over the ramp (``analysis.memory_report``, extrapolated
    with no guard: where memory binds) and conncap's own guard."""
    methods = sorted(set(sampler.user_method.values())) if sampler is not None else []
    mem = analysis.memory_report(
        timeline,
        guard_fraction=0.0,
        kernel_source=sampler.kernel_source if sampler is not None else None,
        user_method="/".join(methods) or None,
    )
    per = sum(v for v in (mem.kernel_bytes_per_conn, mem.user_bytes_per_conn) if v is not None)
    guard_ceiling = (
        int((mem_start - guard_bytes) // per)
        if per > 0 and mem_start is not None and guard_bytes is not None
        else None
    )
    return dataclasses.replace(
        mem,
        guard_fraction=guard_fraction,
        guard_bytes=guard_bytes,
        mem_available_start=mem_start,
        both_ends=True,  # client and server on this host: a connection is 2 sockets
        guard_ceiling=guard_ceiling,
    )


def run_result(
    cfg: RunConfig,
    *,
    argv: Sequence[str],
    started: _dt.datetime,
    duration: float,
    totals: ClientTotals,
    timeline: Sequence[Sample],
    steps: Sequence[StepRun],
    server_ports: Sequence[int],
    server_workers: int,
    held_at_end: int,
    stop_reason: str,
    error: str | None,
    server: ServerFigures | None,
    sampler: SamplerLike | None,
    guard_bytes: int | None,
    mem_start: int | None,
    limits: HostLimits | None,
    server_limits: HostLimits | None,
    isolated: IsolatedSides | None,
    notes: Sequence[str],
    target: TargetSide | None,
    churn: JsonObject | None = None,
) -> Result:
    """The ``conncap run`` document: the headline step's ceiling and prediction (the last
    step that reached a ceiling, else the last step), the run's totals, every step, memory,
    latency and limits, and the summary in words."""
    from conncap.engine.results import host_info, started_text
    from conncap.limits.render import limits_to_json
    from conncap.report.summary import summary_lines

    peak = max((s.held for s in timeline), default=0)
    held = [s for s in steps if s.spec.name != "churn"]  # --churn's step is not a ceiling run
    headline = next((s for s in reversed(held) if s.ceiling.reached), held[-1] if held else None)
    ceiling = headline.ceiling.at_step(headline.spec.name) if headline else Ceiling.none()
    prediction = (
        headline.prediction.result()
        if headline is not None and headline.prediction is not None
        else Prediction.unknown("no step ran")
    )
    topology = None
    if isolated is not None:
        topology = json_object({**isolated.to_json(), "lines": isolated.describe()}, "topology")
    result = Result(
        conncap_version=__version__,
        command="run",
        argv=tuple(argv),
        started_at=started_text(started),
        duration_s=round(duration, 3),
        host=host_info(),
        plan=json_object(_plan_json(cfg, server_ports, steps, server_workers), "plan"),
        config=json_object(cfg.to_json(), "config"),
        topology=topology,
        requested=cfg.count,
        established_peak=peak,
        held_at_end=held_at_end,
        attempts=totals.attempts,
        failures=dict(sorted(totals.failures.items())),
        failures_by_cause=dict(sorted(totals.failures_by_cause.items())),
        dropped=dict(sorted(totals.dropped.items())),
        stop_reason=stop_reason,
        ceiling=ceiling,
        prediction=prediction,
        timeline=tuple(timeline),
        server=server,
        steps=tuple(step_result(s) for s in steps),
        memory=memory_result(
            timeline,
            sampler,
            guard_fraction=cfg.memory_guard,
            guard_bytes=guard_bytes,
            mem_start=mem_start,
        ),
        latency=Latency.of(totals.latency),
        limits=limits_to_json(limits) if limits is not None else None,
        server_limits=(
            limits_to_json(server_limits)
            if isolated is not None and server_limits is not None
            else None
        ),
        notes=tuple(notes),
        probe_problems=dict(sampler.problems) if sampler is not None else {},
        error=error,
        closes=_closes(headline),
        target=target,
        churn=churn,
    )
    return dataclasses.replace(result, summary=tuple(summary_lines(result)))


def _plan_json(
    cfg: RunConfig, ports: Sequence[int], steps: Sequence[StepRun], server_workers: int
) -> dict[str, JsonValue]:
    held = [s for s in steps if s.spec.name != "churn"]
    last = held[-1].spec if held else None
    return {
        "targets": [f"{cfg.host}:{p}" for p in ports],
        "source_ips": list(last.source_ips) if last else [],
        "workers": sum(s.plan.workers for s in steps if s.plan is not None),
        "server_workers": server_workers,
        "count": cfg.count,
        "rate": cfg.rate,
        "hold_s": cfg.plateau_s,
        "timeout_s": cfg.timeout_s,
        "bind_mode": "kernel",
    }


def _closes(step: StepRun | None) -> ServerCloses | None:
    """What the server did to the headline step's established connections."""
    if step is None or step.measured is None or step.measured.facts is None:
        return None
    return step.measured.facts.closes
