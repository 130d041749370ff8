"""The ``conncap.result/1`` document of an ``open`` run, and the model's prediction for a plan."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import socket
import sys
from typing import TYPE_CHECKING, Any

from conncap import __version__
from conncap.catalogue import Cause
from conncap.engine import classify as cl
from conncap.engine.plan import OpenPlan
from conncap.measure import ClientTotals, Verdict
from conncap.result import SCHEMA

if TYPE_CHECKING:
    from conncap.limits import HostLimits


def predict(
    plan: OpenPlan,
    nofile: int | None = None,
    limits: HostLimits | None = None,
    *,
    server_workers: int | None = None,
    ports_in_use: int = 0,
) -> dict[str, Any]:
    """``conncap.model.predict(read_limits(), worker_plan(...))`` as JSON.

    ``limits``: a HostLimits to use instead of this host's (a namespace's, in tests).
    ``server_workers``: None when the server is not ours, then the client side's ceiling is
    the prediction (``open`` measures the client); else the model's overall ceiling. A model
    problem is a bug: it propagates (one error line, exit 1), never a "model failed" field.
    ``ports_in_use``: ports of the ephemeral range other programs hold in every pool (e.g.
    a Ray node's listeners inside the range, ``conncap.cluster``).
    """
    from conncap import model
    from conncap.limits import Fact, read_limits

    if limits is None:
        limits = read_limits()
    if nofile is not None:
        limits = dataclasses.replace(
            limits,
            nofile_soft=Fact.of(nofile, "--nofile"),
            nofile_hard=Fact.of(nofile, "--nofile"),
        )
    mplan = model.worker_plan(
        plan.destinations(),
        source_ips=len(plan.source_ips),
        client_processes=plan.workers,
        server_processes=server_workers or 1,
        port_choice=plan.bind_mode,
        linux=sys.platform.startswith("linux"),
        ports_in_use=ports_in_use,
    )
    doc = dict(model.to_json(model.predict(limits, mplan)))
    if server_workers is None:
        side = doc.get("client") or {}
        doc["count"] = side.get("count")
        doc["cause"] = side.get("cause")
        doc["side"] = "client"
        doc["bounds"] = side.get("bounds", doc.get("bounds"))
    return doc


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "os": "linux" if sys.platform.startswith("linux") else sys.platform,
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
    }


def ceiling_json(verdict: Verdict) -> dict[str, Any]:
    """The ``ceiling`` object: what stopped the ramp and how to raise it."""
    if not verdict.reached or verdict.cause is None:
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
    adv = cl.advice(Cause(verdict.cause))
    out: dict[str, Any] = {
        "reached": True,
        "count": verdict.count,
        "cause": verdict.cause,
        "side": verdict.side,
        "errno": verdict.errno,
        "op": verdict.op,
        "knob": adv.knob or None,
        "advice": list(adv.commands),
        "windows": adv.windows or None,
        "evidence": verdict.evidence,
    }
    if verdict.server_held is not None:
        out["server_held"] = verdict.server_held
    return out


def open_result(
    plan: OpenPlan,
    totals: ClientTotals,
    timeline: list[dict[str, Any]],
    *,
    verdict: Verdict,
    peak: int,
    workers: int,
    started_at: _dt.datetime,
    duration_s: float,
    stop_reason: str,
    prediction: dict[str, Any],
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The conncap.result/1 document of one ``open`` run (docs/result-schema.md)."""
    return {
        "schema": SCHEMA,
        "conncap_version": __version__,
        "command": "open",
        "started_at": started_at.astimezone(_dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "host": host_info(),
        "plan": plan.to_json(),
        "requested": plan.count,
        "established_peak": max(peak, totals.held),
        "held_at_end": totals.held,
        "attempts": totals.attempts,
        "failures": dict(sorted(totals.failures.items())),
        "failures_by_cause": dict(sorted(totals.failures_by_cause.items())),
        "dropped": dict(sorted(totals.dropped.items())),
        "stop_reason": stop_reason,
        "ceiling": ceiling_json(verdict),
        "prediction": prediction,
        "timeline": timeline,
        "client": {"workers": workers, "established": totals.established},
        "notes": notes or [],
    }
