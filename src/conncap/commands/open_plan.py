"""``conncap open``'s arguments as an :class:`~conncap.engine.OpenPlan` (shared by the hold
and the churn modes; a cluster's agents call :func:`conncap.engine.plan.build_open_plan`
directly). Everything this host cannot run is refused here, before a worker is forked."""

from __future__ import annotations

import argparse

from conncap.commands.checks import check_count, check_workers, host_capacity
from conncap.engine.plan import (
    OpenPlan,
    build_open_plan,
    check_local_sources,
    check_pair_count,
    parse_sources,
)
from conncap.errors import UsageError
from conncap.scenarios.isolated import check_nofile


def build_plan(args: argparse.Namespace) -> tuple[OpenPlan, list[str]]:
    """The OpenPlan for these arguments, and the notes to print about the choices made."""
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.nofile is not None:
        check_nofile(args.nofile, "--nofile")  # above `ulimit -Hn` no worker could take it
    capacity = host_capacity(ends=1, nofile=args.nofile)
    check_count(args.count, "--count", capacity)
    check_local_sources(parse_sources(args.source_ip or [])[0])
    plan, notes = build_open_plan(
        targets=args.targets,
        count=args.count,
        source_ip=args.source_ip,
        workers="auto" if args.workers is None else args.workers,
        rate=args.rate,
        hold=args.hold,
        timeout=args.timeout,
        bind_mode=args.bind_mode,
        nofile=args.nofile,
    )
    check_workers(plan.workers, "--workers", capacity)
    check_pair_count(plan)
    return plan, notes
