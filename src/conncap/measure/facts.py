"""The evidence a step leaves, read from its samples and its pools: counter growth, and what
the server did to established connections (:func:`closes_of`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conncap.analysis.closes import CloseTally
from conncap.result import Sample, ServerCloses, ServerMessage


def add_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + int(v)


def counts_growth(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    out = {k: int(v) - int(before.get(k, 0)) for k, v in now.items()}
    return {k: v for k, v in out.items() if v > 0}


def growth(samples: Iterable[Sample], key: str) -> int | None:
    """Growth of a cumulative counter over ``samples`` (None: measured fewer than twice)."""
    nums = [int(v) for s in samples if (v := s.figure(key)) is not None]
    return nums[-1] - nums[0] if len(nums) >= 2 else None


def as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def closes_of(stats: Sequence[Any]) -> ServerCloses | None:
    """What the server did to established connections, over client pools' stats (their
    ``dropped`` by errno name and the ``extra`` keys ``lifetimes``, ``messages``, ``icmp``,
    ``unacked``); None when it did nothing the client saw."""
    fin = rst = 0
    tally = CloseTally()
    for cs in stats:
        fin += int(cs.dropped.get("EOF", 0))
        rst += int(cs.dropped.get("ECONNRESET", 0)) + int(cs.dropped.get("EPIPE", 0))
        extra = cs.extra
        tally.add(
            extra.get("lifetimes") or (),
            extra.get("messages") or (),
            extra.get("icmp") or {},
            extra.get("unacked", 0),
        )
    if not (fin or rst or tally.msgs or tally.icmp or tally.unacked):
        return None
    return ServerCloses(
        fin=fin,
        rst=rst,
        lifetimes=tuple(tally.life),
        messages=tuple(ServerMessage(t, n, c) for t, n, c in tally.ranked()),
        icmp=dict(sorted(tally.icmp.items())),
        unacked=tally.unacked,
    )
