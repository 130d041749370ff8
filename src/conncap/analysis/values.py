"""Reading numbers from a result document that may be damaged: a value that is missing, None
or of the wrong type is "not there", never a crash. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Sample = Mapping[str, Any]
Timeline = Sequence[Sample]


def num(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and None are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def as_int(value: Any) -> int | None:
    """``value`` as an int (truncated), or None when it is not a finite number."""
    f = num(value)
    return int(f) if f is not None else None


def samples(timeline: Any) -> list[tuple[int, Sample]]:
    """(index, sample) for every sample of ``timeline`` that is a mapping."""
    if not isinstance(timeline, Sequence) or isinstance(timeline, str | bytes):
        return []
    return [(i, s) for i, s in enumerate(timeline) if isinstance(s, Mapping)]


def counts(mapping: Any) -> dict[str, int]:
    """{name: positive count} from a mapping of anything (other entries dropped)."""
    if not isinstance(mapping, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in mapping.items():
        n = as_int(v)
        if n is not None and n > 0:
            out[str(k)] = n
    return out


def obj(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}
