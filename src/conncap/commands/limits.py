"""``conncap limits [--json]``: this host's connection limits and the ceiling each implies."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conncap.model import Plan

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
    from conncap.model import describe, predict, to_json

    host = read_limits()
    plans = _plans()
    if args.json:
        doc = limits_to_json(host)
        doc["predictions"] = [
            {"plan": label, **to_json(predict(host, plan))} for label, plan in plans
        ]
        json.dump(doc, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return ExitStatus.SUCCESS
    print_limits(host)
    print("\nPredicted ceilings (the model, docs/model.md):")
    for label, plan in plans:
        print(f"  {label}: {describe(predict(host, plan), plan)}")
    return ExitStatus.SUCCESS


def _plans() -> list[tuple[str, Plan]]:
    """The plans `limits` predicts for: what a user most often asks about."""
    from conncap.model import Plan

    return [
        ("one process, 1 source IP, 1 destination", Plan()),
        (
            "enough processes, 1 source IP, 1 destination",
            Plan(client_processes=64, server_processes=64),
        ),
        (
            "enough processes, 4 source IPs, 4 destination ports",
            Plan(
                source_ips=4,
                destinations=4,
                client_processes=64,
                server_processes=64,
                bind="bind-no-port",
            ),
        ),
    ]
