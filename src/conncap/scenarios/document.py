"""The ``conncap.result/1`` document of a scenario (command ``scenario``, with ``steps``,
``expectations`` and ``timeline``), built from plain data so it is tested without a socket.
docs/result-schema.md has the common keys, docs/scenarios.md the ones added here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from conncap import __version__
from conncap.result import SCHEMA
from conncap.scenarios.expect import Expectation, passed, tally


def step_ceiling(
    reached: bool,
    held: int,
    attribution: Mapping[str, str],
    client_ceilings: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    """The ``ceiling`` object of a step: the cause is the attributed one (server-side
    evidence included), the errno the one the client's workers stopped on (most workers)."""
    if not reached:
        return {
            "reached": False,
            "count": None,
            "cause": None,
            "side": None,
            "errno": None,
            "knob": None,
            "advice": [],
            "windows": None,
            "evidence": None,
        }
    errno = op = None
    client_evidence = ""
    if client_ceilings:
        names = [c[0] for c in client_ceilings]
        errno = max(set(names), key=names.count)
        first = next(c for c in client_ceilings if c[0] == errno)
        op, client_evidence = first[1], first[2]
    cause = attribution.get("cause") or "unknown"
    knob, commands, windows = _advice(cause)
    evidence = attribution.get("evidence") or ""
    if client_evidence and client_evidence not in evidence:
        evidence = f"{evidence}; client: {client_evidence}" if evidence else client_evidence
    return {
        "reached": True,
        "count": held,
        "cause": cause,
        "side": attribution.get("side"),
        "errno": errno,
        "op": op,
        "knob": knob,
        "advice": commands,
        "windows": windows,
        "evidence": evidence,
    }


def step_line(step: Mapping[str, Any]) -> str:
    """'maxuserport-5000: client held 3,977 of 4,041, server 3,977; ceiling ephemeral-ports
    (EADDRNOTAVAIL, client)'."""
    line = f"{step.get('name')}: client held {int(step.get('held', 0)):,}"
    line += f" of {int(step.get('requested', 0)):,}"
    server = step.get("server")
    if isinstance(server, Mapping) and isinstance(server.get("held"), int):
        line += f", server {server['held']:,}"
    c = step.get("ceiling")
    if isinstance(c, Mapping) and c.get("reached"):
        errno = f"{c.get('errno')}, " if c.get("errno") else ""
        line += f"; ceiling {c.get('cause')} ({errno}{c.get('side')})"
    return line


def _advice(cause: str) -> tuple[str | None, list[str], str | None]:
    from conncap.catalogue import Cause
    from conncap.engine import classify

    try:
        a = classify.advice(Cause(cause))
    except ValueError:
        return None, [], None
    return a.knob or None, list(a.commands), a.windows or None


def _sum(maps: Sequence[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def build_document(
    *,
    scenario: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
    expectations: Sequence[Expectation],
    started_at: dt.datetime,
    duration_s: float,
    host: Mapping[str, Any],
    layout: Mapping[str, Any],
    settings: Mapping[str, Any],
    notes: Sequence[str] = (),
    headline: str | None = None,
    interrupted: bool = False,
    error: str | None = None,
) -> dict[str, Any]:
    """One scenario's result. The top-level ``ceiling`` and ``prediction`` are those of the
    ``headline`` step (default: the last one); ``requested``, ``attempts`` and ``failures``
    add up every step; ``established_peak`` is the most held at once over the timeline."""
    chosen = next((s for s in steps if s.get("name") == headline), steps[-1] if steps else None)
    held_series = [int(s.get("held", 0)) for s in timeline]
    peak = max([*held_series, *(int(s.get("established_peak", 0)) for s in steps)], default=0)
    ok, total = tally(expectations)
    all_ok = passed(expectations) and bool(steps) and not interrupted and error is None
    if interrupted:
        stop_reason = "interrupted"
    elif chosen is None or error is not None:
        stop_reason = "error"
    else:
        stop_reason = str(chosen.get("stop_reason") or "ceiling")
    failing = [e for e in expectations if e.ok is False]
    summary = [
        f"scenario {scenario.get('name')}: {ok} of {total} expectations hold"
        + (" (interrupted)" if interrupted else "")
        + (f" (stopped by an error: {error})" if error else ""),
        *(f"✗ {e.name}: expected {e.expected}, measured {e.measured}" for e in failing),
        *(step_line(s) for s in steps),
    ]
    last_server = next((s.get("server") for s in reversed(steps) if s.get("server")), None)
    return {
        "schema": SCHEMA,
        "conncap_version": __version__,
        "command": "scenario",
        "scenario": {**scenario, "passed": all_ok, "checks_passed": ok, "checks": total},
        "started_at": started_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "host": dict(host),
        "plan": {"scenario": scenario.get("name"), "settings": dict(settings)},
        "topology": dict(layout),
        "requested": sum(int(s.get("requested", 0)) for s in steps),
        "established_peak": peak,
        "held_at_end": int(chosen.get("held", 0)) if chosen else 0,
        "attempts": sum(int(s.get("attempts", 0)) for s in steps),
        "failures": _sum([s.get("failures") or {} for s in steps]),
        "failures_by_cause": _sum([s.get("failures_by_cause") or {} for s in steps]),
        "stop_reason": stop_reason,
        "ceiling": dict(chosen.get("ceiling") or {}) if chosen else {"reached": False},
        "prediction": dict(chosen.get("prediction") or {}) if chosen else {},
        "timeline": [dict(s) for s in timeline],
        "server": dict(last_server) if isinstance(last_server, Mapping) else {},
        "steps": [dict(s) for s in steps],
        "expectations": [e.to_json() for e in expectations],
        "notes": list(notes),
        "error": error,
        "summary": summary,
    }
