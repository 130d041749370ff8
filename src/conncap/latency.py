"""Connect latency as a fixed log-bucket histogram: bucket bounds, merge, difference and
percentiles. Pure: counts in, numbers out.

What is measured (by the client workers, ``engine/connector.py``): for each connection, the
time from just before ``connect()`` to the epoll wake-up that reports it writable, i.e. the
kernel's handshake plus the wait until the worker polls again (a worker polls after each batch
of at most 128 connects, so on loopback, where the handshake completes inside ``connect()``,
that wait dominates). Time spent queued behind ``--rate`` is not included: the clock starts
when the connect is issued. Failed and timed-out connects are not counted.

Buckets: bucket 0 holds [0, 10 µs); bucket ``i`` (1..``OCTAVES * PER_OCTAVE``) holds
[10 µs · 2^((i-1)/4), 10 µs · 2^(i/4)): four per octave, each 19 % wider than the one below,
up to 10 µs · 2^20 ≈ 10.5 s; the last bucket holds everything above (overflow). A worker
keeps one ``array('Q')`` of :data:`BUCKETS` counts and reports it cumulatively; the parent
adds the workers' (:func:`merge`) and subtracts two readings for an interval (:func:`diff`).

Percentiles (:func:`percentile`): the rank ``q · count`` (nearest-rank, at least 1) is located
in its bucket and interpolated linearly between the bucket's bounds (the overflow bucket ends
at the largest value seen), then clamped to the largest value seen. So a percentile is exact
to within one bucket width (19 % of the value).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The lower bound of bucket 1, in nanoseconds (10 µs).
BASE_NS = 10_000
#: Buckets per doubling.
PER_OCTAVE = 4
#: Doublings covered above :data:`BASE_NS` (10 µs · 2^20 ≈ 10.5 s).
OCTAVES = 20
#: The upper bounds of buckets 0 .. N-2 in nanoseconds (integers, rounded); the last bucket
#: (index N-1) is the overflow, unbounded above.
BOUNDS_NS: tuple[int, ...] = tuple(
    round(BASE_NS * 2 ** (i / PER_OCTAVE)) for i in range(OCTAVES * PER_OCTAVE + 1)
)
#: Counts per histogram: bucket 0 (below 10 µs), 80 log buckets, the overflow.
BUCKETS = len(BOUNDS_NS) + 1
#: How much wider each bucket is than the one below (the resolution, relative).
RATIO = 2 ** (1 / PER_OCTAVE)
#: The percentiles a summary gives, by name.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p999", 0.999),
)


def bucket_of(ns: int) -> int:
    """The bucket of a duration in nanoseconds (negative durations count as 0)."""
    return bisect.bisect_right(BOUNDS_NS, ns)


def lower_ns(i: int) -> int:
    """Bucket ``i``'s lower bound in nanoseconds."""
    return 0 if i <= 0 else BOUNDS_NS[min(i, len(BOUNDS_NS)) - 1]


def upper_ns(i: int) -> int | None:
    """Bucket ``i``'s upper bound in nanoseconds (None: the overflow bucket)."""
    return BOUNDS_NS[i] if i < len(BOUNDS_NS) else None


def empty() -> list[int]:
    return [0] * BUCKETS


def trimmed(counts: Sequence[int]) -> list[int]:
    """``counts`` without trailing zeros (what a worker sends)."""
    n = len(counts)
    while n and not counts[n - 1]:
        n -= 1
    return list(counts[:n])


def merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    """The bucket-wise sum of histograms (each may be shorter: missing buckets are 0)."""
    out = empty()
    for h in histograms:
        if len(h) > BUCKETS:
            raise ValueError(f"a histogram has {len(h)} buckets, at most {BUCKETS}")
        for i, n in enumerate(h):
            out[i] += int(n)
    return out


def diff(now: Sequence[int], before: Sequence[int]) -> list[int]:
    """What was added between two cumulative readings (a bucket that went down, because a
    worker's counts left the sum, counts as 0)."""
    out = empty()
    for i in range(BUCKETS):
        a = int(now[i]) if i < len(now) else 0
        b = int(before[i]) if i < len(before) else 0
        out[i] = max(0, a - b)
    return out


def percentile(counts: Sequence[int], q: float, max_ns: int | None = None) -> float | None:
    """The ``q`` quantile (0 < q <= 1) in nanoseconds, interpolated within its bucket (see the
    module docstring); None for an empty histogram. ``max_ns``: the largest value seen, which
    bounds the result and closes the overflow bucket."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], not {q}")
    total = sum(counts)
    if total <= 0:
        return None
    rank = max(1.0, q * total)
    seen = 0
    for i, n in enumerate(counts):
        if n <= 0:
            continue
        if seen + n >= rank:
            lo = lower_ns(i)
            hi = upper_ns(i)
            if hi is None:
                hi = max(lo, max_ns) if max_ns is not None else lo
            value = lo + (hi - lo) * (rank - seen) / n
            return min(value, float(max_ns)) if max_ns is not None else value
        seen += n
    return None  # unreachable: the ranks add up to total


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bucket (:data:`BUCKETS` of them), the sum and the largest value in ns."""

    counts: tuple[int, ...] = (0,) * BUCKETS
    sum_ns: int = 0
    max_ns: int = 0

    @property
    def count(self) -> int:
        return sum(self.counts)

    @classmethod
    def of(cls, counts: Sequence[int], sum_ns: int = 0, max_ns: int = 0) -> Histogram:
        """From a worker's (possibly trimmed) counts."""
        return cls(tuple(merge([counts])), int(sum_ns), int(max_ns))

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple(merge([self.counts, other.counts])),
            self.sum_ns + other.sum_ns,
            max(self.max_ns, other.max_ns),
        )

    def since(self, before: Histogram) -> Histogram:
        """What was added since ``before`` (an earlier reading). The max is the whole run's:
        an interval's own largest value is not known."""
        return Histogram(
            tuple(diff(self.counts, before.counts)),
            max(0, self.sum_ns - before.sum_ns),
            self.max_ns,
        )

    def percentile_ns(self, q: float) -> float | None:
        return percentile(self.counts, q, self.max_ns or None)

    def summary(self) -> Summary:
        return summarize(self.counts, self.max_ns or None)


def merge_all(histograms: Iterable[Histogram]) -> Histogram:
    out = Histogram()
    for h in histograms:
        out = out + h
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    """A histogram's count, percentiles and maximum in milliseconds (None: no connection)."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 4)


def summarize(counts: Sequence[int], max_ns: int | None = None) -> Summary:
    """Count, p50/p90/p99/p999 and max of a histogram (``max_ns``: the largest value seen; the
    max is then exact, else the upper bound of the highest non-empty bucket)."""
    total = sum(counts)
    if max_ns is None and total:
        top = max(i for i, n in enumerate(counts) if n)
        max_ns = upper_ns(top) or lower_ns(top)
    p = {name: _ms(percentile(counts, q, max_ns)) for name, q in QUANTILES}
    return Summary(
        count=total,
        p50_ms=p["p50"],
        p90_ms=p["p90"],
        p99_ms=p["p99"],
        p999_ms=p["p999"],
        max_ms=_ms(max_ns) if total else None,
    )


def bounds_seconds() -> list[float]:
    """The upper bounds in seconds (Prometheus ``le`` labels); the overflow is ``+Inf``."""
    return [b / 1e9 for b in BOUNDS_NS]


def cumulative(counts: Sequence[int]) -> list[int]:
    """Running totals of ``counts`` (a Prometheus histogram's buckets)."""
    out: list[int] = []
    run = 0
    for n in counts:
        run += int(n)
        out.append(run)
    return out


def format_ms(ms: float) -> str:
    """Milliseconds with about three significant figures, never in exponent form."""
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"
    return f"{ms:,.0f}"


def resolution_text() -> str:
    """The resolution in words, for the report and the docs."""
    pct = (RATIO - 1) * 100
    top = BOUNDS_NS[-1] / 1e9
    return (
        f"{PER_OCTAVE} buckets per doubling from {BASE_NS / 1000:g} µs to {top:.1f} s "
        f"(each {pct:.0f} % wider than the one below); a percentile is interpolated within its "
        "bucket, so it is exact to one bucket's width"
    )
