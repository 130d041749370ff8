"""``conncap report RESULT.json -o report.html``: a self-contained HTML report of a result."""

from __future__ import annotations

import argparse

HELP = "write a self-contained HTML report (plots, summary, limits) of a result JSON"

EXAMPLES = """\
examples:
  conncap report results/result.json            # writes results/result.html
  conncap report r.json -o /tmp/report.html
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "result", metavar="RESULT.json", help="a conncap result (conncap.result/2; /1 is read too)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="REPORT.html",
        help="where to write the report (default: RESULT.html next to the input)",
    )


def run(args: argparse.Namespace) -> int:
    from conncap import report

    path = report.build(args.result, args.output)
    print(path)
    return 0
