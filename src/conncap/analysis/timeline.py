"""Timeline analysis: memory per connection, the knee, the dominant failure, the attribution of a
ceiling to its cause, and the summary in words. Pure functions of data, no I/O.

A timeline is the result document's list of samples (dicts with ``t``, ``held``, ``rate``,
``failures_by_cause``, ``kernel_bytes``, ...; see docs/result-schema.md). Any value may be
missing, None or of the wrong type in a damaged document: such samples are skipped, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple

from conncap import catalogue
from conncap.catalogue import Cause

Sample = Mapping[str, Any]
Timeline = Sequence[Sample]


def num(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and None are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _int(value: Any) -> int | None:
    f = num(value)
    return int(f) if f is not None else None


def _samples(timeline: Any) -> list[tuple[int, Sample]]:
    if not isinstance(timeline, Sequence) or isinstance(timeline, str | bytes):
        return []
    return [(i, s) for i, s in enumerate(timeline) if isinstance(s, Mapping)]


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


def ramp_indices(timeline: Timeline, *, min_step_fraction: float = 0.002) -> list[int]:
    """Indices of the samples that belong to the ramp: both ends of every interval in which
    held rose by a meaningful amount (at least 1 and ``min_step_fraction`` of held's range).

    Flat starts and plateaus are left out (held did not change, so memory changes there say
    nothing about connections). Held falling (a teardown between steps) splits the ramps; the
    one that covered the widest range of held is returned, because slab memory freed by a
    teardown is reused by the next ramp and would bias a fit across both.
    """
    pts = [(i, h) for i, s in _samples(timeline) if (h := num(s.get("held"))) is not None]
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


def sample_value(sample: Sample, key: str | Sequence[str]) -> float | None:
    """A sample's number under ``key``, or the sum over several keys (None if one is missing)."""
    if isinstance(key, str):
        return num(sample.get(key))
    total = 0.0
    for k in key:
        v = num(sample.get(k))
        if v is None:
            return None
        total += v
    return total


def memory_per_connection(
    timeline: Timeline, key: str | Sequence[str], *, min_points: int = 3
) -> Fit | None:
    """Bytes per connection: the slope of ``key`` (or the sum of several keys) against held over
    the ramp (:func:`ramp_indices`). None when fewer than ``min_points`` ramp samples have it."""
    items = dict(_samples(timeline))
    xs: list[float] = []
    ys: list[float] = []
    for i in ramp_indices(timeline):
        held = num(items[i].get("held"))
        y = sample_value(items[i], key)
        if held is not None and y is not None:
            xs.append(held)
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
    guard_fraction: float = 0.1,
    kernel_source: str | None = None,
    user_method: str | None = None,
) -> dict[str, Any]:
    """The result document's ``memory`` object from a run's timeline (values None when not
    measured)."""
    kernel = memory_per_connection(timeline, "kernel_bytes")
    client = memory_per_connection(timeline, "user_bytes_client")
    server = memory_per_connection(timeline, "user_bytes_server")
    sides = [f for f in (client, server) if f is not None]
    user = sum(f.slope for f in sides) if sides else None
    parts = [v for v in (kernel.slope if kernel else None, user) if v is not None]
    per_conn = sum(parts) if parts else None

    peak: tuple[float, float] | None = None  # (held, mem_available) at the most held
    for _, s in _samples(timeline):
        h, m = num(s.get("held")), num(s.get("mem_available"))
        if h is not None and m is not None and (peak is None or h >= peak[0]):
            peak = (h, m)
    extrapolated = guard = None
    if peak is not None:
        guard = int(peak[1] * guard_fraction)
        if per_conn is not None and per_conn > 0:
            extrapolated = extrapolate_memory_ceiling(
                peak[1], guard_fraction, per_conn, int(peak[0])
            )

    def rounded(v: float | None) -> int | None:
        return round(v) if v is not None else None

    return {
        "kernel_bytes_per_conn": rounded(kernel.slope if kernel else None),
        "user_bytes_per_conn": rounded(user),
        "user_bytes_per_conn_client": rounded(client.slope if client else None),
        "user_bytes_per_conn_server": rounded(server.slope if server else None),
        "method": "least-squares slope of bytes against connections held, over the ramp"
        + (f"; user memory as {user_method}" if user_method else ""),
        "samples": kernel.n if kernel else max((f.n for f in sides), default=0),
        "kernel_r2": round(kernel.r2, 4) if kernel else None,
        "user_r2": round(min(f.r2 for f in sides), 4) if sides else None,
        "mem_available": int(peak[1]) if peak else None,
        "guard_bytes": guard,
        "extrapolated_ceiling": extrapolated,
        "kernel_source": kernel_source,
    }


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
    for i, s in _samples(timeline):
        if i < start or (end is not None and i >= end):
            continue
        t, h = num(s.get("t")), num(s.get("held"))
        if t is not None and h is not None:
            pts.append((i, t, h))
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


def _counts(mapping: Any) -> dict[str, int]:
    if not isinstance(mapping, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in mapping.items():
        n = _int(v)
        if n is not None and n > 0:
            out[str(k)] = n
    return out


def dominant_failure(failures: Mapping[str, Any] | Timeline) -> Dominant | None:
    """The dominant failure of ``failures`` ({errno name: count}) or, given a timeline, of its
    last sample's cumulative ``failures_by_cause``. None when nothing failed."""
    if isinstance(failures, Mapping):
        counts = _counts(failures)
        by_cause = False
    else:
        samples = _samples(failures)
        counts = _counts(samples[-1][1].get("failures_by_cause")) if samples else {}
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
    items = dict(_samples(timeline))
    first = _counts(items[start].get("failures_by_cause")) if start in items else {}
    last = _counts(items[end].get("failures_by_cause")) if end in items else {}
    out = {c: n - first.get(c, 0) for c, n in last.items()}
    return {c: n for c, n in out.items() if n > 0}


# --- attribution --------------------------------------------------------------------------------

_CLIENT_CAUSES = frozenset(
    {
        Cause.EPHEMERAL_PORTS,
        Cause.FILE_DESCRIPTORS,
        Cause.SYSTEM_FILE_TABLE,
        Cause.MEMORY,
        Cause.PERMISSION,
    }
)
_SERVER_RESOURCE_CAUSES = (Cause.FILE_DESCRIPTORS, Cause.SYSTEM_FILE_TABLE, Cause.MEMORY)
_WHAT = {
    Cause.EPHEMERAL_PORTS: "no free local port for this destination",
    Cause.FILE_DESCRIPTORS: "the process hit its descriptor limit (ulimit -n)",
    Cause.SYSTEM_FILE_TABLE: "the system-wide file table is full (fs.file-max)",
    Cause.MEMORY: "the kernel refused socket memory",
    Cause.PERMISSION: "the operation was not permitted",
    Cause.NETWORK: "the destination was unreachable",
}


@dataclass(frozen=True, slots=True)
class CeilingEvidence:
    """What was seen while held stopped growing. Counters are growth over that window; None is
    "not measured"."""

    client_failures: Mapping[str, int] = field(default_factory=dict)  # errno name -> n
    client_failures_by_cause: Mapping[str, int] = field(default_factory=dict)  # if no errnos
    server_errors: Mapping[str, int] = field(default_factory=dict)  # cause id -> n (accept)
    client_held: int | None = None
    server_held: int | None = None
    listen_overflows: int | None = None
    listen_drops: int | None = None
    syn_retrans: int | None = None
    abort_on_memory: int | None = None
    conntrack_drops: int | None = None  # /proc/net/stat/nf_conntrack "drop"
    conntrack_insert_failed: int | None = None  # "insert_failed": the entry's tuple was taken
    conntrack_early_drop: int | None = None  # "early_drop": an entry evicted at a full table
    conntrack_count: int | None = None  # a level, not a growth
    conntrack_max: int | None = None
    stop_reason: str | None = None


class Attribution(NamedTuple):
    """Which limit set the ceiling, on which side (client, server, network, host, unknown), and
    a one-line account of the evidence."""

    cause: str
    side: str
    evidence: str


def _held_gap(ev: CeilingEvidence) -> str:
    sh, ch = ev.server_held, ev.client_held
    if sh is not None and ch is not None and sh < ch:
        return f"; server held {sh:,} < client held {ch:,}"
    return ""


#: A table at least this full counts as full. The kernel drops a new connection's packet when
#: nf_conntrack_count has reached nf_conntrack_max and early_drop found nothing to evict; a
#: count read a moment later may be a little lower (entries expire).
CONNTRACK_FULL_FRACTION = 0.95


def _conntrack_evidence(ev: CeilingEvidence, *, failed: bool) -> str | None:
    """Which conntrack limit dropped connections, or None when conntrack shows nothing.

    Two different limits grow the same "drop" counter. A **full table** (count ≈ max): new
    entries are refused (``drop``) after ``early_drop`` failed to evict an unassured one. **SNAT
    port exhaustion** (count far below max): the NAT found no free source port for the
    destination, the new entry's tuple clashes with an existing one and cannot be inserted
    (``insert_failed`` ≈ ``drop``, nf_conntrack_core.c). Raising nf_conntrack_max helps only
    the first; the second needs more NAT addresses, ports or destinations.
    """
    drops = max(ev.conntrack_drops or 0, 0)
    insert_failed = max(ev.conntrack_insert_failed or 0, 0)
    early = max(ev.conntrack_early_drop or 0, 0)
    count, cmax = ev.conntrack_count, ev.conntrack_max
    table = f"table {count:,} of {cmax:,}" if count is not None and cmax else None
    full = count is not None and bool(cmax) and count >= CONNTRACK_FULL_FRACTION * (cmax or 0)
    if insert_failed and not full and not early and 2 * insert_failed >= drops:
        return (
            "the NAT gateway's source ports for this destination are used up (SNAT port "
            f"exhaustion: conntrack insert_failed {insert_failed:,}, "
            f"{table or 'table size not measured'})"
        )
    if (full or early) and (drops or failed):  # early_drop grows only at a full table
        level = (
            f"nf_conntrack_count {count:,} of nf_conntrack_max {cmax:,}"
            if table
            else "nf_conntrack_count not measured"
        )
        what = [f"dropped {drops:,} packets"] if drops else []
        if early:
            what.append(f"early_drop evicted {early:,} entries")
        return f"the conntrack table is full ({', '.join([level, *what])})"
    if drops:
        if table is None:
            why = "table size not measured"
        elif ev.conntrack_insert_failed is None:
            why = (
                f"{table}, not full: new entries clashed with existing ones, as when a NAT's "
                "source ports run out; insert_failed not measured"
            )
        else:
            why = f"{table}, not full; insert_failed {insert_failed:,}"
        return f"conntrack dropped {drops:,} packets ({why})"
    return None


def attribute(ev: CeilingEvidence) -> Attribution:
    """Decide the cause of a ceiling from the client's failures and the server-side counters.

    Failures the client's own kernel reports (EADDRNOTAVAIL, EMFILE, ENFILE, ENOBUFS/ENOMEM)
    name the cause directly. Stalls, timeouts and refusals are symptoms: the server's accept
    errors, conntrack (a full table, or SNAT port exhaustion at a NAT gateway) or a growing
    ListenOverflows counter explain them, in that order (a server out of descriptors stops
    accepting, which fills its backlog).
    """
    if ev.stop_reason == "memory-guard":
        return Attribution(
            Cause.MEMORY,
            "host",
            "conncap stopped at its memory guard: MemAvailable fell below the reserve",
        )
    client = _counts(ev.client_failures)
    dom = dominant_failure(client) if client else None
    if dom is None:
        by_cause = _counts(ev.client_failures_by_cause)
        total = sum(by_cause.values())
        if total:
            name, n = min(by_cause.items(), key=lambda kv: (-kv[1], kv[0]))
            dom = Dominant(errno=None, cause=name, share=n / total, count=n)
    what = ""
    if dom is not None:
        label = dom.errno or dom.cause
        what = f"{label} ×{dom.count:,} ({dom.share:.0%} of client failures)"
        if dom.cause in _CLIENT_CAUSES:
            return Attribution(dom.cause, "client", f"{what}: {_WHAT[Cause(dom.cause)]}")
        if dom.cause == Cause.NETWORK:
            return Attribution(dom.cause, "network", f"{what}: {_WHAT[Cause.NETWORK]}")
    stall = what or "the client's connects stalled"
    server = _counts(ev.server_errors)
    for cause in _SERVER_RESOURCE_CAUSES:
        if server.get(cause):
            return Attribution(
                cause,
                "server",
                f"server accept() failed ×{server[cause]:,} ({cause}); {stall}{_held_gap(ev)}",
            )
    conntrack = _conntrack_evidence(ev, failed=dom is not None)
    if conntrack is not None:
        return Attribution(Cause.CONNTRACK, "network", f"{conntrack}; {stall}")
    if ev.listen_overflows:
        return Attribution(
            Cause.SERVER_BACKLOG,
            "server",
            f"ListenOverflows +{ev.listen_overflows:,}: the server's accept queue was full; "
            f"{stall}{_held_gap(ev)}",
        )
    if ev.abort_on_memory:
        return Attribution(
            Cause.MEMORY,
            "host",
            f"TCPAbortOnMemory +{ev.abort_on_memory:,}: the kernel reset connections for lack "
            f"of socket memory (tcp_mem); {stall}",
        )
    if dom is not None:
        if dom.cause == Cause.SERVER_REFUSED:
            return Attribution(dom.cause, "server", f"{what}: nothing accepted the connection")
        if dom.cause == Cause.SERVER_CLOSED:
            return Attribution(dom.cause, "server", f"{what}: the server reset or closed them")
        if dom.cause == Cause.TIMEOUT:
            return Attribution(
                dom.cause, "network", f"{what}, and no server-side counter explains it"
            )
        return Attribution(dom.cause, "unknown", what)
    return Attribution(
        Cause.UNKNOWN,
        "unknown",
        "held stopped growing without failures or server-side evidence" + _held_gap(ev),
    )


def _delta(timeline: Timeline, key: str, start: int, end: int) -> int | None:
    items = dict(_samples(timeline))
    values = [
        v
        for i in range(start, end + 1)
        if i in items and (v := _int(items[i].get(key))) is not None
    ]
    return values[-1] - values[0] if values else None


def evidence_from_result(
    doc: Mapping[str, Any], start: int = 0, end: int | None = None
) -> CeilingEvidence:
    """Gather :class:`CeilingEvidence` from a result document, over samples start..end
    (default: all). Failures by errno are the whole run's (the timeline has only causes)."""
    timeline = doc.get("timeline")
    tl: Timeline = timeline if isinstance(timeline, list) else []
    last = len(tl) - 1 if end is None else min(end, len(tl) - 1)
    whole = start == 0 and end is None
    server = _obj(doc.get("server"))
    last_sample = tl[last] if 0 <= last < len(tl) and isinstance(tl[last], Mapping) else {}
    return CeilingEvidence(
        client_failures=_counts(doc.get("failures")) if whole else {},
        client_failures_by_cause=(
            _counts(doc.get("failures_by_cause")) if whole else failures_between(tl, start, last)
        ),
        server_errors=_counts(server.get("errors")),
        client_held=_int(doc.get("established_peak")) if whole else _int(last_sample.get("held")),
        server_held=_int(server.get("held")),
        listen_overflows=_delta(tl, "listen_overflows", start, last),
        listen_drops=_delta(tl, "listen_drops", start, last),
        syn_retrans=_delta(tl, "syn_retrans", start, last),
        abort_on_memory=_delta(tl, "tcp_abort_on_memory", start, last),
        conntrack_drops=_delta(tl, "conntrack_drops", start, last),
        conntrack_insert_failed=_delta(tl, "conntrack_insert_failed", start, last),
        conntrack_early_drop=_delta(tl, "conntrack_early_drop", start, last),
        conntrack_count=_int(last_sample.get("conntrack_count")),
        conntrack_max=_int(last_sample.get("conntrack_max")),
        stop_reason=doc.get("stop_reason") if isinstance(doc.get("stop_reason"), str) else None,
    )


# --- the summary in words -----------------------------------------------------------------------


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def about(n: float) -> str:
    """A rough count for prose: 1_430_000 -> '1.4 million', 28_232 -> '28,000', 3_977 -> '3,977'."""
    if abs(n) >= 1_000_000:
        return f"{n / 1_000_000:.1f} million"
    if abs(n) >= 10_000:
        digits = len(str(int(abs(n)))) - 2
        return f"{round(n, -digits):,.0f}"
    return f"{n:,.0f}"


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _advice(cause: str, os_name: str, ceiling: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(knob, commands) for a cause: conncap.catalogue.advice when it exists, else the
    result's own ceiling fields."""
    from conncap import catalogue

    advice_fn = getattr(catalogue, "advice", None)
    if advice_fn is not None:
        try:
            adv = advice_fn(Cause(cause), os_name)
        except (ValueError, KeyError, LookupError):
            adv = None
        if adv is not None:
            knob = getattr(adv, "knob", None)
            commands = getattr(adv, "commands", None) or []
            return (
                knob if isinstance(knob, str) else None,
                [c for c in commands if isinstance(c, str)],
            )
    commands = ceiling.get("advice")
    return _str(ceiling.get("knob")), [
        c for c in (commands if isinstance(commands, list) else []) if isinstance(c, str)
    ]


def summarize(doc: Mapping[str, Any]) -> list[str]:
    """The summary in words: prediction, what happened, the ceiling and its cause, memory per
    connection, and what to change. Tolerates any missing field."""
    lines: list[str] = []
    pred = _obj(doc.get("prediction"))
    ceiling = _obj(doc.get("ceiling"))
    host = _obj(doc.get("host"))
    os_name = _str(host.get("os")) or "linux"

    p_count, p_cause, p_side = (
        _int(pred.get("count")),
        _str(pred.get("cause")),
        _str(pred.get("side")),
    )
    if p_count is not None:
        by = f" before {p_cause} binds" if p_cause else ""
        side = f" ({p_side} side)" if p_side else ""
        lines.append(f"Predicted: {p_count:,} connections{by}{side}.")

    requested, peak = _int(doc.get("requested")), _int(doc.get("established_peak"))
    at_end, attempts = _int(doc.get("held_at_end")), _int(doc.get("attempts"))
    duration, stop = num(doc.get("duration_s")), _str(doc.get("stop_reason"))
    if peak is not None:
        of = f" of {requested:,} requested" if requested is not None else ""
        end_part = f" ({at_end:,} at the end)" if at_end is not None else ""
        tries = f" after {attempts:,} attempts" if attempts is not None else ""
        took = f" in {duration:.1f} s" if duration is not None else ""
        why = f"; stopped by: {stop}" if stop else ""
        lines.append(f"Held {peak:,}{of} connections at the peak{end_part}{tries}{took}{why}.")

    failures = _counts(doc.get("failures"))
    total = sum(failures.values())
    if total:
        top = sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        parts = [f"{name} {n:,} ({n / total:.0%}, {cause_of_name(name)})" for name, n in top]
        lines.append(f"{total:,} attempts failed: {', '.join(parts)}.")
    elif isinstance(doc.get("failures"), Mapping):
        lines.append("No attempt failed.")

    c_count, c_cause = _int(ceiling.get("count")), _str(ceiling.get("cause"))
    if ceiling.get("reached") is True and c_count is not None:
        errno_name = _str(ceiling.get("errno"))
        set_by = f", set by {c_cause}" if c_cause else ""
        errno_part = f" ({errno_name})" if errno_name else ""
        evidence = _str(ceiling.get("evidence"))
        line = f"Ceiling: {c_count:,} connections{set_by}{errno_part}"
        lines.append(line + (f": {evidence}." if evidence else "."))
        if p_count:
            off = (c_count - p_count) / p_count
            how_far = "exactly right" if abs(off) < 0.0005 else f"{off:+.1%} off"
            lines.append(f"The prediction was {p_count:,} ({how_far}).")
    elif ceiling:
        if requested is not None and peak is not None and peak >= requested:
            lines.append(f"No ceiling was reached: all {requested:,} requested connections held.")
        else:
            lines.append("No ceiling was reached.")

    steps = doc.get("steps")
    for step in steps if isinstance(steps, list) else []:
        st = _obj(step)
        name = _str(st.get("name")) or "?"
        title = _str(st.get("title"))
        s_peak = _int(st.get("established_peak"))
        s_ceiling, s_pred = _obj(st.get("ceiling")), _obj(st.get("prediction"))
        text = f"Step {name}" + (f" ({title})" if title else "")
        text += f": peak {s_peak:,}" if s_peak is not None else ": no peak recorded"
        if s_ceiling.get("reached") is True:
            text += f", ceiling set by {_str(s_ceiling.get('cause')) or 'an unknown cause'}"
        sp = _int(s_pred.get("count"))
        if sp is not None:
            text += f" (predicted {sp:,}" + (
                f", {s_pred['cause']})" if _str(s_pred.get("cause")) else ")"
            )
        lines.append(text + ".")

    lines.extend(_memory_lines(_obj(doc.get("memory"))))

    cause = c_cause if ceiling.get("reached") is True else None
    if cause and cause != Cause.UNKNOWN:
        knob, commands = _advice(cause, os_name, ceiling)
        if knob or commands:
            how = f"To raise it: {knob}" if knob else "To raise it"
            lines.append(how + (": " + "; ".join(commands) if commands else "") + ".")
        windows = _str(ceiling.get("windows"))
        if windows:
            lines.append(f"On Windows: {windows}.")
    return lines


_SOURCES = {"slabinfo": "from /proc/slabinfo", "meminfo": "from Slab in /proc/meminfo"}


def _memory_lines(mem: Mapping[str, Any]) -> list[str]:
    kernel = num(mem.get("kernel_bytes_per_conn"))
    user = num(mem.get("user_bytes_per_conn"))
    if kernel is None and user is None:
        return []
    out: list[str] = []
    parts = []
    if kernel is not None:
        src = _str(mem.get("kernel_source"))
        src = _SOURCES.get(src, src) if src else None
        parts.append(f"{format_bytes(kernel)} in the kernel" + (f" ({src})" if src else ""))
    if user is not None:
        parts.append(f"{format_bytes(user)} in user space")
    per_conn = (kernel or 0.0) + (user or 0.0)
    samples = _int(mem.get("samples"))
    over = f", the slope over {samples} samples of the ramp" if samples else ""
    total = f" = {format_bytes(per_conn)}" if len(parts) > 1 else ""
    out.append(f"Memory per connection: {' + '.join(parts)}{total}{over}.")
    available = num(mem.get("mem_available"))
    ceiling = _int(mem.get("extrapolated_ceiling"))
    if available is not None and ceiling is not None and per_conn > 0:
        out.append(
            f"{format_bytes(available)} available: at {format_bytes(per_conn)} per connection "
            f"this host holds about {about(ceiling)} before memory binds "
            "(WSAENOBUFS 10055 on Windows)."
        )
    return out
