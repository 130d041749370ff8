"""A cluster run's verdicts: each node's (what it held, what the model said, what stopped
it), the cluster's result (``cluster_result``, the one place it is built), and what the
terminal shows (the node table before the start, the verdict in words after).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

from conncap import __version__
from conncap.cluster.coordinate import ClusterRun, NodeRun
from conncap.cluster.messages import Final, NodeInfo, NodeLimits, RayCost
from conncap.cluster.timeline import merge_timeline, node_times, stopped_at, total_series
from conncap.errors import UsageError
from conncap.result import (
    SIDES,
    Ceiling,
    Host,
    JsonObject,
    JsonValue,
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


def _prediction(info: NodeInfo) -> Prediction:
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


def _ceiling(final: Final | None, os_name: str | None) -> Ceiling:
    """The node's verdict, rebuilt with the one ceiling builder (the catalogue's advice for
    the node's OS)."""
    c = final.get("ceiling") if final else None
    if not isinstance(c, Mapping) or not c.get("reached"):
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
    final = nr.final
    last = nr.samples[-1] if nr.samples else {}
    held = _int(final.get("held") if final and "held" in final else last.get("held")) or 0
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
        attempts=_int(final.get("attempts")) if final else None,
        prediction=pred,
        ceiling=ceil,
        matches_prediction=match,
        failures=_counts(final.get("failures") if final else None),
        failures_by_cause=_counts(
            (final.get("failures_by_cause") if final else None) or last.get("failures_by_cause")
        ),
        limits=_json_part(info.get("limits"), "limits"),
        ray_cost=_json_part(info.get("ray_cost"), "ray_cost"),
        clock_offset_s=round(off.offset, 6) if off else None,
        clock_rtt_s=round(off.rtt, 6) if off else None,
        stopped_at_s=stopped_at(nr, start_at),
        lost=nr.lost,
        lost_reason=nr.lost_why,
        error=_str(final.get("error")) if final else None,
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
    plan: Mapping[str, JsonValue] | None = None,
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


def _n(v: object) -> str:
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
        lim = info.get("limits") or NodeLimits()
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
                _n((info.get("ray_cost") or RayCost()).get("listeners_in_range")),
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
