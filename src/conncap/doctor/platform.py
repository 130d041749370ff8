"""Where the doctor can run: Linux only (netlink sock_diag, /proc); elsewhere one line and
the commands that give the same facts by hand. ``--netns NAME`` re-runs the command inside
the namespace with ``ip netns exec`` (the whole process joins it: sock_diag, /proc/net and
/proc/sys/net then all answer for that namespace, with no setns() in a threaded process)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from conncap.doctor.collect import NETNS_ENV
from conncap.errors import UsageError
from conncap.exitcodes import ExitStatus

#: The same facts by hand, per OS.
MANUAL: dict[str, tuple[str, ...]] = {
    "darwin": (
        "netstat -an -p tcp   (every socket and its state, TIME_WAIT included)",
        "sysctl net.inet.ip.portrange.first net.inet.ip.portrange.last   (the ephemeral range)",
        "netstat -Lan   (each listener's accept queue: qlen/incqlen/maxqlen)",
        "sysctl kern.maxfiles kern.num_files kern.maxfilesperproc; launchctl limit maxfiles",
        "lsof -p PID | wc -l; ulimit -n   (one process's descriptors and its limit)",
    ),
    "windows": (
        "netstat -ano -p tcp   (every socket, its state and owning PID)",
        "netsh int ipv4 show dynamicport tcp   (the ephemeral range; ipv6 likewise)",
        "netsh int ipv4 show excludedportrange protocol=tcp   (ports Windows reserved)",
        'powershell "Get-NetTCPConnection | Group-Object LocalAddress,RemoteAddress,'
        'RemotePort | Sort-Object Count -Descending | Select-Object -First 10"   (the pools)',
        "reg query HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters "
        "/v TcpTimedWaitDelay   (TIME_WAIT seconds; absent: 120)",
    ),
}


def unsupported(command: str) -> int:
    """On a non-Linux OS: one line on stderr, the manual commands, exit 1."""
    plat = "windows" if sys.platform.startswith(("win", "cygwin")) else sys.platform
    sys.stderr.write(
        f"conncap: {command} reads Linux's netlink sock_diag and /proc, which {plat} does not "
        "have; these commands show the same facts by hand:\n"
    )
    for line in MANUAL.get(plat, MANUAL["darwin"] if plat.endswith("bsd") else ()):
        sys.stderr.write(f"  {line}\n")
    return int(ExitStatus.FAILURE)


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def inside(netns: str | None) -> bool:
    """True when no namespace was asked for, or this process already runs inside it."""
    return netns is None or os.environ.get(NETNS_ENV) == netns


def run_in_netns(netns: str, argv: Sequence[str]) -> int:
    """Run ``conncap ARGV`` inside network namespace ``netns`` (``ip netns exec``) and return
    its exit status. This process ignores Ctrl-C meanwhile: the child gets it and exits 130."""
    if not _NAME.fullmatch(netns) or netns in (".", ".."):
        raise UsageError(f"{netns!r} is not a network namespace name")
    if not Path("/run/netns", netns).exists():
        raise UsageError(f"no network namespace {netns!r} (see `ip netns list`)")
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        NETNS_ENV: netns,
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
    }
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-m", "conncap", *argv]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            child = subprocess.Popen(cmd, env=env)
        except OSError as exc:
            raise UsageError(f"cannot run `ip netns exec`: {exc.strerror or exc}") from exc
        rc = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if rc in (0, 1, 2, 130, 143):
        return rc
    if rc < 0 and -rc == signal.SIGINT:
        return int(ExitStatus.INTERRUPTED)
    return int(ExitStatus.FAILURE)  # `ip netns exec` itself failed (it printed why)
