"""``conncap run`` flags: bad input is one line on stderr and exit 2, never a traceback, and
nothing is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from conncap.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--count", "0"], "argument --count: must be at least 1"),
        (["run", "--memory-guard", "1.5"], "--memory-guard"),
        (["run", "--max-duration", "-1"], "argument --max-duration: must be a positive number"),
        (["run", "--client-workers", "lots"], "--client-workers"),
        (["run", "--source-ips", "0"], "--source-ips"),
        (["run", "--count", "3", "--client-workers", "4"], "--client-workers 4 is more than"),
        (["run", "--rate", "-5"], "argument --rate: must be a positive number"),
        (["run", "--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from the parser
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    assert main(["run", "--count", "10", "--out", str(f)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--count",
        "--max-duration",
        "--memory-guard",
        "--no-escalate",
        "--source-ips",
        "--ports",
        "--client-workers",
        "--server-workers",
        "--rate",
        "--json",
        "--out",
        "--quiet",
    ):
        assert flag in out


def test_flag_defaults_are_the_run_defaults() -> None:
    from conncap.cli import build_parser
    from conncap.run import RunConfig

    args = build_parser().parse_args(["run"])
    cfg = RunConfig()
    assert args.count == cfg.count
    assert args.max_duration == cfg.max_duration
    assert args.memory_guard == cfg.memory_guard
    assert args.timeout == cfg.timeout_s
    assert args.plateau == cfg.plateau_s
    assert (args.source_ips, args.ports) == (cfg.source_ips, cfg.ports)
    assert (args.client_workers, args.server_workers) == (None, None)
    assert args.escalate is True
