"""``conncap run``: the complete, safe experiment over loopback: predict the ceiling, find it,
lift it by changing the 4-tuple, measure memory per connection, and explain it all."""

from __future__ import annotations

import argparse

HELP = (
    "the whole experiment: predict the ceiling, find it over loopback, lift it, measure "
    "memory per connection, and explain"
)

# Defaults repeated here so that `conncap --help` does not import the engine.
_COUNT = 100_000
_MAX_DURATION = 120.0
_GUARD = 0.25


def _workers(text: str) -> int | None:
    """A count of at least 1, or auto (None)."""
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or auto") from None
    if n < 1:
        raise argparse.ArgumentTypeError("at least 1 (or auto)")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--count",
        type=int,
        default=_COUNT,
        metavar="N",
        help=f"connections to hold at most (default {_COUNT:,}: past a default Linux port range)",
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=_MAX_DURATION,
        metavar="S",
        help=f"stop the whole run after S seconds (default {_MAX_DURATION:.0f})",
    )
    parser.add_argument(
        "--memory-guard",
        type=float,
        default=_GUARD,
        metavar="FRACTION",
        help="stop before MemAvailable falls below this fraction of its value at the start "
        f"(default {_GUARD})",
    )
    parser.add_argument(
        "--no-escalate",
        dest="escalate",
        action="store_false",
        help="only step 1 (one source IP to one port); skip step 2, which changes the 4-tuple",
    )
    parser.add_argument(
        "--source-ips",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="step 2: source addresses 127.0.0.1 .. 127.0.0.N (auto: enough that each "
        "(source IP, port) pair stays at most half full)",
    )
    parser.add_argument(
        "--ports",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="step 2: server ports (auto: as for --source-ips)",
    )
    parser.add_argument(
        "--client-workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="client processes per step (auto: as descriptors require)",
    )
    parser.add_argument(
        "--server-workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="server processes (auto: as descriptors require for --count)",
    )
    parser.add_argument(
        "--client-nofile",
        type=int,
        metavar="N",
        help="each client worker's RLIMIT_NOFILE (default: the hard limit)",
    )
    parser.add_argument(
        "--server-nofile",
        type=int,
        metavar="N",
        help="each server worker's RLIMIT_NOFILE (default: the hard limit)",
    )
    parser.add_argument(
        "--rate", type=float, metavar="R", help="connects per second per step (default: max)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, metavar="S", help="handshake timeout (default 3)"
    )
    parser.add_argument(
        "--plateau",
        type=float,
        default=1.5,
        metavar="S",
        help="seconds each step's level is held and sampled (default 1.5)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the conncap.result/1 document here")
    parser.add_argument(
        "--out", metavar="DIR", help="write DIR/result.json and DIR/report.html (plots)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no live view or progress, only the summary"
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading
    from pathlib import Path
    from typing import Any

    from rich.console import Console

    from conncap.errors import RunFailed, UsageError
    from conncap.exitcodes import ExitStatus
    from conncap.result import write_atomic
    from conncap.run import Experiment, RunConfig
    from conncap.run.live import LiveView, print_summary

    config = RunConfig(
        count=args.count,
        max_duration=args.max_duration,
        memory_guard=args.memory_guard,
        escalate=args.escalate,
        source_ips=args.source_ips,
        ports=args.ports,
        client_workers=args.client_workers,
        server_workers=args.server_workers,
        rate=args.rate,
        timeout_s=args.timeout,
        plateau_s=args.plateau,
        client_nofile=args.client_nofile,
        server_nofile=args.server_nofile,
    )
    config.check()
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")

    console = Console(highlight=False, soft_wrap=True)
    mode = "quiet" if args.quiet else ("live" if console.is_terminal else "plain")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting (the clean-up still runs)
            raise KeyboardInterrupt
        stop.set()

    old: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, on_signal)
    try:
        with LiveView(console, mode) as view:
            doc = Experiment(config, observer=view, stop_event=stop).run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    written: list[str] = []
    if args.json:
        written.append(str(write_atomic(args.json, doc)))
    if out_dir is not None:
        from conncap import report

        written.append(str(write_atomic(out_dir / "result.json", doc)))
        try:
            written.append(
                str(report.write_text_atomic(out_dir / "report.html", report.render(doc)))
            )
        except OSError as exc:
            raise UsageError(f"{out_dir}: cannot write the report ({exc})") from None
    print_summary(console, doc["summary"])
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    if doc["stop_reason"] == "error":
        raise RunFailed(str(doc.get("error") or "the run failed"))
    if doc["stop_reason"] == "interrupted":
        return ExitStatus.INTERRUPTED
    return ExitStatus.SUCCESS
