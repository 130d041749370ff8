"""``conncap limits [--json]``: this host's connection limits and the ceiling each implies."""

from __future__ import annotations

import argparse

HELP = (
    "show this host's connection limits (ports, descriptors, memory, backlog, conntrack) "
    "and the ceiling each implies"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the conncap.limits/1 JSON document (docs/limits-schema.md) instead of tables",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from conncap.exitcodes import ExitStatus
    from conncap.limits import read_limits
    from conncap.limits.render import limits_to_json, print_limits

    host = read_limits()
    if args.json:
        json.dump(limits_to_json(host), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return ExitStatus.SUCCESS
    print_limits(host)
    return ExitStatus.SUCCESS
