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

EXAMPLES = """\
examples:
  conncap limits
  conncap limits --json | jq .predictions
"""


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
    from conncap.model.churn import sustainable_rate

    host = read_limits()
    plans = _plans()
    if args.json:
        doc = limits_to_json(host)
        doc["predictions"] = [
            {"plan": label, **to_json(predict(host, plan))} for label, plan in plans
        ]
        doc["churn"] = [
            {"plan": label, **sustainable_rate(host, plan).to_json()}
            for label, plan in _churn_plans()
        ]
        json.dump(doc, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return ExitStatus.SUCCESS
    print_limits(host)
    print("\nPredicted ceilings (the model, docs/model.md):")
    for label, plan in plans:
        print(f"  {label}: {describe(predict(host, plan), plan)}")
    _print_churn(host)
    return ExitStatus.SUCCESS


def _churn_plans() -> list[tuple[str, Plan]]:
    """Plans whose sustainable churn rate `limits` shows (client FIN closes, lifetime 0)."""
    from conncap.model import Plan

    return [
        ("1 source IP to 1 remote server", Plan(loopback=False)),
        ("1 source IP to 1 server over loopback", Plan(loopback=True)),
        (
            "4 source IPs to 4 remote server ports",
            Plan(source_ips=4, destinations=4, bind="bind-no-port", loopback=False),
        ),
    ]


def _print_churn(host: object) -> None:
    """TIME_WAIT now, its length, tcp_tw_reuse, and the sustainable rate of new connections."""
    from conncap.limits import HostLimits
    from conncap.model.churn import sustainable_rate, time_wait_length

    assert isinstance(host, HostLimits)
    tw = time_wait_length(host)
    now = host.extra.get("time_wait_now")
    count = f"{now.value:,}" if now is not None and now.value is not None else "unknown"
    length = f"{tw.seconds:g} s" if tw.seconds is not None else "unknown"
    print(
        f"\nChurn (docs/model.md, `conncap explain time-wait`): {count} sockets in TIME_WAIT now;"
    )
    print(f"  TIME_WAIT lasts {length}: {tw.detail}")
    print("  sustainable new connections/s when the client closes first with a FIN:")
    for label, plan in _churn_plans():
        p = sustainable_rate(host, plan)
        if p.unbounded or p.sustainable_rate is None:
            rate = f"no port limit: {p.detail}" if p.unbounded else p.detail
        else:
            rate = f"{p.sustainable_rate:,.1f}/s ({p.ports or 0:,} ports ÷ {p.port_hold_s:g} s)"
        reuse = f"; {p.reuse.detail}" if p.reuse.reuses else ""
        print(f"  {label}: {rate}{reuse}")
    print(
        "  keep-alive / pooled connections, a server that closes first, or RST closes take "
        "TIME_WAIT off the client's ports"
    )


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
