"""``conncap open``'s arguments as an :class:`~conncap.engine.OpenPlan` (shared by the hold
and the churn modes)."""

from __future__ import annotations

import argparse
from typing import Any


def build_plan(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The OpenPlan for these arguments, and the notes to print about the choices made."""
    from conncap.engine.connector import read_port_range
    from conncap.engine.plan import (
        OpenPlan,
        auto_sources,
        auto_workers,
        parse_sources,
        parse_target,
        per_worker_capacity,
    )
    from conncap.errors import UsageError

    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.nofile is not None and args.nofile < 16:
        raise UsageError("--nofile must be at least 16")
    targets = tuple(parse_target(t) for t in args.targets)
    sources, auto = parse_sources(args.source_ip or [])
    notes: list[str] = []
    lo, hi = read_port_range()
    if auto:
        found = auto_sources(targets, args.count, hi - lo + 1)
        sources = list(dict.fromkeys([*sources, *found]))
        notes.append(f"--source-ip auto: {len(found)} address(es) from {found[0]}")
    if args.workers == "auto":
        workers = min(auto_workers(args.count, args.nofile), args.count)
        cap = per_worker_capacity(args.nofile)
        notes.append(
            f"--workers auto: {workers} worker process(es), each holding at most {cap:,} "
            "connections under its descriptor limit (RLIMIT_NOFILE)"
        )
    else:
        try:
            workers = int(args.workers)
        except ValueError:
            raise UsageError("--workers is a number or auto") from None
    plan = OpenPlan(
        targets=targets,
        count=args.count,
        source_ips=tuple(sources),
        workers=workers,
        rate=args.rate,
        hold_s=args.hold,
        timeout_s=args.timeout,
        bind_mode=args.bind_mode,
    )
    return plan, notes
