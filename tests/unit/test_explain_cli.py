"""``conncap explain``: every catalogued code prints its entry; bad codes are one line, exit 2."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from conncap import catalogue
from conncap.cli import main

ALL_CODES = [e.name for e in catalogue.entries()]


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_code_explains(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    entry = catalogue.lookup(code)
    assert main(["explain", code]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(entry.name)
    assert f"cause:   {entry.cause}" in out
    assert entry.meaning.split(":")[0] in out
    for cmd in entry.raise_linux + entry.raise_windows:
        assert cmd in out


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_code_explains_as_json(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", code, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == code
    assert doc["cause"] in {str(c) for c in catalogue.Cause}
    assert set(doc["raise"]) == {"linux", "macos", "windows"}


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("10048", "WSAEADDRINUSE"),
        ("10055", "WSAENOBUFS"),
        ("emfile", "EMFILE"),
        (str(errno.EADDRNOTAVAIL), "EADDRNOTAVAIL"),
        (str(errno.EMFILE), "EMFILE"),
        ("wsaeconnrefused", "WSAECONNREFUSED"),
    ],
)
def test_numbers_and_names_resolve(
    code: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", code]) == 0
    assert capsys.readouterr().out.startswith(name)


def test_seed_article_error_says_reboot_and_maxuserport(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "10048"]) == 0
    out = capsys.readouterr().out
    assert "MaxUserPort" in out and "reboot" in out
    assert "netsh int ipv4 set dynamicport tcp start=1025 num=64511" in out


def test_wsaenobufs_shows_both_causes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "WSAENOBUFS"]) == 0
    out = capsys.readouterr().out
    assert "on connect(): ephemeral-ports" in out
    assert "netsh int ipv4 set dynamicport" in out  # the ports' fix, not only memory's


@pytest.mark.parametrize("code", ["EFOO", "424242", "WSAENOTHING", "-3"])
def test_unknown_code_is_one_line_exit_2(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", code]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("conncap: ")


def test_missing_code_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 2
    assert capsys.readouterr().err.startswith("conncap: ")


def test_cause_id_prints_advice_for_three_oses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "file-descriptors"]) == 0
    out = capsys.readouterr().out
    assert "Linux:" in out and "macOS:" in out and "Windows:" in out
    assert "sudo launchctl limit maxfiles 65536 200000" in out
    assert main(["explain", "ephemeral-ports", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"linux", "macos", "windows"}


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ALL_CODES:
        assert name in out
    assert main(["explain", "--list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["codes"]) == len(ALL_CODES)


def test_console_script_end_to_end() -> None:
    """The real process: ``python -m conncap explain`` exits 0 and 2 with one stderr line."""
    ok = subprocess.run(
        [sys.executable, "-m", "conncap", "explain", "10048"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("WSAEADDRINUSE")
    bad = subprocess.run(
        [sys.executable, "-m", "conncap", "explain", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
