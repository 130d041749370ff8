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
    parser.add_argument(
        "--nodes",
        type=int,
        metavar="K",
        help="cluster: client hosts, each a Ray node (at least 3; default 3)",
    )
    from conncap.observe import add_observe_arguments

    add_observe_arguments(parser)


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
    if args.metrics:
        from conncap.errors import UsageError

        raise UsageError(
            "--metrics needs root for a scenario: without it the scenario runs inside a "
            "private network namespace that no scraper outside can reach"
        )
    argv = [sys.executable, "-m", "conncap", "scenario", args.name, "--scale", args.scale]
    if args.json:
        argv += ["--json", os.path.abspath(args.json)]
    if args.nodes is not None:
        argv += ["--nodes", str(args.nodes)]
    if args.events:
        argv += ["--events", args.events if args.events == "-" else os.path.abspath(args.events)]
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
    options: dict[str, int | str] = {}
    if args.nodes is not None:
        if args.name != "cluster":
            raise UsageError("--nodes is an option of the cluster scenario")
        if args.nodes < 3:
            raise UsageError("--nodes must be at least 3")
        options["nodes"] = args.nodes
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise UsageError(f"--json {args.json}: cannot write in {parent}")
    code = _reexec_in_userns(args)
    if code is not None:
        return code
    from conncap.observe.session import Observers

    # with --events -, the event stream is the only thing on stdout
    text = sys.stderr if args.events == "-" else sys.stdout
    obs = Observers.from_args(args, "scenario")

    def out(line: str) -> None:
        text.write(line + "\n")
        text.flush()
        obs.message(line)

    obs.start(getattr(args, "_argv", ()), scenario=args.name, scale=args.scale)
    passed: bool | None = None
    try:
        outcome = run_scenario(
            args.name,
            scale=args.scale,
            out=out,
            json_path=args.json,
            options=options,
            on_sample=obs.on_sample,
            on_event=obs.on_event,
        )
        passed = outcome.passed
        for line in outcome.result.summary:
            out(line)
        if args.json:
            out(f"result written to {args.json} (`conncap report {args.json}` renders it)")
    finally:
        obs.close(passed=passed)
    return ExitStatus.SUCCESS if outcome.passed else ExitStatus.FAILURE
