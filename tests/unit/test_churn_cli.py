"""``open --lifetime`` and ``serve --close-after`` refuse bad values with one line and exit 2,
before anything is opened."""

from __future__ import annotations

import pytest

from conncap.cli import main

BAD_OPEN = [
    ["--lifetime", "-1", "--rate", "10"],
    ["--lifetime", "nan", "--rate", "10"],
    ["--lifetime", "inf", "--rate", "10"],
    ["--lifetime", "0", "--rate", "0"],
    ["--lifetime", "0", "--rate", "-5"],
    ["--lifetime", "0", "--rate", "nan"],
    ["--lifetime", "0", "--rate", "inf"],
    ["--lifetime", "0"],  # no --rate
    ["--lifetime", "0", "--rate", "10", "--duration", "0"],
    ["--lifetime", "0", "--rate", "10", "--duration", "inf"],
    ["--lifetime", "0", "--rate", "10", "--count", "5"],
    ["--lifetime", "0", "--rate", "10", "--duration", "900"],  # past --max-duration 600
    ["--close", "rst"],  # churn flag without --lifetime
    ["--duration", "5"],
    ["--server-closes"],
]


@pytest.mark.parametrize("args", BAD_OPEN, ids=[" ".join(a) for a in BAD_OPEN])
def test_bad_churn_values_are_one_line_and_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["open", "127.0.0.1:9", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_close_after_is_one_line_and_exit_2(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--close-after", value]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
