"""``conncap report RESULT.json --csv DIR``: the timeline (``timeline.csv``: one row per
sample) and, for a run with steps, the steps (``steps.csv``: one row per step), as CSV for a
spreadsheet. Columns: every figure any sample has, in the result's order; ``failures_by_cause``
and ``server_errors`` become one column per cause (``failures:<cause>``, ``server_errors:<cause>``);
an absent figure is an empty cell."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from conncap.result import Result, Sample, part_to_json

_NESTED = {"failures_by_cause": "failures", "server_errors": "server_errors"}


def _flat(sample: Sample) -> dict[str, object]:
    doc = part_to_json(sample)
    assert isinstance(doc, Mapping)
    out: dict[str, object] = {}
    for k, v in doc.items():
        if k in _NESTED and isinstance(v, Mapping):
            for cause, n in v.items():
                out[f"{_NESTED[k]}:{cause}"] = n
        elif isinstance(v, Mapping | list):
            continue  # a free-form figure another version added: not a spreadsheet column
        else:
            out[k] = v
    return out


def _columns(rows: Sequence[Mapping[str, object]]) -> list[str]:
    cols: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def timeline_csv(result: Result) -> str:
    """The timeline as CSV text (a header, then one row per sample)."""
    rows = [_flat(s) for s in result.timeline]
    return _write(_columns(rows), rows)


def steps_csv(result: Result) -> str | None:
    """The steps as CSV text (None: the result has no steps)."""
    if not result.steps:
        return None
    rows: list[dict[str, object]] = []
    for st in result.steps:
        c, p, lat = st.ceiling, st.prediction, st.latency
        rows.append(
            {
                "name": st.name,
                "title": st.title,
                "t_start": st.t_start,
                "t_end": st.t_end,
                "established_peak": st.established_peak,
                "held": st.held,
                "opened": st.opened,
                "server_held": st.server_held,
                "ceiling_reached": c.reached,
                "ceiling_count": c.count,
                "ceiling_cause": c.cause,
                "ceiling_errno": c.errno,
                "predicted_count": p.count if p is not None else None,
                "predicted_cause": p.cause if p is not None else None,
                "latency_count": lat.count if lat is not None else None,
                "latency_p50_ms": lat.p50_ms if lat is not None else None,
                "latency_p90_ms": lat.p90_ms if lat is not None else None,
                "latency_p99_ms": lat.p99_ms if lat is not None else None,
                "latency_p999_ms": lat.p999_ms if lat is not None else None,
                "latency_max_ms": lat.max_ms if lat is not None else None,
            }
        )
    return _write(list(rows[0]), rows)


def _write(cols: list[str], rows: Sequence[Mapping[str, object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in rows:
        w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return buf.getvalue()


def write_csv(result: Result, out_dir: str | Path) -> list[Path]:
    """Write ``timeline.csv`` (and ``steps.csv``) into ``out_dir``; the paths written."""
    from conncap.report.html import write_text_atomic

    d = Path(out_dir)
    written = [write_text_atomic(d / "timeline.csv", timeline_csv(result))]
    steps = steps_csv(result)
    if steps is not None:
        written.append(write_text_atomic(d / "steps.csv", steps))
    return written
