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


# --- judging a fit -------------------------------------------------------------------------------

#: A fit whose r² is below this is noise, not a figure (docs/report.md, "Memory per connection").
MIN_R2 = 0.9
#: Fewest ramp samples a figure is fitted from.
MIN_SAMPLES = 3
#: Fewest connections held must rise by over the fitted ramp.
MIN_HELD_SPAN = 100

#: The timeline keys of each figure (user memory sums the client's and the server's).
KERNEL_KEYS: tuple[str, ...] = ("kernel_bytes",)
USER_KEYS: tuple[str, ...] = ("user_bytes_client", "user_bytes_server")


@dataclass(frozen=True, slots=True)
class MemoryFit:
    """One figure of memory per connection and its quality: the fit over ``indices`` (the
    timeline samples of one step's ramp), and ``reason`` ("not measured: why, and what would
    measure it") when the data cannot support the figure. ``bytes_per_conn`` is the slope only
    when it stands; ``fit`` is kept either way, so its r² is the one every reader shows."""

    keys: tuple[str, ...]
    indices: tuple[int, ...]
    fit: Fit | None
    reason: str | None

    @property
    def bytes_per_conn(self) -> float | None:
        return self.fit.slope if self.fit is not None and self.reason is None else None

    @property
    def r2(self) -> float | None:
        return round(self.fit.r2, 4) if self.fit is not None else None


def step_ramp_indices(timeline: Timeline) -> list[int]:
    """The samples of one step's ramp: :func:`ramp_indices` within each step (a run of samples
    with the same ``step``), the one covering the widest range of held. A fit never crosses a
    step: a new step starts worker processes, a step in memory that no connection caused."""
    groups: list[list[int]] = []
    for i, s in enumerate(timeline):
        if groups and timeline[groups[-1][0]].step == s.step:
            groups[-1].append(i)
        else:
            groups.append([i])
    best: list[int] = []
    best_span = -1.0
    for group in groups:
        ramp = [group[j] for j in ramp_indices([timeline[i] for i in group])]
        if not ramp:
            continue
        hs = [float(timeline[i].held) for i in ramp]
        if max(hs) - min(hs) > best_span:
            best, best_span = ramp, max(hs) - min(hs)
    return best


def _present(timeline: Timeline, keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(k for k in keys if any(s.figure(k) is not None for s in timeline))


def fit_memory(timeline: Timeline, keys: Sequence[str], what: str) -> MemoryFit:
    """The bytes-per-connection fit of the sum of ``keys`` (those the timeline has) over one
    step's ramp, judged: fewer than :data:`MIN_SAMPLES` samples, held rising by less than
    :data:`MIN_HELD_SPAN`, a slope below 0 (or 0 from a line that moved) or an r² below
    :data:`MIN_R2` is "not measured". Memory that did not move at all while held rose is a
    measured 0 B per connection (conncap's workers allocate their tables at start)."""
    present = _present(timeline, keys)
    if not present:
        return MemoryFit((), (), None, f"not measured: this run did not sample {what} memory")
    xs: list[float] = []
    ys: list[float] = []
    used: list[int] = []
    for i in step_ramp_indices(timeline):
        y = sample_value(timeline[i], present)
        if y is not None:
            xs.append(float(timeline[i].held))
            ys.append(y)
            used.append(i)
    longer = "a longer ramp (a larger --count, or a lower --rate) measures it"
    if len(xs) < MIN_SAMPLES or len(set(xs)) < 2:
        return MemoryFit(
            present,
            tuple(used),
            None,
            f"not measured: {len(xs)} samples of {what} memory on the ramp, "
            f"at least {MIN_SAMPLES} needed; {longer}",
        )
    fit = slope(xs, ys)
    span = max(xs) - min(xs)
    reason = None
    if span < MIN_HELD_SPAN:
        reason = (
            f"not measured: held rose by only {span:,.0f} connections over the ramp "
            f"(at least {MIN_HELD_SPAN:,} needed); {longer}"
        )
    elif fit.slope < 0 or (fit.slope == 0 and len(set(ys)) > 1):
        reason = (
            f"not measured: {what} memory did not grow with connections "
            f"({fit.slope:,.0f} B per connection, r² {fit.r2:.3f}): something else "
            f"({'other processes on this host' if what == 'kernel' else 'the allocator'}) "
            f"moved it more than the connections did over {fit.n} ramp samples; {longer}"
        )
    elif fit.r2 < MIN_R2:
        reason = (
            f"not measured: {what} memory is not a line in connections held "
            f"(r² {fit.r2:.3f}, below {MIN_R2}); {longer}"
            + (", on a quiet host" if what == "kernel" else "")
        )
    return MemoryFit(present, tuple(used), fit, reason)


def memory_fits(timeline: Timeline) -> dict[str, MemoryFit]:
    """The kernel and the user figure of memory per connection (``"kernel"``, ``"user"``): the
    one place a figure is fitted and judged; the report draws and quotes these."""
    return {
        "kernel": fit_memory(timeline, KERNEL_KEYS, "kernel"),
        "user": fit_memory(timeline, USER_KEYS, "user"),
    }


def memory_report(
    timeline: Timeline,
    *,
    guard_fraction: float,
    kernel_source: str | None = None,
    user_method: str | None = None,
) -> Memory:
    """The result's ``memory`` from a run's timeline: each figure with its r², or None and
    the reason it is not measured (:func:`fit_memory`), and where memory binds with a guard of
    ``guard_fraction`` of MemAvailable (only from a measured kernel figure: kernel memory is
    most of a connection's cost). The guard's own fields are the run's to add."""
    fits = memory_fits(timeline)
    kernel, user = fits["kernel"], fits["user"]
    client = server = None
    if user.bytes_per_conn is not None and len(user.keys) == 2:
        # each side over the same samples as the sum, so the two add up to the user figure
        sides = []
        for key in user.keys:
            xs: list[float] = []
            ys: list[float] = []
            for i in user.indices:
                y = timeline[i].figure(key)
                if y is not None:
                    xs.append(float(timeline[i].held))
                    ys.append(y)
            sides.append(slope(xs, ys).slope if len(set(xs)) >= 2 else None)
        client, server = sides
    elif user.bytes_per_conn is not None:
        client = user.bytes_per_conn if user.keys == ("user_bytes_client",) else None
        server = user.bytes_per_conn if user.keys == ("user_bytes_server",) else None
    per_conn = sum(v for v in (kernel.bytes_per_conn, user.bytes_per_conn) if v is not None)

    peak: tuple[float, float] | None = None  # (held, mem_available) at the most held
    for s in timeline:
        h, m = float(s.held), s.mem_available
        if m is not None and (peak is None or h >= peak[0]):
            peak = (h, float(m))
    extrapolated = guard = None
    if peak is not None:
        guard = int(peak[1] * guard_fraction)
        if kernel.bytes_per_conn is not None and per_conn > 0:
            extrapolated = extrapolate_memory_ceiling(
                peak[1], guard_fraction, per_conn, int(peak[0])
            )

    def rounded(v: float | None) -> int | None:
        return round(v) if v is not None else None

    return Memory(
        kernel_bytes_per_conn=rounded(kernel.bytes_per_conn),
        user_bytes_per_conn=rounded(user.bytes_per_conn),
        user_bytes_per_conn_client=rounded(client),
        user_bytes_per_conn_server=rounded(server),
        method="least-squares slope of bytes against connections held, over one step's ramp"
        + (f"; user memory as {user_method}" if user_method else ""),
        samples=kernel.fit.n if kernel.fit else (user.fit.n if user.fit else 0),
        kernel_r2=kernel.r2,
        user_r2=user.r2,
        mem_available=int(peak[1]) if peak else None,
        guard_bytes=guard,
        extrapolated_ceiling=extrapolated,
        kernel_source=kernel_source,
        kernel_reason=kernel.reason,
        user_reason=user.reason,
    )
