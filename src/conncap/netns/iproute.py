"""The one place conncap runs ``ip``, ``nft``, ``iptables`` and ``sysctl``, and the one place a
failed command becomes a one-line :class:`~conncap.errors.RunFailed`.

iproute2 through subprocess rather than pyroute2: it is on every Linux box, it is no extra
dependency, and every step is a command a user can copy and run by hand (docs/netns.md).
The runner is injectable so unit tests can record commands without touching the kernel.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence

from conncap.errors import RunFailed

#: Runs argv (with optional stdin text) and returns the finished process; never raises for a
#: non-zero exit. Raises FileNotFoundError if the program is missing, TimeoutExpired on timeout.
Runner = Callable[[Sequence[str], str | None, float], subprocess.CompletedProcess[str]]

DEFAULT_TIMEOUT = 20.0


def subprocess_runner(
    argv: Sequence[str], stdin: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def describe(argv: Sequence[str]) -> str:
    """A command as a user would type it (for error lines)."""
    return shlex.join(argv)


class Shell:
    """Runs system commands through one runner; failures are one readable line."""

    def __init__(self, runner: Runner = subprocess_runner) -> None:
        self.runner = runner

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        hint: str = "",
    ) -> subprocess.CompletedProcess[str]:
        """Run argv; with ``check`` a non-zero exit raises RunFailed naming the command."""
        try:
            proc = self.runner(argv, stdin, timeout)
        except FileNotFoundError:
            raise RunFailed(
                f"`{argv[0]}` not found: isolated mode needs it "
                "(Debian: apt install iproute2 nftables procps)"
            ) from None
        except subprocess.TimeoutExpired:
            raise RunFailed(
                f"`{describe(argv)}` did not finish within {timeout:g} s; "
                "the kernel or a lock is stuck, run `conncap cleanup` and retry"
            ) from None
        if check and proc.returncode != 0:
            why = _first_line(proc.stderr) or _first_line(proc.stdout) or "no message"
            extra = f"; {hint}" if hint else ""
            raise RunFailed(f"`{describe(argv)}` failed (exit {proc.returncode}): {why}{extra}")
        return proc

    def _ip(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """``ip ARGS``; returns stdout. The single runner for iproute2 commands."""
        return self.run(["ip", *args], stdin=stdin, check=check).stdout

    def ip_batch(
        self, lines: Iterable[str], *, netns: str | None = None, force: bool = False
    ) -> None:
        """Several ``ip`` commands in one process (``ip [-n NS] -batch -``). Stops at the first
        failure, reported with the line that failed; ``force`` runs every line and ignores
        failures (teardown checks the outcome itself)."""
        cmds = [ln for ln in lines if ln.strip()]
        if not cmds:
            return
        argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else [])]
        proc = self.run([*argv, "-batch", "-"], stdin="\n".join(cmds) + "\n", check=False)
        if proc.returncode != 0 and not force:
            why = _first_line(proc.stderr) or "no message"
            failed = _failed_batch_line(proc.stderr, cmds)
            where = f"`ip {'-n ' + netns + ' ' if netns else ''}{failed}`" if failed else "ip batch"
            raise RunFailed(f"{where} failed: {why}")

    def in_netns(
        self,
        netns: str,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        hint: str = "",
    ) -> subprocess.CompletedProcess[str]:
        """``ip netns exec NS argv``."""
        return self.run(
            ["ip", "netns", "exec", netns, *argv],
            stdin=stdin,
            check=check,
            timeout=timeout,
            hint=hint,
        )

    def list_namespaces(self) -> list[str]:
        """Names from ``ip netns list`` (``name (id: 3)`` lines)."""
        out = self._ip("netns", "list")
        return [ln.split()[0] for ln in out.splitlines() if ln.strip()]

    def list_links(self) -> list[str]:
        """Interface names in this process's namespace (``ip -o link show``)."""
        out = self._ip("-o", "link", "show")
        names: list[str] = []
        for ln in out.splitlines():
            parts = ln.split(":", 2)
            if len(parts) >= 2:
                names.append(parts[1].strip().split("@", 1)[0])
        return names


def _failed_batch_line(stderr: str, cmds: list[str]) -> str | None:
    # iproute2 prints "Command failed -:N" for the N-th line of a batch from stdin.
    for ln in stderr.splitlines():
        if ln.startswith("Command failed -:"):
            try:
                n = int(ln.rsplit(":", 1)[1])
            except ValueError:
                return None
            return cmds[n - 1] if 0 < n <= len(cmds) else None
    return None
