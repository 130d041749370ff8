"""Connect latency histograms (conncap.latency): bucket bounds, merge, difference and
percentiles, with expectations worked out by hand; the result's ``latency`` object round-trips
through the codec."""

from __future__ import annotations

import json

import pytest

from conncap import latency as L
from conncap.errors import UsageError
from conncap.result import (
    Ceiling,
    Latency,
    LatencyHistogram,
    Prediction,
    Result,
    Sample,
    Step,
    from_json,
    to_json,
)


def test_bucket_bounds() -> None:
    # 10 µs * 2^(i/4): 10000, 11892 (10000 * 1.18921), 14142, 16818, 20000 ns
    assert L.BOUNDS_NS[:5] == (10_000, 11_892, 14_142, 16_818, 20_000)
    assert L.BOUNDS_NS[-1] == 10_000 * 2**20  # 10.49 s
    assert L.BUCKETS == 82  # below 10 µs, 80 log buckets, overflow


@pytest.mark.parametrize(
    ("ns", "bucket"),
    [
        (-5, 0),
        (0, 0),
        (9_999, 0),
        (10_000, 1),  # a bound belongs to the bucket above it
        (11_891, 1),
        (11_892, 2),
        (20_000, 5),
        (1_000_000, 27),  # 1 ms = 10 µs * 2^6.64: 4 * 6.64 = 26.6 -> bucket 27
        (10_000 * 2**20 - 1, 80),
        (10_000 * 2**20, 81),  # overflow
        (10**15, 81),
    ],
)
def test_bucket_of(ns: int, bucket: int) -> None:
    assert L.bucket_of(ns) == bucket


def test_bucket_limits() -> None:
    assert (L.lower_ns(0), L.upper_ns(0)) == (0, 10_000)
    assert (L.lower_ns(2), L.upper_ns(2)) == (11_892, 14_142)
    assert (L.lower_ns(81), L.upper_ns(81)) == (10_000 * 2**20, None)


def test_merge_and_diff() -> None:
    a = [1, 2]
    b = [0, 3, 4]
    merged = L.merge([a, b])
    assert merged[:4] == [1, 5, 4, 0] and len(merged) == L.BUCKETS
    assert L.diff(merged, a)[:3] == [0, 3, 4]
    # a bucket that went down (a worker left the sum) counts as nothing, not negative
    assert L.diff([1, 0], [0, 2])[:2] == [1, 0]
    assert L.trimmed(merged) == [1, 5, 4]
    with pytest.raises(ValueError):
        L.merge([[0] * (L.BUCKETS + 1)])


def test_percentile_interpolates_within_the_bucket() -> None:
    # 10 connections in bucket 1 ([10000, 11892) ns)
    h = [0, 10]
    # p50: rank 5 of 10 -> 10000 + 1892 * 5/10 = 10946
    assert L.percentile(h, 0.5) == pytest.approx(10_946)
    # p90: rank 9 -> 10000 + 1892 * 0.9 = 11702.8
    assert L.percentile(h, 0.9) == pytest.approx(11_702.8)
    # p100: the top of the bucket, unless the largest value seen is below it
    assert L.percentile(h, 1.0) == pytest.approx(11_892)
    assert L.percentile(h, 1.0, max_ns=11_000) == pytest.approx(11_000)


def test_percentile_across_buckets() -> None:
    # 90 below 10 µs, 10 in bucket 5 ([20000, 23784) ns)
    h = [90, 0, 0, 0, 0, 10]
    # p50: rank 50 in bucket 0 ([0, 10000)): 10000 * 50/90 = 5555.6
    assert L.percentile(h, 0.5) == pytest.approx(5_555.56, abs=0.01)
    # p90: rank 90, the last of bucket 0: its top, 10000
    assert L.percentile(h, 0.9) == pytest.approx(10_000)
    # p99: rank 99, 9th of 10 in bucket 5: 20000 + 3784 * 0.9 = 23405.6
    assert L.percentile(h, 0.99) == pytest.approx(23_405.6)
    # a tiny quantile takes rank 1 (nearest rank, at least 1): 10000 * 1/90
    assert L.percentile(h, 0.001) == pytest.approx(111.11, abs=0.01)


def test_percentile_in_the_overflow_bucket_ends_at_the_max() -> None:
    h = [0] * L.BUCKETS
    h[-1] = 2
    top = 10_000 * 2**20
    assert L.percentile(h, 0.5, max_ns=top + 1_000) == pytest.approx(top + 500)
    assert L.percentile(h, 0.5) == pytest.approx(top)  # no max: the bucket's lower bound


def test_percentile_of_nothing() -> None:
    assert L.percentile([], 0.5) is None
    assert L.percentile([0, 0], 0.99) is None
    with pytest.raises(ValueError):
        L.percentile([1], 0.0)
    s = L.summarize([])
    assert (s.count, s.p50_ms, s.max_ms) == (0, None, None)


def test_histogram_sum_since_and_summary() -> None:
    a = L.Histogram.of([0, 10], sum_ns=109_460, max_ns=11_500)
    b = L.Histogram.of([0, 0, 4], sum_ns=50_000, max_ns=13_000)
    both = a + b
    assert both.count == 14 and both.counts[:3] == (0, 10, 4)
    assert (both.sum_ns, both.max_ns) == (159_460, 13_000)
    assert both.since(a).counts[:3] == (0, 0, 4) and both.since(a).sum_ns == 50_000
    assert L.merge_all([a, b]) == both
    s = a.summary()
    # p50 10946 ns = 0.0109 ms; max exact 11500 ns
    assert (s.count, s.p50_ms, s.max_ms) == (10, 0.0109, 0.0115)
    # p999: rank 9.99 of 10 -> 10000 + 1892 * 0.999 = 11890.1, clamped to the max 11500
    assert s.p999_ms == 0.0115


def test_prometheus_helpers() -> None:
    assert L.cumulative([1, 0, 2]) == [1, 1, 3]
    assert L.bounds_seconds()[0] == pytest.approx(1e-5)
    assert "4 buckets per doubling" in L.resolution_text()


# --- the result's latency object --------------------------------------------------------------


def _result(lat: Latency | None) -> Result:
    step = Step(
        name="s1",
        title="one",
        t_start=0.0,
        established_peak=10,
        ceiling=Ceiling.none(),
        latency=lat,
    )
    return Result(
        command="run",
        argv=("conncap", "run", "--count", "10"),
        duration_s=1.0,
        requested=10,
        established_peak=10,
        held_at_end=10,
        failures={},
        ceiling=Ceiling.none(),
        prediction=Prediction.unknown("test"),
        timeline=(
            Sample(
                t=0.0,
                held=10,
                failures=0,
                rate=0.0,
                failures_by_cause={},
                latency_p50_ms=0.0109,
                latency_p99_ms=0.0118,
            ),
        ),
        steps=(step,),
        latency=lat,
    )


def test_latency_of_a_histogram() -> None:
    lat = Latency.of(L.Histogram.of([0, 10], sum_ns=109_460, max_ns=11_500))
    assert lat is not None
    assert (lat.count, lat.p50_ms, lat.max_ms, lat.mean_ms) == (10, 0.0109, 0.0115, 0.0109)
    assert lat.histogram == LatencyHistogram(bounds_ms=(0.01, 0.011892), counts=(0, 10))
    assert Latency.of(L.Histogram()) is None
    full = [0] * L.BUCKETS
    full[-1] = 1
    over = Latency.of(L.Histogram.of(full, sum_ns=11 * 10**9, max_ns=11 * 10**9))
    assert over is not None and over.histogram is not None
    assert len(over.histogram.counts) == len(over.histogram.bounds_ms) + 1  # the overflow


def test_latency_and_argv_round_trip() -> None:
    lat = Latency.of(L.Histogram.of([3, 10, 0, 1], sum_ns=150_000, max_ns=15_000))
    r = _result(lat)
    doc = json.loads(json.dumps(to_json(r)))
    assert doc["argv"] == ["conncap", "run", "--count", "10"]
    assert doc["latency"]["histogram"]["counts"] == [3, 10, 0, 1]
    assert doc["steps"][0]["latency"]["p50_ms"] == doc["latency"]["p50_ms"]
    assert doc["timeline"][0]["latency_p99_ms"] == 0.0118
    assert from_json(doc, source="mem") == r
    assert "latency" not in to_json(_result(None))


@pytest.mark.parametrize(
    ("histogram", "words"),
    [
        ({"bounds_ms": [0.01, 0.02], "counts": [1]}, "expected 2 or 3 counts"),
        ({"bounds_ms": [0.02, 0.01], "counts": [1, 1]}, "increasing order"),
        ({"bounds_ms": [0.01], "counts": [-1]}, "0 or more"),
        ({"bounds_ms": [0.01]}, "latency.histogram.counts: missing"),
    ],
)
def test_damaged_histogram_is_one_line(histogram: dict[str, object], words: str) -> None:
    doc = json.loads(json.dumps(to_json(_result(None))))
    doc["latency"] = {"count": 1, "histogram": histogram}
    with pytest.raises(UsageError, match=words):
        from_json(doc, source="x.json")
