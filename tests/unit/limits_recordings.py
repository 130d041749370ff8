"""Build limits-reader sources from the recordings in tests/fixtures/limits/{linux,macos,windows}.

Each recording directory holds what the OS printed (a /proc and /sys excerpt, ``sysctl`` lines,
``netsh``/``reg query`` output) and a ``host.json`` with what psutil and getrlimit returned.
A command recorded as ``NAME.fail`` fails with that text, the way :func:`run_command` reports it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conncap.limits._command import CommandFailed, Runner
from conncap.limits._linux import LinuxSource
from conncap.limits._macos import MacSource
from conncap.limits._windows import WindowsSource

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "limits"


@dataclass(frozen=True)
class RecordedAddr:
    address: str
    netmask: str | None


def _host(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "host.json").read_text(encoding="utf-8"))
    return data


def _addresses(host: Mapping[str, Any]) -> dict[str, list[RecordedAddr]]:
    return {
        name: [RecordedAddr(a["address"], a["netmask"]) for a in addrs]
        for name, addrs in host["net_if_addrs"].items()
    }


def _getrlimit(host: Mapping[str, Any]) -> Any:
    def getrlimit(name: str) -> tuple[int | None, int | None]:
        soft, hard = host["rlimits"][name]
        return (soft, hard)

    return getrlimit


def command_file(argv: Sequence[str]) -> str:
    """The recording's file stem for a command line: ``cmd /c ver`` -> ``cmd_c_ver``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", " ".join(argv).replace("=", "-")).strip("_")


def recorded_runner(directory: Path, sysctl_lines: Mapping[str, str] | None = None) -> Runner:
    """A Runner that answers from ``directory``; ``sysctl -n NAME`` from ``sysctl.txt``."""
    if sysctl_lines is None and (directory / "sysctl.txt").exists():
        sysctl_lines = dict(
            (k.strip(), v.strip())
            for k, _, v in (
                line.partition(":")
                for line in (directory / "sysctl.txt").read_text().splitlines()
                if line.strip()
            )
        )

    def run(argv: Sequence[str]) -> str:
        shown = " ".join(argv)
        if list(argv[:2]) == ["sysctl", "-n"] and sysctl_lines is not None:
            name = argv[2]
            if name not in sysctl_lines:
                raise CommandFailed(f"`{shown}` failed (exit 1): sysctl: unknown oid '{name}'")
            return sysctl_lines[name] + "\n"
        stem = command_file(argv)
        ok, fail = directory / f"{stem}.txt", directory / f"{stem}.fail"
        if ok.exists():
            return ok.read_text(encoding="utf-8")
        if fail.exists():
            first = fail.read_text(encoding="utf-8").strip().splitlines()[0].strip()
            raise CommandFailed(f"`{shown}` failed (exit 1): {first}")
        raise CommandFailed(f"`{argv[0]}` not found")

    return run


def linux_source(name: str, root: Path | None = None) -> LinuxSource:
    """A LinuxSource on the recording ``linux/NAME`` (or on a copy of it at ``root``)."""
    directory = root or FIXTURES / "linux" / name
    host = _host(directory)
    return LinuxSource(
        procfs=directory / "proc",
        sysfs=directory / "sys",
        getrlimit=_getrlimit(host),
        page_size=lambda: int(host["page_size"]),
        memory=lambda: (host["memory"]["total"], host["memory"]["available"]),
        addresses=lambda: _addresses(host),
        cpu_count=lambda: host["cpu_count"],
    )


def copy_recording(os_name: str, name: str, tmp_path: Path) -> Path:
    """A writable copy of a recording, to damage one file in a test."""
    target = tmp_path / name
    shutil.copytree(FIXTURES / os_name / name, target)
    return target


def macos_source(name: str, root: Path | None = None, **sysctl_changes: str | None) -> MacSource:
    """A MacSource on ``macos/NAME``; ``sysctl_changes`` overrides (None removes) a sysctl,
    with dots written as ``__`` (``kern__num_files=None``)."""
    directory = root or FIXTURES / "macos" / name
    host = _host(directory)
    lines = dict(
        (k.strip(), v.strip())
        for k, _, v in (
            line.partition(":")
            for line in (directory / "sysctl.txt").read_text().splitlines()
            if line.strip()
        )
    )
    for key, value in sysctl_changes.items():
        dotted = key.replace("__", ".")
        if value is None:
            lines.pop(dotted, None)
        else:
            lines[dotted] = value
    return MacSource(
        run=recorded_runner(directory, lines),
        getrlimit=_getrlimit(host),
        geteuid=lambda: int(host["euid"]),
        addresses=lambda: _addresses(host),
    )


def windows_source(name: str, root: Path | None = None) -> WindowsSource:
    directory = root or FIXTURES / "windows" / name
    host = _host(directory)
    return WindowsSource(
        run=recorded_runner(directory),
        memory=lambda: (host["memory"]["total"], host["memory"]["available"]),
        addresses=lambda: _addresses(host),
        cpu_count=lambda: host["cpu_count"],
    )
