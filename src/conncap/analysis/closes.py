"""How a server that conncap does not own ended connections, from what the client saw: pure
readings of :class:`conncap.result.ServerCloses` (FIN or RST, lifetimes, first bytes, ICMP)
and of :class:`conncap.result.TargetSide` (the server's side read on this host).

The lifetime histogram's bucket 0 holds lifetimes under 1 ms, bucket k those in
[2^(k-1), 2^k) ms (the engine's connector fills it, one counter per bucket).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from conncap.result import Certainty, ServerCloses, ServerMessage, TargetSide

#: A server that closes within this bucket (under 64 ms) refused "at once".
AT_ONCE_BUCKET = 6
#: The share of closes that makes a pattern.
PATTERN_SHARE = 0.8
#: ICMP destination-unreachable codes that mean a filter: 9/10 (network/host administratively
#: prohibited, old), 13 (communication administratively prohibited); ICMPv6 1/1 and 1/5-6.
FILTER_ICMP = frozenset(
    {"icmp 3/9", "icmp 3/10", "icmp 3/13", "icmp6 1/1", "icmp6 1/5", "icmp6 1/6"}
)
#: A process this close to its RLIMIT_NOFILE is out of descriptors (a few are spare for logs).
FDS_SLACK = 3

Pattern = Literal["message", "at-once", "steady", "eviction"]


def bucket_bounds(k: int) -> tuple[float, float]:
    """Bucket ``k``'s lifetimes in seconds, [low, high)."""
    if k <= 0:
        return (0.0, 0.001)
    return ((1 << (k - 1)) / 1000.0, (1 << k) / 1000.0)


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.3g} s"


def bucket_text(lo: int, hi: int | None = None) -> str:
    """Buckets lo..hi as a range of lifetimes ("0.5-2 s", "under 1 ms")."""
    a = bucket_bounds(lo)[0]
    b = bucket_bounds(hi if hi is not None else lo)[1]
    if a == 0:
        return f"under {_seconds(b)}"
    return f"{_seconds(a)}-{_seconds(b)}"


def lifetime_summary(hist: Sequence[int]) -> str:
    """The histogram in words: the most common lifetimes and the spread ("37 closed: 95%
    within 1-2 s; the rest 2-4 s")."""
    total = sum(hist)
    if not total:
        return "none closed"
    ranked = sorted(((n, k) for k, n in enumerate(hist) if n), reverse=True)
    parts = [f"{n / total:.0%} {bucket_text(k)}" for n, k in ranked[:3]]
    lo = min(k for _, k in ranked)
    hi = max(k for _, k in ranked)
    spread = f" (all within {bucket_text(lo, hi)})" if len(ranked) > 3 else ""
    return f"{total:,} closed after " + ", ".join(parts) + spread


@dataclass(frozen=True, slots=True)
class CloseReading:
    """How the server closed: ``pattern``, one line of evidence, how sure."""

    pattern: Pattern
    text: str
    certainty: Certainty


def quoted(messages: Sequence[ServerMessage]) -> ServerMessage | None:
    """The message the server sent most often before closing (None: it said nothing)."""
    said = [m for m in messages if m.text and m.closed]
    return max(said, key=lambda m: (m.closed, m.seen)) if said else None


def _how(c: ServerCloses) -> str:
    if c.fin and c.rst:
        return f"FIN {c.fin:,}, RST {c.rst:,}"
    return "with a FIN" if c.fin else "with an RST (reset)"


def read_closes(c: ServerCloses) -> CloseReading | None:
    """How the server closed connections after their handshake, or None if it closed none.

    A message before the close is the server's own refusal (certain). Without one, the lifetimes
    say how: nearly all closed within 64 ms is a refusal at once (certain: no client-side limit
    closes an established connection); nearly all within two neighbouring buckets past that is
    a steady lifetime, an idle or authentication timeout (likely); spread lifetimes while new
    ones succeed is eviction of older connections (likely)."""
    n = c.closed
    if not n:
        return None
    hist = list(c.lifetimes)
    total = sum(hist) or n
    msg = quoted(c.messages)
    life = lifetime_summary(hist) if hist else f"{n:,} closed"
    if msg is not None:
        return CloseReading(
            "message",
            f'the server answered "{msg.text}" and closed {msg.closed:,} connections '
            f"({_how(c)}; {life})",
            "certain",
        )
    at_once = sum(hist[: AT_ONCE_BUCKET + 1])
    if at_once >= PATTERN_SHARE * total:
        return CloseReading(
            "at-once",
            f"the server closed {n:,} connections right after accepting them, without a word "
            f"({_how(c)}; {life}): an application connection limit",
            "certain",
        )
    best = max(range(len(hist)), key=lambda k: hist[k] + (hist[k + 1] if k + 1 < len(hist) else 0))
    pair = hist[best] + (hist[best + 1] if best + 1 < len(hist) else 0)
    if pair >= PATTERN_SHARE * total:
        return CloseReading(
            "steady",
            f"the server closed {n:,} connections after a steady lifetime of "
            f"{bucket_text(best, best + 1)} ({_how(c)}; {life}): an idle or authentication "
            "timeout",
            "likely",
        )
    return CloseReading(
        "eviction",
        f"the server closed {n:,} older connections while new ones succeeded ({_how(c)}; "
        f"{life}): it evicts connections past a limit",
        "likely",
    )


def filter_icmp(icmp: Mapping[str, int]) -> tuple[str, int] | None:
    """The ICMP "administratively prohibited" errors among failed connects, (key, count)."""
    hits = [(k, n) for k, n in icmp.items() if k in FILTER_ICMP and n > 0]
    return max(hits, key=lambda kv: kv[1]) if hits else None


def out_of_descriptors(t: TargetSide | None) -> str | None:
    """ "nginx pid 1234: 360 of 360 descriptors" for a listening process at its RLIMIT_NOFILE."""
    if t is None:
        return None
    for p in t.processes:
        if p.fds is not None and p.nofile is not None and p.fds >= p.nofile - FDS_SLACK:
            return f"{p.name} pid {p.pid}: {p.fds:,} of {p.nofile:,} descriptors"
    return None


def queue_full(t: TargetSide | None) -> str | None:
    """ "accept queue 9 of 8" when the listener's queue was full."""
    if t is None or t.accept_queue is None or t.backlog is None:
        return None
    if (t.accept_queue >= t.backlog and t.backlog > 0) or (t.backlog == 0 and t.accept_queue > 0):
        who = f" ({t.processes[0].name} pid {t.processes[0].pid})" if t.processes else ""
        return (
            f"the listener on port {t.port}{who} has {t.accept_queue:,} connections waiting "
            f"in an accept queue of {t.backlog:,}: it is not accepting"
        )
    return None


def where(t: TargetSide | None) -> str:
    """Where the server-side facts came from, for an evidence line."""
    if t is None or not t.sources:
        return ""
    return "; read on this host from " + ", ".join(t.sources)


class CloseTally:
    """What the server did to connections, summed over parts (workers' snapshots into a
    pool's figures, pools' figures into a step's): the lifetime histogram, the first bytes
    by text ([seen, then closed]), ICMP errors by kind, messages never acknowledged."""

    def __init__(self) -> None:
        self.life: list[int] = []
        self.msgs: dict[str, list[int]] = {}
        self.icmp: dict[str, int] = {}
        self.unacked = 0

    def add(
        self,
        life: Iterable[int],
        msgs: Iterable[Sequence[str | int]],
        icmp: Mapping[str, int],
        unacked: int,
    ) -> None:
        for i, n in enumerate(life):
            if i >= len(self.life):
                self.life.extend([0] * (i + 1 - len(self.life)))
            self.life[i] += int(n)
        for text, seen, closed in msgs:
            m = self.msgs.setdefault(str(text), [0, 0])
            m[0] += int(seen)
            m[1] += int(closed)
        for k, n in icmp.items():
            self.icmp[str(k)] = self.icmp.get(str(k), 0) + int(n)
        self.unacked += int(unacked)

    def ranked(self) -> list[tuple[str, int, int]]:
        """(text, seen, then closed), most seen first; "" (other messages) last."""
        order = sorted(self.msgs.items(), key=lambda kv: (kv[0] == "", -kv[1][0], kv[0]))
        return [(t, n, c) for t, (n, c) in order]
