"""The ``--events`` and ``--metrics`` flags every measuring command shares (light: argparse
only, so ``conncap --help`` stays fast)."""

from __future__ import annotations

import argparse


def add_observe_arguments(parser: argparse.ArgumentParser, *, metrics: bool = True) -> None:
    parser.add_argument(
        "--events",
        metavar="FILE",
        help="write the event stream here as NDJSON, one line per sample and event, flushed "
        "per line (- for stdout; docs/events.md)",
    )
    if metrics:
        parser.add_argument(
            "--metrics",
            metavar="ADDR:PORT",
            help="serve the live figures for Prometheus at http://ADDR:PORT/metrics (loopback "
            "unless another address is given; needs pip install 'conncap[metrics]'; "
            "docs/metrics.md)",
        )
