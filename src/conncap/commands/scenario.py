"""``conncap scenario NAME``: run a named experiment between network namespaces and check
its expected outcome against the measurement (✓/✗ per expectation; exit 1 if one fails)."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "run a named experiment in network namespaces (article, four-tuple, nat, ...) and check it"

EXAMPLES = """\
examples:
  conncap scenario --list
  sudo conncap scenario article                 # the founding article's story, in namespaces
  sudo conncap scenario four-tuple --scale small --json ft.json
"""

#: Set in the environment of a conncap re-run inside a user namespace (no second re-run).
USERNS_ENV = "CONNCAP_IN_USERNS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="the scenario (see --list)")
    parser.add_argument(
        "--list", action="store_true", help="list the scenarios and what each shows"
    )
    parser.add_argument(
        "--scale",
        choices=("small", "full"),
        default="full",
        help="full: the sizes in docs/scenarios.md (the article's real port ranges); small: "
        "smaller counts where the lesson allows, for tests (default full)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the conncap.result/1 document here")


def _list() -> int:
    from conncap.scenarios.registry import SCENARIOS

    width = max(len(n) for n in SCENARIOS)
    for s in SCENARIOS.values():
        sys.stdout.write(f"{s.name:<{width}}  {s.title}\n")
        sys.stdout.write(f"{'':<{width}}  shows: {s.shows}\n")
    return 0


def _reexec_in_userns(args: argparse.Namespace) -> int | None:
    """Not root, but the kernel allows unprivileged user namespaces: run this same command
    as root of a private user + network namespace (nothing is visible to the host, all of it
    goes when the command ends). None when that is not possible (the caller reports why)."""
    import subprocess

    from conncap.netns import check_support, userns_command

    if os.geteuid() == 0 or os.environ.get(USERNS_ENV):
        return None
    support = check_support()
    if not support.userns:
        return None
    argv = [sys.executable, "-m", "conncap", "scenario", args.name, "--scale", args.scale]
    if args.json:
        argv += ["--json", os.path.abspath(args.json)]
    env = dict(os.environ, **{USERNS_ENV: "1"})
    sys.stderr.write("conncap: not root; running inside an unprivileged user namespace\n")
    proc = subprocess.Popen(userns_command(argv), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C and cleans up after itself
        proc.wait()
        raise


def run(args: argparse.Namespace) -> int:
    from conncap.errors import UsageError
    from conncap.exitcodes import ExitStatus

    if args.list:
        return _list()
    if not args.name:
        raise UsageError("name a scenario, or use --list to see them")
    from conncap.scenarios.registry import get, run_scenario

    get(args.name)  # an unknown name is a usage error before anything is built
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise UsageError(f"--json {args.json}: cannot write in {parent}")
    code = _reexec_in_userns(args)
    if code is not None:
        return code

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    outcome = run_scenario(args.name, scale=args.scale, out=out, json_path=args.json)
    for line in outcome.result.summary:
        out(line)
    if args.json:
        out(f"result written to {args.json} (`conncap report {args.json}` renders it)")
    return ExitStatus.SUCCESS if outcome.passed else ExitStatus.FAILURE
