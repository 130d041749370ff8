"""The result of a scenario (command ``scenario``, with ``steps``, ``expectations`` and
``timeline``), built from typed parts so it is tested without a socket. docs/result-schema.md
has the common keys, docs/scenarios.md the ones added here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from conncap import __version__
from conncap.result import (
    Ceiling,
    Host,
    JsonObject,
    JsonValue,
    Node,
    Prediction,
    Result,
    Sample,
    Scenario,
    Step,
    json_object,
)
from conncap.scenarios.expect import Expectation, passed, tally


def step_line(step: Step) -> str:
    """'maxuserport-5000: client held 3,977 of 4,041, server 3,977; ceiling ephemeral-ports
    (EADDRNOTAVAIL, client)'."""
    line = f"{step.name}: client held {step.held or 0:,} of {step.requested or 0:,}"
    if step.server is not None and step.server.held is not None:
        line += f", server {step.server.held:,}"
    c = step.ceiling
    if c.reached:
        errno = f"{c.errno}, " if c.errno else ""
        line += f"; ceiling {c.cause} ({errno}{c.side})"
    return line


def _sum(maps: Sequence[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def build_result(
    *,
    scenario: Scenario,
    steps: Sequence[Step],
    timeline: Sequence[Sample],
    expectations: Sequence[Expectation],
    started_at: dt.datetime,
    duration_s: float,
    host: Host,
    layout: Mapping[str, object],
    settings: Mapping[str, object],
    notes: Sequence[str] = (),
    headline: str | None = None,
    story: Sequence[str] = (),
    interrupted: bool = False,
    error: str | None = None,
    nodes: Sequence[Node] = (),
) -> Result:
    """One scenario's result. The top-level ``ceiling`` and ``prediction`` are those of the
    ``headline`` step (default: the last one); ``requested``, ``attempts`` and ``failures``
    add up every step; ``established_peak`` is the most held at once over the timeline;
    ``nodes``: a cluster run's nodes (the ``cluster`` scenario)."""
    chosen = next((s for s in steps if s.name == headline), steps[-1] if steps else None)
    peak = max(
        [*(s.held for s in timeline), *(s.established_peak for s in steps)],
        default=0,
    )
    ok, total = tally(expectations)
    all_ok = passed(expectations) and bool(steps) and not interrupted and error is None
    if interrupted:
        stop_reason = "interrupted"
    elif chosen is None or error is not None:
        stop_reason = "error"
    else:
        stop_reason = chosen.stop_reason or "ceiling"
    failing = [e for e in expectations if e.ok is False]
    summary = [
        f"scenario {scenario.name}: {ok} of {total} expectations hold"
        + (" (interrupted)" if interrupted else "")
        + (f" (stopped by an error: {error})" if error else ""),
        *story,
        *(f"✗ {e.name}: expected {e.expected}, measured {e.measured}" for e in failing),
        *(step_line(s) for s in steps),
    ]
    last_server = next((s.server for s in reversed(steps) if s.server is not None), None)
    plan: dict[str, JsonValue] = {
        "scenario": scenario.name,
        "settings": json_object(settings, "settings"),
    }
    return Result(
        conncap_version=__version__,
        command="scenario",
        scenario=Scenario(
            name=scenario.name,
            title=scenario.title,
            shows=scenario.shows,
            scale=scenario.scale,
            passed=all_ok,
            checks_passed=ok,
            checks=total,
        ),
        started_at=started_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        duration_s=round(duration_s, 3),
        host=host,
        plan=plan,
        topology=json_object(layout, "topology"),
        requested=sum(s.requested or 0 for s in steps),
        established_peak=peak,
        held_at_end=(chosen.held or 0) if chosen else 0,
        attempts=sum(s.attempts or 0 for s in steps),
        failures=_sum([s.failures for s in steps]),
        failures_by_cause=_sum([s.failures_by_cause for s in steps]),
        stop_reason=stop_reason,
        ceiling=chosen.ceiling if chosen else Ceiling.none(),
        prediction=(chosen.prediction or Prediction()) if chosen else Prediction(),
        timeline=tuple(timeline),
        server=last_server,
        steps=tuple(steps),
        nodes=tuple(nodes),
        expectations=tuple(e.result() for e in expectations),
        notes=tuple(notes),
        error=error,
        summary=tuple(summary),
        churn=_churn_of(chosen),
    )


def _churn_of(step: Step | None) -> JsonObject | None:
    """The headline step's ``churn`` object (a churn step's ``observed["churn"]``), so that
    the report plots it as it does an ``open --lifetime`` run's."""
    churn = step.observed.get("churn") if step is not None and step.observed else None
    return churn if isinstance(churn, dict) else None
