"""The default command runner of the macOS/Windows readers, and how those readers degrade
when their commands are missing (as on this Linux host)."""

from __future__ import annotations

import shutil
import sys

import pytest

from conncap.limits import _macos, _windows
from conncap.limits._command import CommandFailed, run_command
from conncap.limits.render import limits_to_json

posix = pytest.mark.skipif(sys.platform == "win32", reason="uses sh")


@posix
def test_run_command_returns_stdout() -> None:
    assert run_command(["sh", "-c", "echo 49152"]) == "49152\n"


@posix
def test_run_command_failure_is_one_line_with_the_first_error_line() -> None:
    with pytest.raises(CommandFailed) as err:
        run_command(["sh", "-c", "echo 'sysctl: unknown oid' >&2; echo more >&2; exit 3"])
    assert str(err.value) == (
        "`sh -c echo 'sysctl: unknown oid' >&2; echo more >&2; exit 3` failed (exit 3): "
        "sysctl: unknown oid"
    )


def test_run_command_missing_program() -> None:
    with pytest.raises(CommandFailed, match=r"^`conncap-no-such-tool` not found$"):
        run_command(["conncap-no-such-tool", "-n"])


@posix
def test_run_command_has_a_time_limit() -> None:
    with pytest.raises(CommandFailed, match=r"timed out after 0\.2 s$"):
        run_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a non-Windows host")
def test_windows_reader_without_its_commands_degrades_to_unknown() -> None:
    h = _windows.read()  # netsh, reg and cmd are not on this host
    assert h.port_range.value is None and "`netsh` not found" in str(h.port_range.reason)
    assert h.max_user_port.value is None and "`reg` not found" in str(h.max_user_port.reason)
    assert h.windows_version.value is None
    assert h.mem_total.known  # psutil still answers
    limits_to_json(h)  # and the document is still complete


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a non-macOS host")
def test_macos_reader_on_linux_degrades_to_unknown() -> None:
    h = _macos.read()  # Linux's sysctl has no net.inet.*; no launchctl, no vm_stat
    assert h.port_range.value is None and h.port_range.reason
    assert h.launchctl_maxfiles.value is None
    if shutil.which("launchctl") is None:
        assert h.launchctl_maxfiles.reason == "`launchctl` not found"
    assert h.nofile_soft.known  # getrlimit works on any POSIX host
