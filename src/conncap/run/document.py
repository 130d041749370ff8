"""The pieces of the result a run builds: each step (:class:`StepRun` while it runs,
:func:`step_result` after) and the memory figures (:func:`memory_result`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from conncap import analysis
from conncap.engine import OpenPlan
from conncap.measure import MeasuredStep
from conncap.result import Ceiling, Latency, Memory, Sample, Step, json_object
from conncap.run import steps as st
from conncap.run.config import SamplerLike


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
