"""``conncap open``: open and hold connections fast, classify every failure, find the ceiling."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "open and hold connections fast, from many source IPs to many ports; find the ceiling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="host:port or host:P1-P2")
    parser.add_argument("--count", type=int, metavar="N", help="connections to open (default 1000)")
    parser.add_argument(
        "--rate", type=float, metavar="R", help="connects per second (default: max)"
    )
    parser.add_argument(
        "--source-ip",
        action="append",
        metavar="IP|CIDR|auto",
        help="source address(es): an IP, a CIDR, A-B, a comma list or auto; repeatable",
    )
    parser.add_argument(
        "--workers", default="auto", metavar="N|auto", help="processes (auto: as descriptors need)"
    )
    parser.add_argument(
        "--hold", type=float, default=0.0, metavar="S", help="hold S seconds once the ramp is over"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="handshake timeout (default 5)"
    )
    parser.add_argument(
        "--bind-mode",
        choices=("kernel", "explicit"),
        default="kernel",
        help="kernel: connect() picks the port (as programs do); explicit: conncap binds each "
        "port of the range itself (fast near exhaustion)",
    )
    parser.add_argument(
        "--nofile", type=int, metavar="N", help="each worker's RLIMIT_NOFILE (default: hard limit)"
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=600.0,
        metavar="S",
        help="stop the whole run after S seconds (default 600)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the conncap.result/1 document here")
    from conncap.commands.open_churn import add_churn_arguments

    add_churn_arguments(parser)


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


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import signal
    import threading
    import time

    from rich.console import Console

    from conncap.engine import ClientPool
    from conncap.engine.plan import check_plan
    from conncap.engine.results import open_result, predict
    from conncap.errors import UsageError
    from conncap.exitcodes import ExitStatus
    from conncap.result import write_atomic

    if not args.max_duration > 0:
        raise UsageError("--max-duration must be positive")
    from conncap.commands.open_churn import run_churn, wants_churn

    if wants_churn(args):  # churn: open --lifetime S --rate R (docs/engine.md)
        return run_churn(args)
    if args.count is None:
        args.count = 1000
    plan, notes = build_plan(args)
    check_plan(plan)
    console = Console(stderr=True)
    for note in notes:
        console.print(f"conncap: {note}")
    prediction = predict(plan, args.nofile)

    stop = threading.Event()
    why: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        why.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    pool = ClientPool(plan, nofile=args.nofile)
    stop_reason = "error"
    try:
        pool.start()
        stop_reason = _ramp(pool, stop, console, args.max_duration, t0)
        if stop_reason in ("count", "ceiling") and plan.hold_s > 0:
            end = time.monotonic() + plan.hold_s
            while not stop.wait(0.25):
                _progress(console, pool)
                if time.monotonic() >= end:
                    break
            if stop.is_set():
                stop_reason = "interrupted"
            else:
                stop_reason = "hold" if stop_reason == "count" else stop_reason
    finally:
        final = pool.stop(timeout=2.0)
        for s, h in old.items():
            signal.signal(s, h)
    duration = time.monotonic() - t0
    if console.is_terminal:
        console.print()
    doc = open_result(
        plan,
        final,
        pool.timeline(),
        started_at=started,
        duration_s=duration,
        stop_reason=stop_reason,
        prediction=prediction,
        notes=notes,
    )
    if args.json:
        write_atomic(args.json, doc)
    _summary(console, doc)
    return ExitStatus.INTERRUPTED if stop_reason == "interrupted" else ExitStatus.SUCCESS


def _ramp(pool: Any, stop: Any, console: Any, max_duration: float, t0: float) -> str:
    import time

    from conncap.errors import RunFailed

    while not stop.is_set():
        if pool.wait(0.25):
            st = pool.stats()
            _progress(console, pool)
            return "ceiling" if st.ceiling is not None else "count"
        _progress(console, pool)
        if time.monotonic() - t0 >= max_duration:
            return "max-duration"
        if not pool.pids():
            raise RunFailed("every client worker exited before the ramp ended")
    return "interrupted"


_last_print = [0.0]


def _progress(console: Any, pool: Any) -> None:
    import time

    now = time.monotonic()
    if now - _last_print[0] < (0.25 if console.is_terminal else 5.0):
        return
    _last_print[0] = now
    st = pool.stats()
    fails = ", ".join(f"{k} {v:,}" for k, v in sorted(st.failures_by_cause.items())) or "none"
    console.print(
        f"held {st.held:,}/{st.requested:,} · {st.rate:,.0f} conn/s · failures {fails}",
        end="\r" if console.is_terminal else "\n",
    )


def _summary(console: Any, doc: dict[str, Any]) -> None:
    c = doc["ceiling"]
    console.print(
        f"held {doc['held_at_end']:,} of {doc['requested']:,} requested "
        f"(peak {doc['established_peak']:,}), {doc['attempts']:,} attempts, "
        f"{doc['duration_s']:.1f} s, stopped by {doc['stop_reason']}"
    )
    if doc["failures"]:
        console.print(
            "failures: " + ", ".join(f"{k} {v:,}" for k, v in sorted(doc["failures"].items()))
        )
    if c["reached"]:
        console.print(
            f"ceiling: {c['count']:,} connections, cause {c['cause']} ({c['errno']}): "
            f"{c['evidence']}"
        )
        if c.get("knob"):
            console.print(f"  knob: {c['knob']}")
        for line in c.get("advice") or []:
            console.print(f"  raise it: {line}", markup=False)
        if c.get("windows"):
            console.print(f"  Windows: {c['windows']}", markup=False)
    p = doc["prediction"]
    if p.get("count") is not None:
        console.print(f"model predicted: {p['count']:,} ({p.get('cause')})")
    elif p.get("reason"):
        console.print(f"model prediction: unknown ({p['reason']})")
