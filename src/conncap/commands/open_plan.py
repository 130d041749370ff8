"""``conncap open``'s arguments as an :class:`~conncap.engine.OpenPlan` (shared by the hold
and the churn modes)."""

from __future__ import annotations

import argparse
from typing import Any


def build_plan(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The OpenPlan for these arguments, and the notes to print about the choices made.
    Everything this host cannot run is refused here, before a worker is forked."""
    from conncap.commands.checks import check_count, check_workers, host_capacity
    from conncap.engine.connector import read_port_range
    from conncap.engine.plan import (
        OpenPlan,
        auto_sources,
        auto_workers,
        check_local_sources,
        check_pair_count,
        parse_sources,
        parse_target,
        per_worker_capacity,
    )
    from conncap.errors import UsageError
    from conncap.scenarios.isolated import check_nofile

    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.nofile is not None:
        check_nofile(args.nofile, "--nofile")  # above `ulimit -Hn` no worker could take it
    capacity = host_capacity(ends=1, nofile=args.nofile)
    check_count(args.count, "--count", capacity)
    targets = tuple(parse_target(t) for t in args.targets)
    sources, auto = parse_sources(args.source_ip or [])
    check_local_sources(sources)
    notes: list[str] = []
    lo, hi = read_port_range()
    if auto:
        found = auto_sources(targets, args.count, hi - lo + 1)
        sources = list(dict.fromkeys([*sources, *found]))
        notes.append(f"--source-ip auto: {len(found)} address(es) from {found[0]}")
    if args.workers is None or args.workers == "auto":
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
    check_workers(workers, "--workers", capacity)
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
    check_pair_count(plan)
    return plan, notes
