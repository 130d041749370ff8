"""``conncap explain CODE [--json]``: what an errno or Winsock code means for TCP connections,
which limit it points at, and how to raise that limit on Linux, macOS and Windows."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conncap.catalogue import Advice, Cause, Entry

HELP = (
    "explain an error code (EADDRNOTAVAIL, 99, 10048, WSAENOBUFS) or a cause id "
    "(ephemeral-ports): its meaning, the limit behind it and how to raise it"
)

EXAMPLES = """\
examples:
  conncap explain EADDRNOTAVAIL
  conncap explain 10048                         # WSAEADDRINUSE
  conncap explain time-wait
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "code",
        nargs="?",
        metavar="CODE",
        help="errno name or number of this OS (EMFILE, 24), Winsock code (10048, "
        "WSAEADDRINUSE), a cause id (ephemeral-ports, server-closed, firewall), EOF, or the "
        "message you saw ('Cannot assign requested address', 'Connection reset by peer')",
    )
    parser.add_argument("--json", action="store_true", help="print the entry as JSON")
    parser.add_argument(
        "--list", action="store_true", help="list every catalogued code and cause id"
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from conncap import catalogue
    from conncap.errors import UsageError
    from conncap.exitcodes import ExitStatus

    if args.list:
        doc = [
            {"name": e.name, "numbers": list(e.numbers), "cause": str(e.cause)}
            for e in catalogue.entries()
        ]
        if args.json:
            json.dump(
                {"codes": doc, "causes": [str(c) for c in catalogue.Cause]}, sys.stdout, indent=2
            )
            sys.stdout.write("\n")
        else:
            for e in catalogue.entries():
                nums = ", ".join(str(n) for n in e.numbers) or "-"
                sys.stdout.write(f"{e.name:<18} {nums:<7} {e.cause}\n")
            sys.stdout.write("causes: " + ", ".join(str(c) for c in catalogue.Cause) + "\n")
        return ExitStatus.SUCCESS
    if not args.code:
        raise UsageError("explain needs a CODE (e.g. `conncap explain EMFILE`) or --list")

    code = args.code
    if _as_cause(code) is None and not _is_code(code):
        code = catalogue.code_of_message(code) or code  # a pasted message ("Connection refused")
    cause = _as_cause(code)
    if cause is not None:
        per_os = {os: catalogue.advice(cause, os) for os in ("linux", "macos", "windows")}
        if args.json:
            json.dump({k: a.to_json() for k, a in per_os.items()}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(_cause_text(cause, per_os))
        return ExitStatus.SUCCESS

    entry = catalogue.lookup(code)
    if args.json:
        json.dump(entry.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(entry_text(entry))
    return ExitStatus.SUCCESS


def _is_code(text: str) -> bool:
    """An errno or Winsock name or number the catalogue knows."""
    from conncap import catalogue
    from conncap.errors import UsageError

    try:
        catalogue.lookup(text)
    except UsageError:
        return False
    return True


def _as_cause(text: str) -> Cause | None:
    from conncap.catalogue import Cause

    try:
        return Cause(text.strip().lower())
    except ValueError:
        return None


_WIDTH = 100
_OS_LABEL = {"linux": "Linux", "macos": "macOS", "windows": "Windows"}


def _wrap(label: str, text: str) -> list[str]:
    """``label`` then ``text`` wrapped at 100 columns, continuation lines under the text."""
    import textwrap

    head = f"  {label:<{max(9, len(label) + 1)}}" if label else "  "
    return textwrap.wrap(
        text, width=_WIDTH, initial_indent=head, subsequent_indent=" " * len(head)
    ) or [head.rstrip()]


def entry_text(e: Entry) -> str:
    """The entry as a person reads it (used by ``conncap explain`` and its tests)."""
    from conncap.catalogue import advice

    nums = ", ".join(str(n) for n in e.numbers)
    where = "Winsock" if e.platform == "windows" else "POSIX errno"
    head = f"{e.name} ({where} {nums})" if nums else f"{e.name} ({where}, not on this OS)"
    out = [head, *_wrap("", e.meaning), ""]
    out.append(f"  cause:   {e.cause} ({e.side} side)")
    for op, c in e.by_op:
        out.append(f"           on {op}(): {c}")
    out += _wrap("when:", e.when)
    if e.knob:
        out += _wrap("knob:", e.knob)
    raises = (("Linux", e.raise_linux), ("macOS", e.raise_macos), ("Windows", e.raise_windows))
    if any(cmds for _, cmds in raises):
        out += ["", "  how to raise it:"]
        for label, cmds in raises:
            for i, cmd in enumerate(cmds):
                out.append(f"    {label + ':' if i == 0 else '':<9}{cmd}")
    win = advice(e.cause, "windows").windows
    if win:
        out += _wrap("Windows:", win) if not e.raise_windows else _wrap("", "(" + win + ")")
    for cause in dict.fromkeys(c for _, c in e.by_op if c != e.cause):
        ops = ", ".join(f"{op}()" for op, c in e.by_op if c == cause)
        per_os = [(_OS_LABEL[k], advice(cause, k)) for k in ("linux", "macos", "windows")]
        if not any(a.commands for _, a in per_os):
            continue
        out += ["", f"  on {ops} it is {cause}; to raise that:"]
        for label, a in per_os:
            for i, cmd in enumerate(a.commands):
                out.append(f"    {label + ':' if i == 0 else '':<9}{cmd}")
    out.append("")
    if e.windows_equivalent:
        out += _wrap("on Windows:", e.windows_equivalent)
    if e.posix_equivalent:
        out += _wrap("on POSIX:", e.posix_equivalent)
    if e.note:
        out += _wrap("note:", e.note)
    return "\n".join(out).rstrip() + "\n"


def _cause_text(cause: Cause, per_os: dict[str, Advice]) -> str:
    lines = [f"{cause}"]
    first = next(iter(per_os.values()))
    if first.note:
        lines += _wrap("", first.note)
    for os_name, a in per_os.items():
        lines += ["", f"  {_OS_LABEL.get(os_name, os_name)}: {a.knob or '(no knob to raise)'}"]
        lines += [f"    {c}" for c in a.commands]
        lines += [f"    check: {c}" for c in a.checks]
    if first.windows:
        lines += ["", *_wrap("Windows:", first.windows)]
    return "\n".join(lines) + "\n"
