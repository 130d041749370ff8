"""Attribution: which limit set a ceiling, and on which side, from the client's failures and
the server-side counters (accept errors, ListenOverflows, conntrack). Pure functions of data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from conncap.analysis.closes import (
    filter_icmp,
    out_of_descriptors,
    queue_full,
    read_closes,
    where,
)
from conncap.analysis.timeline import (
    Dominant,
    Timeline,
    dominant_failure,
    failures_between,
    positive,
)
from conncap.catalogue import CAUSE_SIDE, CLIENT_REPORTED, SERVER_RESOURCE_CAUSES, Cause
from conncap.result import Certainty, Result, Sample, ServerCloses, TargetSide

# --- attribution --------------------------------------------------------------------------------

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
    closes: ServerCloses | None = None  # what the server did to established connections
    target: TargetSide | None = None  # the server's side, read on this host


class Attribution(NamedTuple):
    """Which limit set the ceiling, on which side (client, server, network, host, unknown), a
    one-line account of the evidence, and whether that reading is certain or only likely."""

    cause: str
    side: str
    evidence: str
    certainty: Certainty = "certain"


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
    """Decide the cause of a ceiling from the client's failures, what the server did to
    established connections, and the server-side evidence (its counters; on this host its
    listener, process and firewall rules).

    Failures the client's own kernel reports (EADDRNOTAVAIL, EMFILE, ENFILE, ENOBUFS/ENOMEM)
    name the cause directly, and so does an ICMP "administratively prohibited" (a firewall).
    Stalls, timeouts, refusals and closes are symptoms: the server process's descriptors, its
    accept errors, a firewall rule for the port, the server closing what it accepted (with
    its words, or by the lifetimes), conntrack, a full accept queue (ListenOverflows) explain
    them, in that order (a server out of descriptors stops accepting, which fills its backlog).
    Each reading says whether it is ``certain`` or only ``likely``.
    """
    if ev.stop_reason == "memory-guard":
        return Attribution(
            Cause.MEMORY,
            "host",
            "conncap stopped at its memory guard: MemAvailable fell below the reserve",
        )
    target = ev.target
    src = where(target)
    port = f"port {target.port}" if target is not None else "the port"
    icmp = filter_icmp(ev.closes.icmp) if ev.closes is not None else None
    if icmp is not None:
        key, n = icmp
        return Attribution(
            Cause.FIREWALL,
            "network",
            f"ICMP destination unreachable, administratively prohibited ({key}) ×{n:,} "
            f"answered the connects: a firewall rejects {port}{_rules(target)}{src}",
        )
    client = positive(ev.client_failures)
    dom = dominant_failure(client) if client else None
    if dom is None:
        by_cause = positive(ev.client_failures_by_cause)
        total = sum(by_cause.values())
        if total:
            name, n = min(by_cause.items(), key=lambda kv: (-kv[1], kv[0]))
            dom = Dominant(errno=None, cause=name, share=n / total, count=n)
    what = ""
    if dom is not None:
        label = dom.errno or dom.cause
        what = f"{label} ×{dom.count:,} ({dom.share:.0%} of client failures)"
        if dom.cause in (Cause.PERMISSION, Cause.NETWORK) and target is not None and target.rules:
            return Attribution(
                Cause.FIREWALL,
                "network",
                f"{what}: a netfilter rule on this host drops or rejects {port}"
                f"{_rules(target)}{src}",
            )
        if dom.cause == Cause.PERMISSION and dom.errno in ("EPERM", "EACCES"):
            return Attribution(
                Cause.FIREWALL,
                "network",
                f"{what}: connect() was refused locally, as a packet filter's drop in the "
                "client's OUTPUT chain does",
                "likely",
            )
        if dom.cause in CLIENT_REPORTED:
            cause = Cause(dom.cause)
            return Attribution(cause, CAUSE_SIDE[cause], f"{what}: {_WHAT[cause]}")
    stall = what or "the client's connects stalled"
    fds = out_of_descriptors(target)
    reading = read_closes(ev.closes) if ev.closes is not None else None
    if reading is not None and reading.pattern == "message":  # the server's own words first
        also = f"; {fds}" if fds is not None else ""
        return Attribution(
            Cause.SERVER_CLOSED, "server", f"{reading.text}{also}{_held_gap(ev)}{src}"
        )
    if fds is not None:
        return Attribution(
            Cause.FILE_DESCRIPTORS,
            "server",
            f"{fds}: the server cannot accept more; {stall}{_held_gap(ev)}{src}",
        )
    server = positive(ev.server_errors)
    for cause in SERVER_RESOURCE_CAUSES:
        if server.get(cause):
            return Attribution(
                cause,
                "server",
                f"server accept() failed ×{server[cause]:,} ({cause}); {stall}{_held_gap(ev)}",
            )
    if target is not None and target.rules and dom is not None:
        return Attribution(
            Cause.FIREWALL,
            "network",
            f"{stall}, and a netfilter rule on this host drops or rejects {port}"
            f"{_rules(target)}{src}",
        )
    if reading is not None and (dom is None or dom.cause in _CLOSE_SYMPTOMS):
        return Attribution(
            Cause.SERVER_CLOSED,
            "server",
            f"{reading.text}{_held_gap(ev)}{src}",
            reading.certainty,
        )
    conntrack = _conntrack_evidence(ev, failed=dom is not None)
    if conntrack is not None:
        return Attribution(Cause.CONNTRACK, "network", f"{conntrack}; {stall}")
    full = queue_full(target)
    if full is not None:
        overflows = f"; ListenOverflows +{ev.listen_overflows:,}" if ev.listen_overflows else ""
        return Attribution(
            Cause.SERVER_BACKLOG, "server", f"{full}{overflows}; {stall}{_held_gap(ev)}{src}"
        )
    if ev.listen_overflows:
        return Attribution(
            Cause.SERVER_BACKLOG,
            "server",
            f"ListenOverflows +{ev.listen_overflows:,}: the server's accept queue was full; "
            f"{stall}{_held_gap(ev)}",
            "certain" if target is not None else "likely",
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
            if target is not None and target.listening is False:
                return Attribution(
                    dom.cause,
                    "server",
                    f"{what}: nothing listens on {target.host}:{target.port}{src}",
                )
            if target is not None and target.listening:
                return Attribution(
                    Cause.FIREWALL,
                    "network",
                    f"{what}, yet a server listens on {port}: something rejects the "
                    f"connections with a reset in front of it (a REJECT rule){src}",
                    "likely",
                )
            return Attribution(
                dom.cause,
                "server",
                f"{what}: nothing accepted the connection (nothing listens, or a firewall "
                "rejects with a reset: from the client they look the same)",
                "likely",
            )
        if dom.cause == Cause.SERVER_CLOSED:
            return Attribution(dom.cause, "server", f"{what}: the server reset or closed them")
        if dom.cause == Cause.TIMEOUT:
            if target is not None and target.listening:
                return Attribution(
                    Cause.FIREWALL,
                    "network",
                    f"{what}: a server listens on {port} with room in its accept queue and "
                    f"no counter moved, so the SYNs were dropped on the way (a firewall DROP; "
                    f"no matching rule was readable here){src}",
                    "likely",
                )
            return Attribution(
                dom.cause,
                "network",
                f"{what}, and no server-side counter explains it (a firewall DROP, a full "
                "SYN queue or a lost route look the same from the client)",
                "likely",
            )
        return Attribution(dom.cause, "unknown", what, "likely")
    return Attribution(
        Cause.UNKNOWN,
        "unknown",
        "held stopped growing without failures or server-side evidence" + _held_gap(ev),
        "likely",
    )


#: Client failures that a server closing connections explains (the close is the evidence).
_CLOSE_SYMPTOMS = frozenset({Cause.SERVER_CLOSED, Cause.TIMEOUT, Cause.SERVER_REFUSED})


def _rules(target: TargetSide | None) -> str:
    if target is None or not target.rules:
        return ""
    more = f" (+{len(target.rules) - 1} more)" if len(target.rules) > 1 else ""
    return f": rule `{target.rules[0]}`{more}"


def _delta(timeline: Timeline, key: str, start: int, end: int) -> int | None:
    """Growth of the counter ``key`` over samples start..end (None: not measured)."""
    values = [int(v) for s in timeline[max(start, 0) : end + 1] if (v := s.figure(key)) is not None]
    return values[-1] - values[0] if values else None


def _level(sample: Sample | None, key: str) -> int | None:
    v = sample.figure(key) if sample is not None else None
    return int(v) if v is not None else None


def evidence_from_result(result: Result, start: int = 0, end: int | None = None) -> CeilingEvidence:
    """Gather :class:`CeilingEvidence` from a result, over samples start..end (default: all).
    Failures by errno are the whole run's (the timeline has only causes)."""
    tl = result.timeline
    last = len(tl) - 1 if end is None else min(end, len(tl) - 1)
    whole = start == 0 and end is None
    server = result.server
    last_sample = tl[last] if 0 <= last < len(tl) else None
    return CeilingEvidence(
        client_failures=positive(result.failures) if whole else {},
        client_failures_by_cause=(
            positive(result.failures_by_cause) if whole else failures_between(tl, start, last)
        ),
        server_errors=positive(server.errors) if server is not None else {},
        client_held=(
            result.established_peak
            if whole
            else (last_sample.held if last_sample is not None else None)
        ),
        server_held=server.held if server is not None else None,
        listen_overflows=_delta(tl, "listen_overflows", start, last),
        listen_drops=_delta(tl, "listen_drops", start, last),
        syn_retrans=_delta(tl, "syn_retrans", start, last),
        abort_on_memory=_delta(tl, "tcp_abort_on_memory", start, last),
        conntrack_drops=_delta(tl, "conntrack_drops", start, last),
        conntrack_insert_failed=_delta(tl, "conntrack_insert_failed", start, last),
        conntrack_early_drop=_delta(tl, "conntrack_early_drop", start, last),
        conntrack_count=_level(last_sample, "conntrack_count"),
        conntrack_max=_level(last_sample, "conntrack_max"),
        stop_reason=result.stop_reason,
        closes=result.closes if whole else None,
        target=result.target,
    )
