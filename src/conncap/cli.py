"""Command-line entry point: parses arguments and delegates to ``conncap.commands.*``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Command modules keep heavy imports (matplotlib, the engine) inside
``run`` so that ``conncap --help`` and ``conncap explain`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from conncap import __version__
from conncap.errors import ConncapError
from conncap.exitcodes import ExitStatus, signal_exit

#: Sub-command name -> module under ``conncap.commands``. Order is the order of ``--help``.
COMMANDS: dict[str, str] = {
    "run": "run",
    "limits": "limits",
    "doctor": "doctor",
    "watch": "watch",
    "explain": "explain",
    "serve": "serve",
    "open": "open_",
    "report": "report",
    "scenario": "scenario",
    "cleanup": "cleanup",
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written (the epilog), and every flag's default shown unless its help
    already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit 2 (never a traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog
        if prog == "conncap":
            # argparse reports a sub-command's unknown flags from the top-level parser.
            command = next((a for a in sys.argv[1:] if a in COMMANDS), None)
            if command is not None:
                prog = f"conncap {command}"
        sys.stderr.write(f"conncap: error: {message} (see `{prog} --help`)\n")
        raise SystemExit(ExitStatus.USAGE)


def _load(module: str) -> ModuleType:
    """The command's module; a missing one is a bug and raises."""
    return importlib.import_module(f"conncap.commands.{module}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="conncap",
        description=(
            "Measure how many TCP connections this host can hold and open, explain which "
            "limit stopped it, predict that ceiling, and say how to raise it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"conncap {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="on error, print the full Python traceback"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EXAMPLES", None),
            formatter_class=_Formatter,
        )
        # SUPPRESS as default: `conncap --traceback CMD` is not undone by the sub-parser.
        p.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run conncap; returns an :class:`ExitStatus` value."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # bad usage was reported in one line; --help/--version exit 0
        if exc.code == ExitStatus.USAGE:
            return ExitStatus.USAGE
        raise
    # the exact command line, for the result (a report says how to reproduce the run)
    args._argv = ["conncap", *(sys.argv[1:] if argv is None else argv)]
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitStatus.USAGE
    try:
        return int(args._run(args))
    except ConncapError as exc:
        if args.traceback:
            traceback.print_exc()
        sys.stderr.write(f"conncap: {exc}\n")
        return int(exc.exit_status)
    except KeyboardInterrupt as exc:
        if args.traceback:
            traceback.print_exc()
        signum = getattr(exc, "signum", None)  # netns.signals.Terminated: SIGTERM, SIGHUP
        sys.stderr.write(f"conncap: {str(exc) or 'interrupted'}\n")
        return signal_exit(signum) if signum is not None else ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.SUCCESS
    except Exception as exc:  # the one place that turns a bug into a line
        if args.traceback:
            traceback.print_exc()
        else:
            sys.stderr.write(
                f"conncap: internal error: {type(exc).__name__}: {exc} "
                "(run again with --traceback and report it)\n"
            )
        return ExitStatus.FAILURE
