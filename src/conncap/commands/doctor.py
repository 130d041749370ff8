"""``conncap doctor [--json] [--netns NAME]``: one reading of this host's nearest connection
ceilings (ephemeral port pools, TIME_WAIT, descriptors, listeners, conntrack, socket memory),
without opening a connection. docs/doctor.md."""

from __future__ import annotations

import argparse

HELP = (
    "read this host's sockets and limits (no traffic) and name the nearest ceilings: port "
    "pools, TIME_WAIT, descriptors, accept queues, conntrack, socket memory"
)

EXAMPLES = """\
examples:
  conncap doctor
  sudo conncap doctor --netns conncap-60c51c-demo --top 3
  conncap doctor --json --sample 0
"""


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags doctor and watch share."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the conncap.doctor/1 JSON document (docs/doctor.md); watch: one per line",
    )
    parser.add_argument(
        "--netns",
        metavar="NAME",
        help="read network namespace NAME (/run/netns/NAME) instead of this one (needs root)",
    )
    from conncap.commands.checks import int_range

    parser.add_argument(
        "--top",
        type=int_range(1),
        default=10,
        metavar="N",
        help="show the N fullest of each (default 10)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conncap.commands.checks import float_range

    add_common(parser)
    parser.add_argument(
        "--sample",
        type=float_range(0, 60),
        default=1.0,
        metavar="S",
        help="seconds between the two reads of ListenOverflows/ListenDrops and conntrack "
        "insert_failed that give their rates (default 1; 0: no rates)",
    )


def check_common(args: argparse.Namespace) -> None:
    from conncap.errors import UsageError

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, not {args.top}")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from conncap.doctor.platform import inside, run_in_netns, unsupported
    from conncap.errors import UsageError
    from conncap.exitcodes import ExitStatus

    check_common(args)
    if not 0 <= args.sample <= 60:
        raise UsageError(f"--sample must be between 0 and 60 seconds, not {args.sample}")
    if not sys.platform.startswith("linux"):
        return unsupported("conncap doctor")
    if not inside(args.netns):
        argv = ["doctor", "--sample", str(args.sample), "--top", str(args.top)]
        argv += ["--json"] if args.json else []
        return run_in_netns(args.netns, [*argv, "--netns", args.netns])

    from conncap.doctor.collect import take_reading
    from conncap.doctor.render import print_report, to_json
    from conncap.doctor.verdict import analyse

    report = analyse(take_reading(sample_s=args.sample))
    if args.json:
        json.dump(to_json(report, args.top), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print_report(report, args.top)
    return ExitStatus.SUCCESS
