"""The ``conncap.result/1`` document of an ``open`` run, and the model's prediction for a plan."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

from conncap import __version__, model
from conncap.engine import classify as cl
from conncap.engine.plan import OpenPlan
from conncap.limits import Fact, read_limits
from conncap.measure import ClientTotals, Verdict
from conncap.result import (
    ClientFigures,
    Host,
    JsonValue,
    Latency,
    Prediction,
    Result,
    Sample,
    ServerCloses,
    TargetSide,
    json_object,
    prediction_from_json,
)

if TYPE_CHECKING:
    from conncap.engine.client import ClientStats
    from conncap.limits import HostLimits


def predict(
    plan: OpenPlan,
    nofile: int | None = None,
    limits: HostLimits | None = None,
    *,
    server_workers: int | None = None,
    ports_in_use: int = 0,
) -> Prediction:
    """``conncap.model.predict(read_limits(), worker_plan(...))`` as the result's prediction.

    ``limits``: a HostLimits to use instead of this host's (a namespace's, in tests).
    ``server_workers``: None when the server is not ours, then the client side's ceiling is
    the prediction (``open`` measures the client); else the model's overall ceiling. A model
    problem is a bug: it propagates (one error line, exit 1), never a "model failed" field.
    ``ports_in_use``: ports of the ephemeral range other programs hold in every pool (e.g.
    a Ray node's listeners inside the range, ``conncap.cluster``).
    """
    if limits is None:
        limits = read_limits()
    if nofile is not None:
        limits = dataclasses.replace(
            limits,
            nofile_soft=Fact.of(nofile, "--nofile"),
            nofile_hard=Fact.of(nofile, "--nofile"),
        )
    mplan = _model_plan(plan, server_workers, ports_in_use=ports_in_use)
    pred = model.predict(limits, mplan)
    doc = dict(model.to_json(pred))
    if server_workers is None:
        side = pred.client.to_json()  # doc["client"]
        doc["count"] = side.get("count")
        doc["cause"] = side.get("cause")
        doc["side"] = "client"
        doc["bounds"] = side.get("bounds", doc.get("bounds"))
    return prediction_from_json(doc)


def _model_plan(
    plan: OpenPlan, server_workers: int | None = None, *, ports_in_use: int = 0
) -> model.Plan:
    """The model's plan for conncap's client workers running ``plan``."""
    return model.worker_plan(
        plan.destinations(),
        source_ips=len(plan.source_ips),
        client_processes=plan.workers,
        server_processes=server_workers or 1,
        port_choice=plan.bind_mode,
        linux=sys.platform.startswith("linux"),
        ports_in_use=ports_in_use,
    )


def predict_churn(
    plan: OpenPlan, limits: HostLimits | None = None, *, closer: str = "client"
) -> dict[str, JsonValue]:
    """``conncap.model.churn.predict_churn`` for a churn OpenPlan as JSON (plus ``line``: the
    model's sentence). A model problem is a bug: it propagates."""
    from conncap.model import churn as ch

    if limits is None:
        limits = read_limits()
    c = ch.Churn(
        rate=float(plan.rate or 0),
        lifetime=float(plan.lifetime or 0.0),
        close=plan.close,  # type: ignore[arg-type]
        closer=closer,  # type: ignore[arg-type]
        duration=plan.duration_s,
    )
    p = ch.predict_churn(limits, _model_plan(plan), c)
    doc = p.to_json()
    doc["line"] = ch.describe(p)
    return doc


def _opening_time(timeline: Sequence[Sample], opened: int) -> float | None:
    """Seconds from go until the last connection was established (the timeline's first
    sample that shows them all)."""
    for sample in timeline:
        if (sample.established or 0) >= opened:
            return sample.t
    return timeline[-1].t if timeline else None


def step_timeline(timeline: Sequence[Sample], start: int) -> list[Sample]:
    """The samples of one step of a longer measurement (from index ``start``, the sample its
    ``begin`` took), with ``t`` and ``established`` counted from that first sample, as
    :func:`churn_json` reads a timeline of its own."""
    part = list(timeline[start:])
    if not part:
        return []
    t0, e0 = part[0].t, part[0].established or 0
    return [
        dataclasses.replace(x, t=round(x.t - t0, 3), established=(x.established or 0) - e0)
        for x in part
    ]


class ChurnRun(TypedDict):
    """The ``churn`` object of an ``open --lifetime`` result (:func:`churn_json`); the
    ``*_predicted`` values and ``prediction`` are the churn model's JSON."""

    rate: float | None
    lifetime: float | None
    close: str
    closer: JsonValue
    duration: float | None
    opened: int
    closed: int
    closed_by_peer: int
    failed: int
    achieved_rate: float | None
    time_wait_peak: int
    time_wait_at_end: int
    first_failure_s: float | None
    first_failure_errno: str | None
    stopped_by: str | None
    sustainable_rate_predicted: JsonValue
    predicted_unbounded: JsonValue
    exhausts_predicted: JsonValue
    time_to_exhaustion_predicted_s: JsonValue
    sustainable_rate_measured: float | None
    sustainable_rate_measured_basis: str
    prediction: Mapping[str, JsonValue]


def churn_json(
    plan: OpenPlan,
    stats: ClientStats,
    timeline: Sequence[Sample],
    prediction: Mapping[str, JsonValue],
) -> ChurnRun:
    """The ``churn`` object of an ``open --lifetime`` result (docs/result-schema.md).

    ``sustainable_rate_measured``: without a failure, the rate the run sustained (a lower
    bound); after a port failure, the connections opened before it (the ports the kernel
    had) ÷ how long each keeps its port (lifetime + TIME_WAIT or the reuse delay)."""
    x = stats.extra
    opened = stats.established
    t_open = _opening_time(timeline, opened)
    achieved = opened / t_open if t_open else None
    first = x.get("first_failure_s")
    hold = prediction.get("port_hold_s")
    if not isinstance(hold, int | float):
        hold = None  # the model's JSON: a number or null
    churn = prediction.get("churn")
    measured: float | None
    if first is None:
        measured = achieved
        basis = (
            f"no failure: {achieved:,.1f}/s sustained for {t_open:.1f} s (a lower bound)"
            if achieved is not None and t_open
            else "no connection was opened"
        )
    elif stats.ceiling is not None and stats.ceiling.cause in ("time-wait", "ephemeral-ports"):
        if hold:
            measured = opened / float(hold)
            basis = (
                f"{opened:,} connections opened before the ports ran out ÷ {float(hold):g} s "
                "each port stays taken (lifetime + TIME_WAIT, or the reuse delay)"
            )
        else:
            measured, basis = None, "ports ran out, but how long a port stays taken is unknown"
    else:
        measured = None
        basis = f"the run failed first with {x.get('first_failure_errno')}, not on ports"
    return {
        "rate": plan.rate,
        "lifetime": plan.lifetime,
        "close": plan.close,
        "closer": churn.get("closer", "client") if isinstance(churn, Mapping) else "client",
        "duration": plan.duration_s,
        "opened": opened,
        "closed": x.get("closed", 0),
        "closed_by_peer": stats.dropped.get(cl.EOF_NAME, 0),
        "failed": sum(stats.failures.values()),
        "achieved_rate": None if achieved is None else round(achieved, 1),
        "time_wait_peak": x.get("time_wait_peak", 0),
        "time_wait_at_end": x.get("time_wait", 0),
        "first_failure_s": first,
        "first_failure_errno": x.get("first_failure_errno"),
        "stopped_by": stats.ceiling.cause if stats.ceiling is not None else None,
        "sustainable_rate_predicted": prediction.get("sustainable_rate"),
        "predicted_unbounded": prediction.get("unbounded"),
        "exhausts_predicted": prediction.get("exhausts"),
        "time_to_exhaustion_predicted_s": prediction.get("time_to_exhaustion_s"),
        "sustainable_rate_measured": None if measured is None else round(measured, 1),
        "sustainable_rate_measured_basis": basis,
        "prediction": prediction,
    }


def host_info() -> Host:
    """The machine that measured (the result's ``host``)."""
    return Host(
        hostname=socket.gethostname(),
        os="linux" if sys.platform.startswith("linux") else sys.platform,
        kernel=platform.release(),
        cpu_count=os.cpu_count(),
    )


def started_text(started_at: _dt.datetime) -> str:
    """``started_at`` as the result writes it: ISO 8601, UTC, to the second."""
    return started_at.astimezone(_dt.UTC).isoformat(timespec="seconds")


def open_result(
    plan: OpenPlan,
    totals: ClientTotals,
    timeline: Sequence[Sample],
    *,
    verdict: Verdict,
    peak: int,
    workers: int,
    started_at: _dt.datetime,
    duration_s: float,
    stop_reason: str,
    prediction: Prediction,
    notes: Sequence[str] = (),
    churn: Mapping[str, JsonValue] | None = None,
    closes: ServerCloses | None = None,
    target: TargetSide | None = None,
    argv: Sequence[str] = (),
) -> Result:
    """The result of one ``open`` run (docs/result-schema.md); with a ``churn`` object for
    ``open --lifetime``, what the server did to established connections (``closes``) and its
    side read on this host (``target``)."""
    return Result(
        conncap_version=__version__,
        command="open",
        argv=tuple(argv),
        started_at=started_text(started_at),
        duration_s=round(duration_s, 3),
        host=host_info(),
        plan=json_object(plan.to_json()),
        requested=plan.count,
        established_peak=max(peak, totals.held),
        held_at_end=totals.held,
        attempts=totals.attempts,
        failures=dict(sorted(totals.failures.items())),
        failures_by_cause=dict(sorted(totals.failures_by_cause.items())),
        dropped=dict(sorted(totals.dropped.items())),
        stop_reason=stop_reason,
        ceiling=verdict.ceiling(),
        prediction=prediction,
        timeline=tuple(timeline),
        client=ClientFigures(workers=workers, established=totals.established),
        latency=Latency.of(totals.latency),
        notes=tuple(notes),
        churn=churn,
        closes=closes,
        target=target,
    )
