"""A cluster run's samples on one time line: each node's samples put on the driver's clock
(less the agent's clock offset) as seconds since the common start, merged in time order, and
the cluster's total at each sample's time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conncap.cluster.coordinate import ClusterRun, NodeRun, Offset
from conncap.cluster.messages import SampleRow
from conncap.result import JsonValue, Sample


def node_times(nr: NodeRun, start_at: float) -> list[SampleRow]:
    """A node's samples on the run's time line: ``t`` = seconds since the common start on the
    driver's clock (the agent's ``t_wall`` less its offset), ``node`` = its id."""
    off = nr.offset or Offset(0.0, 0.0)
    out: list[SampleRow] = []
    for s in nr.samples:
        t_wall = s.get("t_wall")
        if not isinstance(t_wall, (int, float)):
            continue
        row = {k: v for k, v in s.items() if k != "t_wall"}
        row["t"] = round(off.to_driver(float(t_wall)) - start_at, 3)
        row["node"] = nr.node.node_id
        out.append(row)
    return out


def merge_timeline(run: ClusterRun) -> list[SampleRow]:
    """Every node's samples on one time line, in time order (ties by node)."""
    start = run.start_at if run.start_at is not None else 0.0
    rows = [row for nr in run.nodes for row in node_times(nr, start)]
    rows.sort(key=lambda r: (_num(r["t"]), str(r["node"])))
    return rows


def total_series(merged: Sequence[Mapping[str, JsonValue]]) -> list[Sample]:
    """The cluster's figures over time: at each sample's time, the sum of every node's latest
    ``held``, ``failures``, ``failures_by_cause`` and ``rate`` (a node not heard from yet
    counts 0; a lost node keeps its last)."""
    last: dict[str, Mapping[str, JsonValue]] = {}
    out: list[Sample] = []
    for row in merged:
        last[str(row["node"])] = row
        by_cause: dict[str, int] = {}
        for r in last.values():
            causes = r.get("failures_by_cause")
            for cause, n in causes.items() if isinstance(causes, Mapping) else ():
                by_cause[str(cause)] = by_cause.get(str(cause), 0) + int(_num(n))
        total = Sample(
            t=_num(row["t"]),
            held=sum(int(_num(r.get("held"))) for r in last.values()),
            failures=sum(int(_num(r.get("failures"))) for r in last.values()),
            rate=round(sum(_num(r.get("rate")) for r in last.values()), 3),
            failures_by_cause=dict(sorted(by_cause.items())),
        )
        if out and out[-1].t == total.t:
            out[-1] = total
        else:
            out.append(total)
    return out


def stopped_at(nr: NodeRun, start_at: float) -> float | None:
    """When a node's ramp ended on the run's time line: its first sample at its final held
    count after which it never rose again (None: no ceiling)."""
    ceiling = nr.final.get("ceiling") if nr.final else None
    if not isinstance(ceiling, Mapping) or not ceiling.get("reached"):
        return None
    rows = node_times(nr, start_at)
    peak = max((int(_num(r.get("held"))) for r in rows), default=0)
    return next((_num(r["t"]) for r in rows if int(_num(r.get("held"))) >= peak), None)


def _num(v: JsonValue | None) -> float:
    """A sample's number (a figure the agent did not send, or sent as null, counts 0)."""
    return float(v) if isinstance(v, int | float) else 0.0
