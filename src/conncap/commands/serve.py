"""``conncap serve``: a holding server on one or many ports, over worker processes."""

from __future__ import annotations

import argparse

HELP = "a holding server on one or many ports, many worker processes, survives exhaustion"

EXAMPLES = """\
examples:
  conncap serve --port 5000                     # hold every connection on 127.0.0.1:5000
  conncap serve --port 5000-5009 --workers 4    # ten ports, four processes
  conncap serve --bind ::1 --port 5000 --duration 60
  conncap serve --port 5000 --close-after 1     # the server closes first (churn)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conncap.commands.checks import (
        Deprecated,
        int_or_auto,
        int_range,
        nonneg_float,
        positive_float,
    )

    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (every interface only with 0.0.0.0 or ::)",
    )
    parser.add_argument(
        "--port",
        metavar="P|P1-P2",
        help="the port, or every port of a range, to listen on (default 0: any free one)",
    )
    parser.add_argument("--ports", dest="port", action=Deprecated, new="--port P1-P2")
    parser.add_argument(
        "--workers",
        type=int_or_auto(1),
        default=None,
        metavar="N|auto",
        help=f"worker processes (auto: as descriptors require for {AUTO_CONNECTIONS:,} "
        "connections)",
    )
    parser.add_argument(
        "--backlog",
        type=int_range(1),
        metavar="N",
        help="listen backlog (default: net.core.somaxconn)",
    )
    parser.add_argument(
        "--mode",
        choices=("hold", "echo"),
        default="hold",
        help="hold: accept and keep each connection, reading nothing; echo: send back what "
        "arrives (for `open --send`)",
    )
    parser.add_argument(
        "--duration", type=positive_float, metavar="S", help="stop after S seconds (default: never)"
    )
    parser.add_argument(
        "--close-after",
        type=nonneg_float,
        metavar="S",
        help="close each connection S seconds after accepting it (0: at once): the server "
        "closes first, so TIME_WAIT lands on the server's side (churn)",
    )
    parser.add_argument(
        "--nofile",
        type=int_range(16),
        metavar="N",
        help="each worker's RLIMIT_NOFILE (default: the hard limit)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the server's stats here at the end")
    from conncap.observe import add_observe_arguments

    add_observe_arguments(parser)


#: ``--workers auto`` makes room for this many connections (``conncap run``'s default count).
AUTO_CONNECTIONS = 100_000


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import time

    from rich.console import Console

    from conncap.commands.checks import check_output_file, check_workers, host_capacity
    from conncap.commands.liveline import StatusLine, elapsed_text
    from conncap.engine import ServerPool
    from conncap.engine.plan import auto_workers, parse_ports_arg, per_worker_capacity
    from conncap.engine.portrange import read_time_wait
    from conncap.errors import RunFailed
    from conncap.exitcodes import ExitStatus
    from conncap.observe.figures import from_server
    from conncap.observe.session import Observers
    from conncap.result import part_to_json, write_atomic
    from conncap.scenarios.isolated import check_nofile
    from conncap.stopping import SignalStop

    if args.port is None or args.port == "0":
        ports = [0]
    else:
        lo, hi = parse_ports_arg(args.port, "--port")
        ports = list(range(lo, hi + 1))
    if args.nofile is not None:
        check_nofile(args.nofile, "--nofile")  # above `ulimit -Hn` no worker could take it
    check_output_file(args.json, "--json")
    capacity = host_capacity(ends=1, nofile=args.nofile)
    notes: list[str] = []
    if args.workers is None:
        workers = min(capacity.workers, auto_workers(AUTO_CONNECTIONS, args.nofile))
        notes.append(
            f"--workers auto: {workers} worker process(es), each holding up to "
            f"{per_worker_capacity(args.nofile):,} connections (RLIMIT_NOFILE)"
        )
    else:
        workers = args.workers
        check_workers(workers, "--workers", capacity)

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    obs = Observers.from_args(args, "serve", say=lambda text: console.print(text, markup=False))
    sig = SignalStop(obs.on_signal)
    stop = sig.event

    sig.install()
    started = dt.datetime.now(dt.UTC)
    pool = ServerPool(
        bind=args.bind,
        ports=ports,
        workers=workers,
        backlog=args.backlog,
        mode=args.mode,
        nofile=args.nofile,
        close_after=args.close_after,
    )
    timeline: list[dict[str, object]] = []
    for note in notes:
        console.print(f"conncap: {note}", markup=False)
    peak = 0
    try:
        obs.start(getattr(args, "_argv", ()), bind=args.bind, workers=workers, mode=args.mode)
        pool.start()
        shown = pool.ports if len(pool.ports) <= 4 else [pool.ports[0], pool.ports[-1]]
        where = ", ".join(str(p) for p in shown) if len(pool.ports) <= 4 else "{}-{}".format(*shown)
        closing = (
            f", closing each connection {args.close_after:g} s after accept"
            if args.close_after is not None
            else ""
        )
        listening = (
            f"conncap serve: listening on {args.bind} port {where}, {workers} worker(s), "
            f"{args.mode} mode{closing}"
        )
        console.print(f"{listening}; Ctrl-C stops", markup=False)
        obs.message(listening)
        t0 = time.monotonic()
        last_acc, last_t = 0, t0
        with StatusLine(console) as line:
            while not stop.wait(0.25):
                now = time.monotonic()
                st = pool.stats()
                peak = max(peak, st.held)
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
                left = (
                    f" · stops in {elapsed_text(max(0.0, args.duration - (now - t0)))}"
                    if args.duration is not None
                    else ""
                )
                line.update(f"[{elapsed_text(now - t0)}{left}] {_line(st, rate)}")
                if args.duration is not None and now - t0 >= args.duration:
                    break
                if not pool.pids():
                    raise RunFailed("every server worker exited; see the lines above")
    finally:
        final = pool.stop(timeout=2.0)
        sig.restore()
        obs.close(held=final.held, accepted=final.accepted)
    console.print(_line(final, 0.0, final=True, peak=peak), markup=False)
    if args.json:
        doc = {
            "schema": "conncap.serve/1",
            "started_at": started.isoformat(timespec="seconds"),
            "bind": args.bind,
            "ports": final.ports,
            "workers": workers,
            "mode": args.mode,
            "close_after": args.close_after,
            "server": part_to_json(final.figures()),
            "timeline": timeline,
        }
        write_atomic(args.json, doc)
    return sig.exit_status(ExitStatus.SUCCESS)


def _line(st: object, rate: float, final: bool = False, peak: int = 0) -> str:
    from conncap.engine import ServerStats

    assert isinstance(st, ServerStats)
    errs = ", ".join(f"{k} {v:,}" for k, v in sorted(st.errors_by_cause.items())) or "none"
    if final:  # the counters as the workers last reported them, before they closed
        return (
            f"stopped: held {st.held:,} at the stop (peak {max(peak, st.held):,}) · accepted "
            f"{st.accepted:,} · errors {errs} · memory {st.rss_bytes / 2**20:,.1f} MiB in "
            f"{st.workers} worker(s)"
        )
    return (
        f"held {st.held:,} · accepted {st.accepted:,} · {rate:,.0f} accepts/s · errors {errs} · "
        f"memory {st.rss_bytes / 2**20:,.1f} MiB in {st.workers} worker(s)"
    )
