"""Bad input, every command: exit 2, one line on stderr, no "internal error", no traceback,
and nothing started (issue 12). One table; each row is a command line and a phrase the one
line must contain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conncap.cli import main

HERE = Path(__file__).resolve()
SRC = str(HERE.parents[2] / "src")


def _deep(tmp: Path) -> str:
    p = tmp / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    return str(p)


def _huge_int(tmp: Path) -> str:
    p = tmp / "huge.json"
    p.write_text('{"schema": "conncap.result/2", "requested": ' + "9" * 100_000 + "}")
    return str(p)


#: (argv, phrase). "{tmp}" is a fresh directory; "{deep}"/"{huge}" are bad result files.
CASES: list[tuple[list[str], str]] = [
    # sizes no host can run
    (["run", "--count", "1000000000000"], "more than this host can hold"),
    (["run", "--server-workers", "100000"], "more worker processes than this host can run"),
    (["open", "127.0.0.1:9", "--count", "99999999999999999999"], "more than this host"),
    (["open", "127.0.0.1:9", "--workers", "100000", "--count", "200000"], "worker processes"),
    (["serve", "--workers", "100000"], "more worker processes than this host can run"),
    (
        ["open", "127.0.0.1:1-65535", "--source-ip", "127.0.0.0/16", "--count", "10"],
        "(source IP, destination) pairs",
    ),
    (["open", "127.0.0.1:9", "--nofile", "99999999"], "hard limit"),
    (["run", "--client-nofile", "99999999"], "hard limit"),
    # numbers that are not finite or not in range
    (["open", "127.0.0.1:9", "--rate", "nan"], "--rate"),
    (["open", "127.0.0.1:9", "--timeout", "inf"], "--timeout"),
    (["open", "127.0.0.1:9", "--hold", "nan"], "--hold"),
    (["open", "127.0.0.1:9", "--max-duration", "nan"], "--max-duration"),
    (["open", "127.0.0.1:9", "--count", "0"], "--count"),
    (["open", "127.0.0.1:9", "--lifetime", "nan", "--rate", "5"], "--lifetime"),
    (["run", "--rate", "nan"], "--rate"),
    (["run", "--timeout", "inf"], "--timeout"),
    (["run", "--plateau", "nan"], "--plateau"),
    (["run", "--max-duration", "nan"], "--max-duration"),
    (["run", "--memory-guard", "inf"], "--memory-guard"),
    (["run", "--ports", "1001"], "--ports"),
    (["serve", "--duration", "nan"], "--duration"),
    (["serve", "--close-after", "inf"], "--close-after"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--backlog", "0"], "--backlog"),
    (["watch", "--interval", "nan"], "--interval"),
    (["watch", "--duration", "inf"], "--duration"),
    (["watch", "--count", "0"], "--count"),
    (["doctor", "--sample", "nan"], "--sample"),
    (["doctor", "--top", "0"], "--top"),
    # output paths checked before the run
    (["run", "--json", "{tmp}"], "is a directory"),
    (["run", "--json", "/proc/conncap-x.json"], "cannot write"),
    (["run", "--out", "/proc/conncap-x"], "cannot create"),
    (["open", "127.0.0.1:9", "--json", "{tmp}"], "is a directory"),
    (["serve", "--json", "/nonexistent/dir/s.json"], "no directory"),
    (["scenario", "article", "--json", "/nonexistent/dir/s.json"], "--json"),
    (["report", "{deep}", "-o", "{tmp}"], "{deep}"),
    # targets and sources
    (["open", "::1:80"], "[::1]:80"),
    (["open", "127.0.0.1:9", "--source-ip", "10.99.99.99"], "not an address of this host"),
    (["open", "127.0.0.1"], "host:port"),
    # results conncap report refuses
    (["report", "/dev/zero"], "/dev/zero"),
    (["report", "{deep}"], "deep.json"),
    (["report", "{huge}"], "huge.json"),
    (["report", "/nonexistent.json"], "no such file"),
    # the rest
    (["explain", "NOSUCHCODE"], "NOSUCHCODE"),
    (["scenario", "nosuch"], "nosuch"),
    (["run", "--frobnicate"], "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "phrase"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], phrase: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subs = {"{tmp}": str(tmp_path)}
    if any("{deep}" in a for a in argv) or "{deep}" in phrase:
        subs["{deep}"] = _deep(tmp_path)
    if any("{huge}" in a for a in argv):
        subs["{huge}"] = _huge_int(tmp_path)
    argv = [subs.get(a, a) for a in argv]
    phrase = subs.get(phrase, phrase)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert phrase in lines[0]
    assert "internal error" not in err and "Traceback" not in err


def test_traceback_works_before_and_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--traceback", "report", "/nonexistent.json"],
        ["report", "/nonexistent.json", "--traceback"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "no such file" in err


def test_deprecated_spelling_still_works_with_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    from conncap.cli import build_parser

    args = build_parser().parse_args(["serve", "--ports", "5000-5009"])
    assert args.port == "5000-5009"
    assert "--ports is deprecated; write --port P1-P2" in capsys.readouterr().err


def test_nothing_was_started_by_a_refused_size() -> None:
    """The size check comes before any fork: no child process is left or was made."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert main(["run", "--count", "1000000000000"]) == 2
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


def test_exit_codes_for_signals_follow_one_rule() -> None:
    import signal

    from conncap.exitcodes import ExitStatus, signal_exit

    assert signal_exit(signal.SIGINT) == ExitStatus.INTERRUPTED == 130
    assert signal_exit(signal.SIGTERM) == ExitStatus.TERMINATED == 143


def test_the_cli_in_a_subprocess_gives_one_line() -> None:
    """The installed entry point too (argparse exits from the parser there)."""
    r = subprocess.run(
        [sys.executable, "-m", "conncap", "run", "--rate", "nan"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--rate" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("signum", "code", "words"), [(2, 130, "conncap: interrupted"), (15, 143, "SIGTERM")]
)
def test_a_signal_inside_a_command_exits_by_the_rule(
    signum: int,
    code: int,
    words: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from conncap.commands import limits
    from conncap.netns.signals import Terminated

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt if signum == 2 else Terminated(signum)

    monkeypatch.setattr(limits, "run", interrupted)
    assert main(["limits"]) == code
    assert words in capsys.readouterr().err
