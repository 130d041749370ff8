"""``conncap open``'s arguments as an :class:`~conncap.engine.OpenPlan` (shared by the hold
and the churn modes; a cluster's agents call :func:`conncap.engine.plan.build_open_plan`
directly)."""

from __future__ import annotations

import argparse

from conncap.engine.plan import OpenPlan, build_open_plan


def build_plan(args: argparse.Namespace) -> tuple[OpenPlan, list[str]]:
    """The OpenPlan for these arguments, and the notes to print about the choices made."""
    return build_open_plan(
        targets=args.targets,
        count=args.count,
        source_ip=args.source_ip,
        workers=args.workers,
        rate=args.rate,
        hold=args.hold,
        timeout=args.timeout,
        bind_mode=args.bind_mode,
        nofile=args.nofile,
    )
