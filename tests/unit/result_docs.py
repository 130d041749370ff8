"""Typed results for the reader tests (analysis, summary), built from the small dicts they
write: the keys a test leaves out get the schema's defaults, and
``conncap.result.from_json`` checks the rest as ``conncap report`` would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conncap.result import SCHEMA_V2, Result, Sample, from_json, sample_from_json
from conncap.result.model import SAMPLE_KEYS

#: A sample's typed figures that are numbers, not integers.
_FLOAT_KEYS = ("t", "rate")

NO_CEILING: dict[str, Any] = {
    "reached": False,
    "count": None,
    "cause": None,
    "side": None,
    "errno": None,
    "op": None,
    "knob": None,
    "advice": [],
    "windows": None,
    "evidence": None,
}


def ceiling(**fields: Any) -> dict[str, Any]:
    """A ``ceiling`` object: ``fields`` over an unreached one."""
    return {**NO_CEILING, **fields}


def sample(**fields: Any) -> dict[str, Any]:
    """A timeline sample: ``fields`` over the required keys (t, held, failures, rate,
    failures_by_cause)."""
    return {"t": 0.0, "held": 0, "failures": 0, "rate": 0.0, "failures_by_cause": {}, **fields}


def timeline(held: list[float], dt: float = 0.1, **series: list[Any]) -> list[Sample]:
    """Samples ``dt`` apart holding ``held``; each series adds a figure to every sample
    (None: not measured, left out). The schema's integer figures are rounded."""
    out = []
    for i, h in enumerate(held):
        s = sample(t=round(i * dt, 3), held=round(h))
        for key, values in series.items():
            v = values[i]
            if isinstance(v, float) and key in SAMPLE_KEYS and key not in _FLOAT_KEYS:
                v = round(v)
            if v is not None:
                s[key] = v
        out.append(sample_from_json(s))
    return out


def result_of(**fields: Any) -> Result:
    """A :class:`Result` of ``fields`` over the required keys of a ``run`` result; the
    ceilings of the document and its steps are completed like :func:`ceiling`, and so are
    its samples."""
    doc: dict[str, Any] = {
        "schema": SCHEMA_V2,
        "command": "run",
        "duration_s": 0.0,
        "requested": 0,
        "established_peak": 0,
        "held_at_end": 0,
        "failures": {},
        "ceiling": NO_CEILING,
        "prediction": {},
        "timeline": [],
        **fields,
    }
    # what is not of the right shape is left as it is, for from_json to refuse
    if isinstance(doc["ceiling"], Mapping):
        doc["ceiling"] = ceiling(**doc["ceiling"])
    if isinstance(doc["timeline"], list):
        doc["timeline"] = [sample(**s) if isinstance(s, Mapping) else s for s in doc["timeline"]]
    if isinstance(doc.get("steps"), list):
        doc["steps"] = [
            {**st, "ceiling": ceiling(**st.get("ceiling", {}))} if isinstance(st, Mapping) else st
            for st in doc["steps"]
        ]
    return from_json(doc, source="test")
