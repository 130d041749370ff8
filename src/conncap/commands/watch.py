"""``conncap watch [--interval S] [--count N] [--duration S]``: ``conncap doctor`` live, with
each pool's fill rate and time to full. Ctrl-C prints the last reading and exits 130."""

from __future__ import annotations

import argparse

HELP = (
    "conncap doctor, live: redraw the nearest ceilings every interval, with each pool's "
    "fill rate and time to full"
)

EXAMPLES = """\
examples:
  conncap watch                                 # every 2 s until Ctrl-C
  conncap watch --interval 1 --count 30 --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conncap.commands.checks import float_range, int_range, positive_float
    from conncap.commands.doctor import add_common

    add_common(parser)
    parser.add_argument(
        "--interval",
        type=float_range(0.1, 3600),
        default=2.0,
        metavar="S",
        help="seconds between readings (default 2)",
    )
    parser.add_argument("--count", type=int_range(1), metavar="N", help="stop after N readings")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve each reading for Prometheus at http://ADDR:PORT/metrics (loopback unless "
        "another address is given; with --netns, inside that namespace; needs pip install "
        "'conncap[metrics]'; docs/metrics.md)",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from conncap.commands.doctor import check_common
    from conncap.doctor.platform import inside, run_in_netns, unsupported
    from conncap.errors import UsageError
    from conncap.exitcodes import ExitStatus

    check_common(args)
    if not 0.1 <= args.interval <= 3600:
        raise UsageError(f"--interval must be between 0.1 and 3600 seconds, not {args.interval}")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, not {args.count}")
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, not {args.duration}")
    if not sys.platform.startswith("linux"):
        return unsupported("conncap watch")
    if not inside(args.netns):
        argv = ["watch", "--interval", str(args.interval), "--top", str(args.top)]
        argv += ["--count", str(args.count)] if args.count is not None else []
        argv += ["--duration", str(args.duration)] if args.duration is not None else []
        argv += ["--json"] if args.json else []
        argv += ["--metrics", args.metrics] if args.metrics else []
        return run_in_netns(args.netns, [*argv, "--netns", args.netns])

    from rich.console import Console

    from conncap.doctor.collect import take_reading
    from conncap.doctor.live import (
        JsonLinesSink,
        MetricsSink,
        PlainSink,
        Sink,
        TerminalSink,
        watch,
    )
    from conncap.doctor.reading import Counters, Reading

    sinks: list[Sink] = []
    if args.metrics:
        exporter = MetricsSink(args.metrics, args.top)  # a bad address: one line, exit 2
        url = exporter.start()
        sys.stderr.write(f"conncap: metrics at {url}\n")
        if not exporter.loopback:
            sys.stderr.write(
                f"conncap: warning: --metrics listens on {exporter.host}, not loopback: "
                "anyone who can reach it can read these figures\n"
            )
        sys.stderr.flush()
        sinks.append(exporter)
    sink: Sink
    if args.json:
        sink = JsonLinesSink(_write_flush, args.top)
    else:
        console = Console()
        sink = (
            TerminalSink(console, args.top) if console.is_terminal else PlainSink(console, args.top)
        )

    def take(baseline: Counters | None) -> Reading:
        # The first reading samples the counters over at most a second for its rates.
        return take_reading(sample_s=min(args.interval, 1.0), baseline=baseline)

    try:
        _, interrupted = watch(
            take,
            [sink, *sinks],
            interval_s=args.interval,
            count=args.count,
            duration_s=args.duration,
        )
    finally:
        for extra in sinks:  # stopped on an error too (close() already ran otherwise)
            extra.close(None, False)
    if interrupted:
        sys.stderr.write("conncap: interrupted\n")
        return ExitStatus.INTERRUPTED
    return ExitStatus.SUCCESS


def _write_flush(text: str) -> None:
    import sys

    sys.stdout.write(text)
    sys.stdout.flush()
