"""conncap.analysis: pure functions over timelines, table-tested without a socket."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from result_docs import result_of, sample
from result_docs import timeline as tl

from conncap import analysis
from conncap.analysis import CeilingEvidence, Fit, Knee
from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.result import Sample, load_result

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"


# --- slope ------------------------------------------------------------------------------------


def test_slope_of_an_exact_line() -> None:
    fit = analysis.slope([0, 1, 2, 3], [5, 13, 21, 29])
    assert fit == Fit(slope=8.0, intercept=5.0, r2=1.0, n=4)


def test_slope_of_noisy_points_reports_r2_below_one() -> None:
    rng = random.Random(3)
    xs = [float(x) for x in range(100)]
    ys = [4000 * x + 1e6 + rng.gauss(0, 20_000) for x in xs]
    fit = analysis.slope(xs, ys)
    assert fit.slope == pytest.approx(4000, rel=0.05)
    assert 0.9 < fit.r2 < 1.0
    assert fit.n == 100


@pytest.mark.parametrize(
    ("xs", "ys", "message"),
    [
        ([1.0], [2.0], "at least 2 points"),
        ([3, 3, 3], [1, 2, 3], "distinct"),
        ([1, 2], [1], "length"),
    ],
)
def test_slope_refuses_what_it_cannot_fit(xs: list[float], ys: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analysis.slope(xs, ys)


# --- memory per connection --------------------------------------------------------------------


def _ramp_with_noisy_flat_parts() -> list[Sample]:
    """held: 10 flat samples at 0, a ramp to 5,000 in 50 samples, a 20-sample plateau. Memory:
    8,000 B per connection on the ramp, but it drifts by MBs where held does not change."""
    held = [0.0] * 10 + [100.0 * i for i in range(1, 51)] + [5000.0] * 20
    mem = []
    for i, h in enumerate(held):
        drift = 3_000_000 * i if h in (0.0, 5000.0) and i not in (9, 59) else 0
        mem.append(50_000_000 + 8000 * h + drift)
    return tl(held, kernel_bytes=mem)


def test_memory_per_connection_fits_only_the_ramp() -> None:
    timeline = _ramp_with_noisy_flat_parts()
    fit = analysis.memory_per_connection(timeline, "kernel_bytes")
    assert fit is not None
    assert fit.slope == pytest.approx(8000)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.n == 51  # the last flat sample and the 50 ramp samples
    naive = analysis.slope(
        [float(s.held) for s in timeline], [s.figure("kernel_bytes") or 0.0 for s in timeline]
    ).slope
    assert abs(naive - 8000) > 1000  # a fit over every sample would be wrong


def test_memory_per_connection_picks_the_widest_ramp_after_a_teardown() -> None:
    held = [0, 1000, 2000, 3000, 3000, 0, 0, 500, 1000, 1000]
    # memory freed by the teardown stays in the slab caches; the second ramp reuses it
    mem = [0, 8e6, 16e6, 24e6, 24e6, 24e6, 24e6, 24e6, 24.5e6, 24.5e6]
    fit = analysis.memory_per_connection(tl(held, kernel_bytes=mem), "kernel_bytes")
    assert fit is not None and fit.slope == pytest.approx(8000) and fit.n == 4


def test_memory_per_connection_skips_samples_without_the_figure() -> None:
    held = [0, 100, 200, 300, 400, 500, 600]
    mem = [0, 1e5, 2e5, None, None, None, 6e5]
    fit = analysis.memory_per_connection(tl(held, kernel_bytes=mem), "kernel_bytes")
    assert fit is not None and fit.slope == pytest.approx(1000)
    assert fit.n == 4  # 0, 100, 200, 600


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"held": None}, "timeline[1].held: expected an integer, got null"),
        ({"held": "400"}, 'timeline[1].held: expected an integer, got "400"'),
        ({"kernel_bytes": math.nan}, "timeline[1].kernel_bytes: expected an integer, got nan"),
    ],
)
def test_garbage_in_a_timeline_is_refused_before_the_analysis(
    bad: dict[str, Any], words: str
) -> None:
    """The analysis reads typed samples: a damaged figure is the loader's one-line error."""
    with pytest.raises(UsageError, match=re.escape(words)):
        result_of(timeline=[sample(), sample(t=0.1, **bad)])


def test_memory_per_connection_sums_keys_and_needs_points() -> None:
    held = [0, 100, 200, 300]
    timeline = tl(held, a=[0, 100, 200, 300], b=[0, 200, 400, 600])
    fit = analysis.memory_per_connection(timeline, ("a", "b"))
    assert fit is not None and fit.slope == pytest.approx(3.0)
    assert analysis.memory_per_connection(timeline, "absent") is None
    assert analysis.memory_per_connection(tl([0, 100], a=[0, 1]), "a") is None  # 2 points
    assert analysis.memory_per_connection(tl([5, 5, 5, 5], a=[1, 2, 3, 4]), "a") is None


@pytest.mark.parametrize(
    ("available", "guard", "per_conn", "held", "expected"),
    [
        (1_000_000, 0.0, 1000, 0, 1000),
        (1_000_000, 0.1, 1000, 0, 900),
        (1_000_000, 0.1, 1000, 500, 1400),
        (12.3 * 2**30, 0.1, 8.1 * 1024, 0, 1_433_053),
        (0, 0.1, 1000, 300, 300),
    ],
)
def test_extrapolate_memory_ceiling(
    available: float, guard: float, per_conn: float, held: int, expected: int
) -> None:
    assert analysis.extrapolate_memory_ceiling(available, guard, per_conn, held) == expected


@pytest.mark.parametrize(("guard", "per_conn"), [(0.1, 0), (0.1, -5), (1.0, 100), (-0.1, 100)])
def test_extrapolate_refuses_nonsense(guard: float, per_conn: float) -> None:
    with pytest.raises(ValueError):
        analysis.extrapolate_memory_ceiling(1e9, guard, per_conn, 0)


def test_memory_report_builds_the_result_memory_object() -> None:
    held = [0.0, 0.0] + [1000.0 * i for i in range(1, 11)] + [10_000.0] * 3
    timeline = tl(
        held,
        kernel_bytes=[1e8 + 8000 * h for h in held],
        user_bytes_client=[3e7 + 100 * h for h in held],
        user_bytes_server=[2e7 + 150 * h for h in held],
        mem_available=[1e10 - 8250 * h for h in held],
    )
    mem = analysis.memory_report(timeline, guard_fraction=0.1, kernel_source="slabinfo")
    assert mem.kernel_bytes_per_conn == 8000
    assert mem.user_bytes_per_conn_client == 100
    assert mem.user_bytes_per_conn_server == 150
    assert mem.user_bytes_per_conn == 250
    assert mem.samples == 11
    assert mem.kernel_source == "slabinfo"
    available = 1e10 - 8250 * 10_000
    assert mem.mem_available == int(available)
    assert mem.guard_bytes == int(available * 0.1)
    assert mem.extrapolated_ceiling == 10_000 + int(available * 0.9 // 8250)


def test_memory_report_without_memory_samples() -> None:
    mem = analysis.memory_report(tl([0, 10, 20, 30]), guard_fraction=0.1)
    assert mem.kernel_bytes_per_conn is None and mem.user_bytes_per_conn is None
    assert mem.extrapolated_ceiling is None and mem.samples == 0


# --- the knee ---------------------------------------------------------------------------------


def _noisy(values: list[float], amplitude: float, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, v + rng.uniform(-amplitude, amplitude)) if v else v for v in values]


KNEES: list[tuple[str, list[float], Knee | None]] = [
    ("ramp then plateau", [0, 0, 1000, 2000, 3000, 4000, 4000, 4000, 4000], Knee(0.5, 4000, 5)),
    (
        "jitter on the plateau",
        [0, 1000, 2000, 3000, 3990, 4003, 3996, 4001, 3998, 4000],
        Knee(0.4, 4000, 4),
    ),
    ("still growing at the end", [0, 1000, 2000, 3000, 4000, 5000, 6000], None),
    ("slowing but growing", [0, 1000, 2000, 3000, 3500, 3900, 4300, 4700], None),
    ("nothing held", [0, 0, 0, 0, 0], None),
    ("flat from the start", [500, 500, 500, 500, 500], None),
    ("plateau too short", [0, 1000, 2000, 3000, 3000], None),
    ("teardown after the plateau", [0, 2000, 4000, 4000, 4000, 4000, 0, 0], Knee(0.2, 4000, 2)),
    (
        "two levels: the second, higher one",
        [0, 1000, 1000, 1000, 1000, 2000, 3000, 3000, 3000, 3000],
        Knee(0.6, 3000, 6),
    ),
    ("stall that creeps slowly", [0, 3000, 6000, 9000, 9010, 9030, 9050, 9070], Knee(0.3, 9030, 3)),
]


@pytest.mark.parametrize(("label", "held", "expected"), KNEES, ids=[k[0] for k in KNEES])
def test_find_knee(label: str, held: list[float], expected: Knee | None) -> None:
    assert analysis.find_knee(tl(held)) == expected


def test_find_knee_on_a_noisy_ramp_and_plateau() -> None:
    held = [0.0] * 5 + [200.0 * i for i in range(1, 101)] + [20_000.0] * 40
    knee = analysis.find_knee(tl(_noisy(held, 60)))
    assert knee is not None
    assert 103 <= knee.index <= 105
    assert abs(knee.held - 20_000) <= 60


def test_find_knee_within_a_step_window_returns_absolute_indices() -> None:
    held = [0, 1000, 2000, 2000, 2000, 2000, 0, 500, 1000, 1000, 1000, 1000]
    assert analysis.find_knee(tl(held), start=6) == Knee(0.8, 1000, 8)
    assert analysis.find_knee(tl(held), end=6) == Knee(0.2, 2000, 2)


def test_find_knee_of_a_loaded_timeline() -> None:
    """What the loader refuses (a sample that is not an object, a ``t`` that is not a number)
    never reaches the analysis; what it keeps is analysed by index."""
    for bad in (42, sample(t="x")):
        with pytest.raises(UsageError, match=r"timeline\[1\]"):
            result_of(timeline=[sample(), bad])
    knee = analysis.find_knee(tl([0, 1000, 2000, 2000, 2000, 2000]))
    assert knee is not None and knee.held == 2000 and knee.index == 2


# --- failures ---------------------------------------------------------------------------------


def test_dominant_failure_by_errno() -> None:
    d = analysis.dominant_failure({"EADDRNOTAVAIL": 900, "ETIMEDOUT": 100, "EINTR": 0})
    assert d == analysis.Dominant("EADDRNOTAVAIL", Cause.EPHEMERAL_PORTS, 0.9, 900)


def test_dominant_failure_ties_break_by_name_and_windows_names_map() -> None:
    d = analysis.dominant_failure({"WSAENOBUFS": 5, "EMFILE": 5})
    assert d is not None and d.errno == "EMFILE" and d.cause == Cause.FILE_DESCRIPTORS
    # Modern Windows reports port exhaustion on connect() as WSAENOBUFS (the catalogue).
    assert analysis.cause_of_name("WSAENOBUFS") == Cause.EPHEMERAL_PORTS
    assert analysis.cause_of_name("NOT_AN_ERRNO") == Cause.UNKNOWN


def test_dominant_failure_of_a_timeline_uses_the_last_cumulative_counts() -> None:
    timeline = tl(
        [0, 10, 10],
        failures_by_cause=[{}, {"timeout": 1}, {"timeout": 3, "server-refused": 9}],
    )
    assert analysis.dominant_failure(timeline) == analysis.Dominant(None, "server-refused", 0.75, 9)


def test_no_failures_is_none() -> None:
    assert analysis.dominant_failure({}) is None
    assert analysis.dominant_failure({"EMFILE": 0}) is None
    assert analysis.dominant_failure(tl([0, 1])) is None


def test_failures_between_two_samples() -> None:
    timeline = tl([0, 1, 2], failures_by_cause=[{"timeout": 2}, {"timeout": 5}, {"timeout": 9}])
    assert analysis.failures_between(timeline, 0, 2) == {"timeout": 7}
    assert analysis.failures_between(timeline, 2, 2) == {}


# --- attribution ------------------------------------------------------------------------------

ATTRIBUTIONS: list[tuple[str, CeilingEvidence, str, str, str]] = [
    (
        "ports exhausted",
        CeilingEvidence(client_failures={"EADDRNOTAVAIL": 500, "ETIMEDOUT": 3}),
        Cause.EPHEMERAL_PORTS,
        "client",
        "EADDRNOTAVAIL ×500",
    ),
    (
        "client out of descriptors",
        CeilingEvidence(client_failures={"EMFILE": 40}, listen_overflows=10),
        Cause.FILE_DESCRIPTORS,
        "client",
        "EMFILE",
    ),
    (
        "system file table",
        CeilingEvidence(client_failures={"ENFILE": 4}),
        Cause.SYSTEM_FILE_TABLE,
        "client",
        "fs.file-max",
    ),
    (
        "kernel refuses memory",
        CeilingEvidence(client_failures={"ENOBUFS": 7, "ENOMEM": 2}),
        Cause.MEMORY,
        "client",
        "ENOBUFS",
    ),
    (
        "timeouts + server accept EMFILE: the server's descriptors",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 300},
            server_errors={"file-descriptors": 1200},
            listen_overflows=5000,
            client_held=24_087,
            server_held=19_990,
        ),
        Cause.FILE_DESCRIPTORS,
        "server",
        "server held 19,990 < client held 24,087",
    ),
    (
        "a stall without failures + server EMFILE",
        CeilingEvidence(server_errors={"file-descriptors": 10}),
        Cause.FILE_DESCRIPTORS,
        "server",
        "stalled",
    ),
    (
        "stall + ListenOverflows: the backlog",
        CeilingEvidence(client_failures={"ETIMEDOUT": 80}, listen_overflows=900),
        Cause.SERVER_BACKLOG,
        "server",
        "ListenOverflows +900",
    ),
    (
        "conntrack drop counter",
        CeilingEvidence(client_failures={"ETIMEDOUT": 80}, conntrack_drops=77),
        Cause.CONNTRACK,
        "network",
        "dropped 77",
    ),
    (
        "conntrack table full through a NAT gateway",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 80}, conntrack_count=65536, conntrack_max=65536
        ),
        Cause.CONNTRACK,
        "network",
        "nf_conntrack_count 65,536",
    ),
    (
        "SNAT port exhaustion: insert_failed = drops, table far from full",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 60},
            conntrack_drops=120,
            conntrack_insert_failed=120,
            conntrack_count=101,
            conntrack_max=262_144,
        ),
        Cause.CONNTRACK,
        "network",
        "the NAT gateway's source ports for this destination are used up (SNAT port "
        "exhaustion: conntrack insert_failed 120, table 101 of 262,144); ETIMEDOUT ×60",
    ),
    (
        "SNAT port exhaustion, table size not read",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 6}, conntrack_drops=9, conntrack_insert_failed=9
        ),
        Cause.CONNTRACK,
        "network",
        "(SNAT port exhaustion: conntrack insert_failed 9, table size not measured)",
    ),
    (
        "table full: drops, no insert_failed, count = max",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 80},
            conntrack_drops=500,
            conntrack_insert_failed=0,
            conntrack_count=65_536,
            conntrack_max=65_536,
        ),
        Cause.CONNTRACK,
        "network",
        "the conntrack table is full (nf_conntrack_count 65,536 of nf_conntrack_max 65,536, "
        "dropped 500 packets); ETIMEDOUT ×80",
    ),
    (
        "table full read a moment late, early_drop: the table, even with a few insert_failed",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 80},
            conntrack_drops=400,
            conntrack_insert_failed=300,
            conntrack_early_drop=40,
            conntrack_count=65_100,
            conntrack_max=65_536,
        ),
        Cause.CONNTRACK,
        "network",
        "the conntrack table is full (nf_conntrack_count 65,100 of nf_conntrack_max 65,536, "
        "dropped 400 packets, early_drop evicted 40 entries)",
    ),
    (
        "drops far from a full table, insert_failed not read: not called full",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 80},
            conntrack_drops=50,
            conntrack_count=1_000,
            conntrack_max=262_144,
        ),
        Cause.CONNTRACK,
        "network",
        "conntrack dropped 50 packets (table 1,000 of 262,144, not full: new entries clashed",
    ),
    (
        "drops that are neither: said as measured",
        CeilingEvidence(
            client_failures={"ETIMEDOUT": 80},
            conntrack_drops=50,
            conntrack_insert_failed=3,
            conntrack_count=1_000,
            conntrack_max=262_144,
        ),
        Cause.CONNTRACK,
        "network",
        "conntrack dropped 50 packets (table 1,000 of 262,144, not full; insert_failed 3)",
    ),
    (
        "a table that reached its size but stopped nothing is not blamed",
        CeilingEvidence(
            server_errors={}, conntrack_early_drop=5, conntrack_count=10, conntrack_max=10
        ),
        Cause.UNKNOWN,
        "unknown",
        "without failures",
    ),
    (
        "conntrack full but nothing failed is not blamed",
        CeilingEvidence(conntrack_count=10, conntrack_max=10),
        Cause.UNKNOWN,
        "unknown",
        "without failures",
    ),
    (
        "socket memory aborts",
        CeilingEvidence(client_failures={"ECONNRESET": 5}, abort_on_memory=12),
        Cause.MEMORY,
        "host",
        "TCPAbortOnMemory +12",
    ),
    (
        "refused",
        CeilingEvidence(client_failures={"ECONNREFUSED": 9}),
        Cause.SERVER_REFUSED,
        "server",
        "ECONNREFUSED ×9",
    ),
    (
        "reset by the server",
        CeilingEvidence(client_failures={"ECONNRESET": 9}),
        Cause.SERVER_CLOSED,
        "server",
        "reset",
    ),
    (
        "timeouts alone",
        CeilingEvidence(client_failures={"ETIMEDOUT": 9}),
        Cause.TIMEOUT,
        "network",
        "no server-side counter",
    ),
    (
        "unreachable",
        CeilingEvidence(client_failures={"EHOSTUNREACH": 2}),
        Cause.NETWORK,
        "network",
        "unreachable",
    ),
    (
        "the memory guard stopped the run",
        CeilingEvidence(client_failures={"ETIMEDOUT": 1}, stop_reason="memory-guard"),
        Cause.MEMORY,
        "host",
        "memory guard",
    ),
    (
        "only causes known (a step window)",
        CeilingEvidence(client_failures_by_cause={"ephemeral-ports": 30, "timeout": 10}),
        Cause.EPHEMERAL_PORTS,
        "client",
        "ephemeral-ports ×30 (75%",
    ),
    (
        "nothing at all",
        CeilingEvidence(),
        Cause.UNKNOWN,
        "unknown",
        "without failures",
    ),
]


@pytest.mark.parametrize(
    ("label", "evidence", "cause", "side", "words"), ATTRIBUTIONS, ids=[a[0] for a in ATTRIBUTIONS]
)
def test_attribute(
    label: str, evidence: CeilingEvidence, cause: str, side: str, words: str
) -> None:
    got = analysis.attribute(evidence)
    assert (got.cause, got.side) == (cause, side)
    assert words in got.evidence
    assert "\n" not in got.evidence
    # the two conntrack limits are never named together, and a drop alone is not "table full"
    assert not ("SNAT" in got.evidence and "is full" in got.evidence)
    assert "table full" not in got.evidence


def test_evidence_from_a_result_and_its_steps() -> None:
    result = load_result(FIXTURES / "run_loopback.json")
    whole = analysis.attribute(analysis.evidence_from_result(result))
    assert (whole.cause, whole.side) == (Cause.EPHEMERAL_PORTS, "client")
    times = [s.t for s in result.timeline]
    first = next(i for i, t in enumerate(times) if t >= result.steps[1].t_start)
    second = analysis.evidence_from_result(result, start=first)
    assert second.listen_overflows and second.listen_overflows > 0
    assert second.client_failures_by_cause == {"timeout": 2100}
    assert second.server_errors == {"file-descriptors": 9000}
    got = analysis.attribute(second)
    assert (got.cause, got.side) == (Cause.FILE_DESCRIPTORS, "server")


def test_evidence_from_a_timeline_reads_the_conntrack_counters_of_a_window() -> None:
    """Growth over the window for drop, insert_failed and early_drop; levels at its end."""
    timeline = tl(
        [0, 50, 100, 100, 100],
        conntrack_drops=[7, 7, 7, 40, 67],
        conntrack_insert_failed=[7, 7, 7, 40, 67],
        conntrack_count=[1, 51, 101, 101, 101],
        conntrack_max=[262_144] * 5,
        failures_by_cause=[{}, {}, {}, {"timeout": 10}, {"timeout": 30}],
    )
    result = dataclasses.replace(result_of(established_peak=100), timeline=tuple(timeline))
    ev = analysis.evidence_from_result(result, start=2)
    assert (ev.conntrack_drops, ev.conntrack_insert_failed) == (60, 60)
    assert ev.conntrack_early_drop is None
    assert (ev.conntrack_count, ev.conntrack_max) == (101, 262_144)
    got = analysis.attribute(ev)
    assert got.cause == Cause.CONNTRACK
    assert "SNAT port exhaustion: conntrack insert_failed 60, table 101 of 262,144" in got.evidence
