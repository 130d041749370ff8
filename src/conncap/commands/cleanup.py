"""``conncap cleanup``: remove network namespaces that killed runs left behind."""

from __future__ import annotations

import argparse
import os
import sys

from conncap.errors import RunFailed

HELP = "remove network namespaces (and veths) left behind by conncap runs that were killed"

EXAMPLES = """\
examples:
  conncap cleanup --dry-run                     # what a killed run left behind
  sudo conncap cleanup                          # remove it (live runs are never touched)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only print what would be removed",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        dest="remove_unrecorded",
        help="also remove conncap-* namespaces that no run record names "
        "(namespaces of runs still alive are always kept)",
    )


def run(args: argparse.Namespace) -> int:
    from conncap.netns import Registry, Shell, carry_out, survey

    if os.geteuid() != 0 and not args.dry_run:
        raise RunFailed(
            "cleanup deletes network namespaces, which needs root: run `sudo conncap cleanup` "
            "(or `conncap cleanup --dry-run` to look)"
        )
    shell, registry = Shell(), Registry()
    plan = survey(shell, registry, remove_unrecorded=args.remove_unrecorded)
    lines, failed = carry_out(plan, shell, registry, dry_run=args.dry_run)
    if plan.empty:
        lines.insert(0, "nothing to clean up: no namespace left by a dead conncap run")
    for line in lines:
        sys.stdout.write(line + "\n")
    if failed:
        raise RunFailed(f"could not remove {'; '.join(failed)}")
    return 0
