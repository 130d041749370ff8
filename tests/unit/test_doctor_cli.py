"""``conncap doctor`` / ``watch`` at the command line: usage errors, other OSes, a real run."""

from __future__ import annotations

import json
import sys

import pytest

from conncap.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor", "--top", "0"],
        ["doctor", "--sample", "-1"],
        ["watch", "--interval", "0"],
        ["watch", "--count", "0"],
        ["doctor", "--netns", "../etc"],
        ["doctor", "--netns", "conncap-no-such-namespace"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("conncap: ") and err.count("\n") == 1


@pytest.mark.parametrize("platform", ["darwin", "win32"])
@pytest.mark.parametrize("command", ["doctor", "watch"])
def test_other_oses_get_the_commands_to_run_by_hand(
    platform: str, command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert main([command]) == 1
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert f"conncap {command} reads Linux's netlink sock_diag" in first
    assert any(("netstat -an" in x) or ("netstat -ano" in x) for x in rest)
    if platform == "win32":
        assert any("netsh int ipv4 show dynamicport tcp" in x for x in rest)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads netlink and /proc")
def test_doctor_json_on_this_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json", "--sample", "0", "--top", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "conncap.doctor/1" and doc["netns"] is None
    assert doc["sockets"]["total"] >= 0 and doc["read_s"]["sockets"] >= 0
    assert doc["verdict"]["text"]
