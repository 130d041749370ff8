"""``conncap serve``: a holding server on one or many ports, over worker processes."""

from __future__ import annotations

import argparse

HELP = "a holding server on one or many ports, many worker processes, survives exhaustion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default 127.0.0.1; every interface only with 0.0.0.0)",
    )
    ports = parser.add_mutually_exclusive_group()
    ports.add_argument("--port", type=int, metavar="P", help="one port (default 0: any free)")
    ports.add_argument("--ports", metavar="P1-P2", help="listen on every port of a range")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument(
        "--backlog", type=int, metavar="N", help="listen backlog (default: net.core.somaxconn)"
    )
    parser.add_argument("--mode", choices=("hold", "echo"), default="hold")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--close-after",
        type=float,
        metavar="S",
        help="close each connection S seconds after accepting it (0: at once): the server "
        "closes first, so TIME_WAIT lands on the server's side (churn)",
    )
    parser.add_argument(
        "--nofile", type=int, metavar="N", help="each worker's RLIMIT_NOFILE (default: hard limit)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the server's stats here at the end")
    from conncap.observe import add_observe_arguments

    add_observe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import math
    import signal
    import threading
    import time

    from rich.console import Console

    from conncap.engine import ServerPool
    from conncap.engine.plan import parse_ports_arg
    from conncap.engine.portrange import read_time_wait
    from conncap.errors import RunFailed, UsageError
    from conncap.exitcodes import ExitStatus
    from conncap.observe.figures import from_server
    from conncap.observe.session import Observers
    from conncap.result import part_to_json, write_atomic

    if args.ports:
        lo, hi = parse_ports_arg(args.ports, "--ports")
        ports = list(range(lo, hi + 1))
    else:
        port = 0 if args.port is None else args.port
        if not 0 <= port <= 65535:
            raise UsageError("--port must be 0-65535")
        ports = [port]
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise UsageError("--duration must be a positive number of seconds")
    if args.close_after is not None and not (
        math.isfinite(args.close_after) and args.close_after >= 0
    ):
        raise UsageError(f"--close-after must be 0 or more seconds, not {args.close_after}")
    if args.backlog is not None and args.backlog < 1:
        raise UsageError("--backlog must be at least 1")
    if args.nofile is not None and args.nofile < 16:
        raise UsageError("--nofile must be at least 16")

    console = Console(stderr=True)
    obs = Observers.from_args(args, "serve", say=lambda line: console.print(line, markup=False))
    stop = threading.Event()
    why: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        obs.on_signal(signum)
        why.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = dt.datetime.now(dt.UTC)
    pool = ServerPool(
        bind=args.bind,
        ports=ports,
        workers=args.workers,
        backlog=args.backlog,
        mode=args.mode,
        nofile=args.nofile,
        close_after=args.close_after,
    )
    timeline: list[dict[str, object]] = []
    try:
        obs.start(getattr(args, "_argv", ()), bind=args.bind, workers=args.workers, mode=args.mode)
        pool.start()
        shown = pool.ports if len(pool.ports) <= 4 else [pool.ports[0], pool.ports[-1]]
        where = ", ".join(str(p) for p in shown) if len(pool.ports) <= 4 else "{}-{}".format(*shown)
        closing = (
            f", closing each connection {args.close_after:g} s after accept"
            if args.close_after is not None
            else ""
        )
        listening = (
            f"conncap serve: listening on {args.bind} port {where}, {args.workers} worker(s), "
            f"{args.mode} mode{closing}"
        )
        console.print(f"{listening}; Ctrl-C stops", markup=False)
        obs.message(listening)
        t0 = time.monotonic()
        last_acc, last_t, last_print = 0, t0, 0.0
        while not stop.wait(0.25):
            now = time.monotonic()
            st = pool.stats()
            rate = (st.accepted - last_acc) / max(1e-6, now - last_t)
            last_acc, last_t = st.accepted, now
            point: dict[str, object] = {
                "t": round(now - t0, 3),
                "held": st.held,
                "accepted": st.accepted,
                "rate": round(rate, 1),
                "errors": dict(st.errors_by_cause),
            }
            timeline.append(point)
            if obs.active:
                tw = read_time_wait() if obs.metrics_on else None
                obs.set_figures(
                    from_server(
                        held=st.held,
                        accepted=st.accepted,
                        errors_by_cause=st.errors_by_cause,
                        rss_bytes=st.rss_bytes,
                        time_wait=tw,
                    )
                )
                obs.write(
                    "sample", **{("sample_t" if k == "t" else k): v for k, v in point.items()}
                )
            if now - last_print >= (0.5 if console.is_terminal else 5.0):
                last_print = now
                console.print(_line(st, rate), end="\r" if console.is_terminal else "\n")
            if args.duration is not None and now - t0 >= args.duration:
                break
            if not pool.pids():
                raise RunFailed("every server worker exited; see the lines above")
    finally:
        final = pool.stop(timeout=2.0)
        for s, h in old.items():
            signal.signal(s, h)
        obs.close(held=final.held, accepted=final.accepted)
    if console.is_terminal:
        console.print()
    console.print(_line(final, 0.0, final=True))
    if args.json:
        doc = {
            "schema": "conncap.serve/1",
            "started_at": started.isoformat(timespec="seconds"),
            "bind": args.bind,
            "ports": final.ports,
            "workers": args.workers,
            "mode": args.mode,
            "close_after": args.close_after,
            "server": part_to_json(final.figures()),
            "timeline": timeline,
        }
        write_atomic(args.json, doc)
    if why and why[0] == signal.SIGINT:
        return ExitStatus.INTERRUPTED
    return ExitStatus.SUCCESS


def _line(st: object, rate: float, final: bool = False) -> str:
    from conncap.engine import ServerStats

    assert isinstance(st, ServerStats)
    errs = ", ".join(f"{k} {v:,}" for k, v in sorted(st.errors_by_cause.items())) or "none"
    head = "stopped: " if final else ""
    acc = "" if final else f" · {rate:,.0f} accepts/s"
    return (
        f"{head}held {st.held:,} · accepted {st.accepted:,}{acc} · errors {errs} · "
        f"memory {st.rss_bytes / 2**20:,.1f} MiB in {st.workers} worker(s)"
    )
