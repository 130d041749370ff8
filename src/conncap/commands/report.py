"""``conncap report RESULT.json -o report.html``: a self-contained HTML report of a result;
``conncap report A.json B.json -o cmp.html`` compares two; ``--csv DIR`` writes the timeline
(and the steps) as CSV."""

from __future__ import annotations

import argparse

HELP = (
    "write a self-contained HTML report (plots, summary, limits) of a result JSON, or compare two"
)

EXAMPLES = """\
examples:
  conncap report results/result.json            # writes results/result.html
  conncap report r.json -o /tmp/report.html
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "result",
        nargs="+",
        metavar="RESULT.json",
        help="a conncap result (conncap.result/2; /1 is read too); two: a comparison page",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="REPORT.html",
        help="where to write the report (default: RESULT.html, or A-vs-B.html, next to the input)",
    )
    parser.add_argument(
        "--csv",
        metavar="DIR",
        help="also write DIR/timeline.csv (one row per sample) and DIR/steps.csv (a run's steps) "
        "of the (first) result",
    )


def run(args: argparse.Namespace) -> int:
    from conncap import report
    from conncap.errors import UsageError

    if len(args.result) > 2:
        raise UsageError("report takes one result, or two to compare")
    if len(args.result) == 2:
        path = report.build_compare(args.result[0], args.result[1], args.output)
    else:
        path = report.build(args.result[0], args.output)
    print(path)
    if args.csv:
        from conncap.report.csvout import write_csv
        from conncap.result import load_result

        try:
            written = write_csv(load_result(args.result[0]), args.csv)
        except OSError as exc:
            raise UsageError(
                f"--csv {args.csv}: cannot write there ({exc.strerror or exc})"
            ) from None
        for p in written:
            print(p)
    return 0
