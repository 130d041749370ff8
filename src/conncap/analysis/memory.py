"""Memory per connection: least-squares slopes of memory against connections held over a run's
ramp, and the memory ceiling they extrapolate to. Pure functions of a timeline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from conncap.analysis.timeline import Timeline, ramp_indices
from conncap.result import Memory, Sample

# --- least squares ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fit:
    """A least-squares line ``y = slope * x + intercept`` over ``n`` points."""

    slope: float
    intercept: float
    r2: float
    n: int


def slope(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Ordinary least squares of ys on xs. Raises ValueError for fewer than 2 distinct xs."""
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length ({len(xs)} and {len(ys)})")
    n = len(xs)
    if n < 2:
        raise ValueError("a fit needs at least 2 points")
    mx = math.fsum(xs) / n
    my = math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a fit needs at least 2 distinct x values")
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = math.fsum((y - my) ** 2 for y in ys)
    b = sxy / sxx
    r2 = 1.0 if syy == 0 else min(1.0, (sxy * sxy) / (sxx * syy))
    return Fit(slope=b, intercept=my - b * mx, r2=r2, n=n)


def sample_value(sample: Sample, key: str | Sequence[str]) -> float | None:
    """A sample's number under ``key``, or the sum over several keys (None if one is missing)."""
    if isinstance(key, str):
        return sample.figure(key)
    total = 0.0
    for k in key:
        v = sample.figure(k)
        if v is None:
            return None
        total += v
    return total


def memory_per_connection(
    timeline: Timeline, key: str | Sequence[str], *, min_points: int = 3
) -> Fit | None:
    """Bytes per connection: the slope of ``key`` (or the sum of several keys) against held over
    the ramp (:func:`ramp_indices`). None when fewer than ``min_points`` ramp samples have it."""
    xs: list[float] = []
    ys: list[float] = []
    for i in ramp_indices(timeline):
        y = sample_value(timeline[i], key)
        if y is not None:
            xs.append(float(timeline[i].held))
            ys.append(y)
    if len(xs) < max(2, min_points) or len(set(xs)) < 2:
        return None
    return slope(xs, ys)


def extrapolate_memory_ceiling(
    mem_available: float, guard_fraction: float, bytes_per_conn: float, held_now: int
) -> int:
    """Connections this host would hold before memory binds: those held now plus what the
    available memory, less a guard of ``guard_fraction`` of it, pays for at ``bytes_per_conn``.
    ``mem_available`` must be read while ``held_now`` connections are open."""
    if bytes_per_conn <= 0:
        raise ValueError("bytes_per_conn must be positive")
    if not 0 <= guard_fraction < 1:
        raise ValueError("guard_fraction must be in [0, 1)")
    usable = max(0.0, mem_available * (1 - guard_fraction))
    return max(0, held_now) + int(usable // bytes_per_conn)


def memory_report(
    timeline: Timeline,
    *,
    guard_fraction: float,
    kernel_source: str | None = None,
    user_method: str | None = None,
) -> Memory:
    """The result's ``memory`` from a run's timeline (figures None when not measured):
    the slopes and where memory binds with a guard of ``guard_fraction`` of MemAvailable. The
    guard's own fields (``guard_fraction``, ``guard_ceiling``, ...) are the run's to add."""
    kernel = memory_per_connection(timeline, "kernel_bytes")
    client = memory_per_connection(timeline, "user_bytes_client")
    server = memory_per_connection(timeline, "user_bytes_server")
    sides = [f for f in (client, server) if f is not None]
    user = sum(f.slope for f in sides) if sides else None
    parts = [v for v in (kernel.slope if kernel else None, user) if v is not None]
    per_conn = sum(parts) if parts else None

    peak: tuple[float, float] | None = None  # (held, mem_available) at the most held
    for s in timeline:
        h, m = float(s.held), s.mem_available
        if m is not None and (peak is None or h >= peak[0]):
            peak = (h, float(m))
    extrapolated = guard = None
    if peak is not None:
        guard = int(peak[1] * guard_fraction)
        if per_conn is not None and per_conn > 0:
            extrapolated = extrapolate_memory_ceiling(
                peak[1], guard_fraction, per_conn, int(peak[0])
            )

    def rounded(v: float | None) -> int | None:
        return round(v) if v is not None else None

    return Memory(
        kernel_bytes_per_conn=rounded(kernel.slope if kernel else None),
        user_bytes_per_conn=rounded(user),
        user_bytes_per_conn_client=rounded(client.slope if client else None),
        user_bytes_per_conn_server=rounded(server.slope if server else None),
        method="least-squares slope of bytes against connections held, over the ramp"
        + (f"; user memory as {user_method}" if user_method else ""),
        samples=kernel.n if kernel else max((f.n for f in sides), default=0),
        kernel_r2=round(kernel.r2, 4) if kernel else None,
        user_r2=round(min(f.r2 for f in sides), 4) if sides else None,
        mem_available=int(peak[1]) if peak else None,
        guard_bytes=guard,
        extrapolated_ceiling=extrapolated,
        kernel_source=kernel_source,
    )
