"""Can this machine run isolated experiments? :func:`check_support` answers for the CLI and the
tests, and :meth:`Support.require` turns a "no" into ONE line saying what is missing.

Network namespaces need CAP_SYS_ADMIN (``ip netns add`` mounts under /run/netns). A user who
is not root can still get it inside an unprivileged user namespace where the kernel allows
those: :func:`userns_command` wraps a command so it runs as root of a private user, network
and mount namespace, with its own /run; everything it makes disappears when it exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conncap.errors import RunFailed

_PROC_SYS = Path("/proc/sys")


@dataclass(frozen=True)
class Support:
    """What isolated mode needs, as found on this machine."""

    root: bool
    """Effective uid 0 (possibly root of a user namespace, which is enough)."""
    uid: int
    ip: str | None
    """Path of iproute2's ``ip``."""
    netns: bool
    """``ip netns list`` works."""
    sysctl: str | None
    nft: str | None
    iptables: str | None
    userns: bool | None
    """Unprivileged user namespaces work (only probed when not root)."""
    userns_reason: str | None
    veth: bool | None
    """A veth pair between two namespaces could be made (None until ``probe_veth`` asks)."""
    veth_error: str | None = None

    @property
    def nat(self) -> bool:
        """A masquerading gateway can be built (nft or iptables present)."""
        return self.nft is not None or self.iptables is not None

    @property
    def problem(self) -> str | None:
        """One line naming what is missing, None if isolated mode can run."""
        if not self.root:
            if self.userns:
                return (
                    f"isolated mode needs root (you are uid {self.uid}); unprivileged user "
                    "namespaces work here, so run conncap as root or inside one: "
                    "unshare -Urmn sh -c 'mount -t tmpfs tmpfs /run && ip link set lo up && "
                    "exec conncap ...'"
                )
            why = f" ({self.userns_reason})" if self.userns_reason else ""
            return (
                f"isolated mode needs root or unprivileged user namespaces{why}; "
                "run as root (sudo conncap ...)"
            )
        if self.ip is None:
            return "isolated mode needs iproute2 (`ip`): apt install iproute2"
        if not self.netns:
            return "`ip netns list` does not work here (no network namespace support?)"
        if self.sysctl is None:
            return "isolated mode needs `sysctl` (procps) to set limits inside namespaces"
        if self.veth is False:
            return f"cannot create a veth pair between namespaces: {self.veth_error}"
        return None

    def require(self, nat: bool = False) -> None:
        """Raise :class:`RunFailed` with :attr:`problem` if isolated mode cannot run."""
        if self.problem is not None:
            raise RunFailed(self.problem)
        if nat and not self.nat:
            raise RunFailed(
                "the NAT layout needs nftables (`nft`) or iptables: apt install nftables"
            )


def _read_sys(key: str) -> str | None:
    try:
        return (_PROC_SYS / key.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def userns_blocker() -> str | None:
    """The sysctl that forbids unprivileged user namespaces here, None if none does."""
    checks = (
        ("kernel.unprivileged_userns_clone", "0"),
        ("user.max_user_namespaces", "0"),
        ("kernel.apparmor_restrict_unprivileged_userns", "1"),
    )
    for key, bad in checks:
        if _read_sys(key) == bad:
            return f"{key}={bad}"
    return None


def probe_userns() -> tuple[bool, str | None]:
    """Try ``unshare -Urmn true``: (works?, why not)."""
    blocker = userns_blocker()
    if blocker is not None:
        return False, blocker
    if shutil.which("unshare") is None:
        return False, "`unshare` (util-linux) is missing"
    try:
        proc = subprocess.run(
            ["unshare", "-Urmn", "true"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if proc.returncode == 0:
        return True, None
    return False, proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "unshare failed"


def userns_command(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run as root of a private user + network + mount namespace with a
    private tmpfs on /run (for /run/netns) and loopback up. Nothing it creates is visible to
    the host, and all of it disappears when the command exits."""
    script = 'mount -t tmpfs -o mode=0755 tmpfs /run && ip link set lo up && exec "$@"'
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--net",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "conncap-userns",
        *argv,
    ]


def check_support() -> Support:
    """Look for what isolated mode needs (tools, root or user namespaces).
    :func:`conncap.netns.topology.probe_veth` also proves that veth pairs work."""
    uid = os.geteuid()
    root = uid == 0
    ip = shutil.which("ip")
    netns = False
    if ip is not None and root:
        try:
            netns = (
                subprocess.run(
                    [ip, "netns", "list"], capture_output=True, timeout=5, check=False
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            netns = False
    userns: bool | None = None
    userns_reason: str | None = None
    if not root:
        userns, userns_reason = probe_userns()
    iptables = shutil.which("iptables") or shutil.which("iptables-legacy")
    support = Support(
        root=root,
        uid=uid,
        ip=ip,
        netns=netns,
        sysctl=shutil.which("sysctl"),
        nft=shutil.which("nft"),
        iptables=iptables,
        userns=userns,
        userns_reason=userns_reason,
        veth=None,
    )
    return support
