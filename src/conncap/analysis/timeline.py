"""Timeline analysis: which samples are the ramp, where held stopped growing (the knee), and
which failure dominated. Pure functions of data, no I/O.

A timeline is the result's samples (:class:`conncap.result.Sample`: ``t``, ``held``,
``rate``, ``failures_by_cause``, ``kernel_bytes``, ...; docs/result-schema.md), checked once by
``conncap.result.from_json``; a figure that was not measured is None and is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeAlias

from conncap import catalogue
from conncap.result import Sample

#: A result's timeline, or a window of it.
Timeline: TypeAlias = Sequence[Sample]


def positive(counts: Mapping[str, int]) -> dict[str, int]:
    """The entries of ``counts`` above zero."""
    return {k: n for k, n in counts.items() if n > 0}


def ramp_indices(timeline: Timeline, *, min_step_fraction: float = 0.002) -> list[int]:
    """Indices of the samples that belong to the ramp: both ends of every interval in which
    held rose by a meaningful amount (at least 1 and ``min_step_fraction`` of held's range).

    Flat starts and plateaus are left out (held did not change, so memory changes there say
    nothing about connections). Held falling (a teardown between steps) splits the ramps; the
    one that covered the widest range of held is returned, because slab memory freed by a
    teardown is reused by the next ramp and would bias a fit across both.
    """
    pts = [(i, float(s.held)) for i, s in enumerate(timeline)]
    if len(pts) < 2:
        return []
    values = [h for _, h in pts]
    threshold = max(1.0, min_step_fraction * (max(values) - min(values)))
    ramps: list[list[int]] = []
    current: list[int] = []
    for (i0, h0), (i1, h1) in pairwise(pts):
        if h1 - h0 >= threshold:
            if not current or current[-1] != i0:
                current.append(i0)
            current.append(i1)
        elif h0 - h1 >= threshold and current:
            ramps.append(current)
            current = []
    if current:
        ramps.append(current)
    if not ramps:
        return []
    held_at = dict(pts)

    def span(ramp: list[int]) -> float:
        hs = [held_at[i] for i in ramp]
        return max(hs) - min(hs)

    return max(ramps, key=span)


# --- the knee -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Knee:
    """Where held stopped growing: the time and timeline index of the first plateau sample, and
    the plateau's level (the median of held over it, robust to jitter)."""

    t: float
    held: int
    index: int


def find_knee(
    timeline: Timeline,
    *,
    start: int = 0,
    end: int | None = None,
    tolerance: float = 0.01,
    min_plateau_samples: int = 3,
    flat_ratio: float = 0.1,
) -> Knee | None:
    """The first sample at which held reached its plateau, or None if held never levelled off.

    The plateau is the run of samples within ``tolerance`` of the peak (at least 1 connection,
    so jitter of a few connections is ignored); it must last ``min_plateau_samples`` samples and
    grow at most ``flat_ratio`` times as fast as the second half of the ramp did. ``start`` and
    ``end`` restrict the search to one step; the index returned is into the whole timeline.
    """
    pts: list[tuple[int, float, float]] = []
    for i, s in enumerate(timeline):
        if i < start or (end is not None and i >= end):
            continue
        pts.append((i, s.t, float(s.held)))
    if len(pts) < min_plateau_samples + 1:
        return None
    peak = max(h for _, _, h in pts)
    if peak <= 0:
        return None
    tol = max(1.0, tolerance * peak)
    k = next(j for j, (_, _, h) in enumerate(pts) if h >= peak - tol)
    if k == 0:
        return None  # already at the peak when the window starts: no growth seen
    m = k
    while m + 1 < len(pts) and pts[m + 1][2] >= peak - 2 * tol:
        m += 1
    plateau = pts[k : m + 1]
    if len(plateau) < min_plateau_samples or plateau[-1][1] <= plateau[0][1]:
        return None
    _, t_k, h_k = pts[k]
    half = next((pts[j] for j in range(k - 1, -1, -1) if pts[j][2] <= h_k / 2), pts[0])
    ramp_dt = t_k - half[1]
    ramp_rate = (h_k - half[2]) / ramp_dt if ramp_dt > 0 else math.inf
    plateau_rate = (plateau[-1][2] - h_k) / (plateau[-1][1] - t_k)
    if plateau_rate > flat_ratio * ramp_rate:
        return None
    level = sorted(h for _, _, h in plateau)[len(plateau) // 2]
    return Knee(t=t_k, held=int(level), index=pts[k][0])


# --- failures -----------------------------------------------------------------------------------


def cause_of_name(name: str) -> str:
    """The catalogue cause of a failure recorded by errno name (on connect)."""
    return catalogue.cause_of_name(name)


@dataclass(frozen=True, slots=True)
class Dominant:
    """The most frequent failure: errno name (None when only causes are known), cause, share of
    all failures (0..1), count."""

    errno: str | None
    cause: str
    share: float
    count: int


def dominant_failure(failures: Mapping[str, int] | Timeline) -> Dominant | None:
    """The dominant failure of ``failures`` ({errno name: count}) or, given a timeline, of its
    last sample's cumulative ``failures_by_cause``. None when nothing failed."""
    if isinstance(failures, Mapping):
        counts = positive(failures)
        by_cause = False
    else:
        counts = positive(failures[-1].failures_by_cause) if failures else {}
        by_cause = True
    total = sum(counts.values())
    if total == 0:
        return None
    name, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if by_cause:
        return Dominant(errno=None, cause=name, share=n / total, count=n)
    return Dominant(errno=name, cause=cause_of_name(name), share=n / total, count=n)


def failures_between(timeline: Timeline, start: int, end: int) -> dict[str, int]:
    """Failures by cause that happened between samples ``start`` and ``end`` (inclusive),
    from the cumulative ``failures_by_cause``."""
    n = len(timeline)
    first = positive(timeline[start].failures_by_cause) if 0 <= start < n else {}
    last = positive(timeline[end].failures_by_cause) if 0 <= end < n else {}
    out = {c: n - first.get(c, 0) for c, n in last.items()}
    return {c: n for c, n in out.items() if n > 0}
