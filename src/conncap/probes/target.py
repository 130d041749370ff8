"""The server's side of a target on this host (Linux): when ``open``/``run --target`` point at
a local address (loopback, an address of this namespace), read what the server cannot say
through TCP: whether something listens, which processes hold the listening socket (socket
inode -> pid through /proc/PID/fd), their descriptors against RLIMIT_NOFILE
(/proc/PID/limits), the listener's accept queue (``ss -ltn``: Recv-Q of Send-Q), the
server-side sockets of the port (/proc/net/tcp: ESTABLISHED, SYN_RECV), the namespace's TCP
counters (the measurement's probe) and netfilter rules that drop or reject the port
(``nft list ruleset``, ``iptables -S``: read only). The decisions are in
:mod:`conncap.analysis.closes` and :func:`conncap.analysis.attribute`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from conncap.probes.readers import netstat_counters
from conncap.result import ServerProcess, TargetSide

#: Runs a read-only command, its stdout (raises OSError or CalledProcessError when it fails).
Run = Callable[[Sequence[str]], str]

_LISTEN, _ESTABLISHED, _SYN_RECV = "0A", "01", "03"


def run_command(argv: Sequence[str]) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        raise OSError(f"{argv[0]} not found")
    return subprocess.run(
        [exe, *argv[1:]], capture_output=True, text=True, timeout=5.0, check=True
    ).stdout


def local_addresses() -> frozenset[str]:
    """This namespace's addresses (psutil; empty when it cannot say)."""
    try:
        import psutil

        return frozenset(
            a.address.split("%")[0]
            for addrs in psutil.net_if_addrs().values()
            for a in addrs
            if a.family.name in ("AF_INET", "AF_INET6")
        )
    except Exception:
        return frozenset()


def is_local(host: str, addresses: frozenset[str] | None = None) -> bool:
    """Whether ``host`` is this host (loopback, unspecified, or an address of this namespace)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    if ip.is_loopback or ip.is_unspecified:
        return True
    return host in (addresses if addresses is not None else local_addresses())


@dataclass(frozen=True, slots=True)
class PortSockets:
    """The port's sockets in one /proc/net/tcp(6) reading."""

    listeners: list[tuple[str, int, int]] = field(default_factory=list)  # (addr, inode, rx)
    established: int = 0
    syn_recv: int = 0


def _addr(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped else str(v6)


def parse_proc_tcp(text: str, port: int, into: PortSockets | None = None) -> PortSockets:
    """The sockets whose local port is ``port`` in /proc/net/tcp or tcp6's text."""
    out = into if into is not None else PortSockets()
    want = f"{port:04X}"
    est, syn = out.established, out.syn_recv
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10:
            continue
        addr, _, lport = cols[1].rpartition(":")
        if lport != want:
            continue
        st = cols[3]
        if st == _LISTEN:
            rx = int(cols[4].split(":")[1], 16)
            out.listeners.append((_addr(addr), int(cols[9]), rx))
        elif st == _ESTABLISHED:
            est += 1
        elif st == _SYN_RECV:
            syn += 1
    return PortSockets(out.listeners, est, syn)


def parse_ss_listen(text: str) -> tuple[int, int] | None:
    """(Recv-Q, Send-Q) of the first line of ``ss -Hltn``: the accept queue and its backlog."""
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[0] == "LISTEN":
            return int(cols[1]), int(cols[2])
        if len(cols) >= 3 and cols[0].isdigit():  # ss without the State column
            return int(cols[0]), int(cols[1])
    return None


_NFT_DPORT = re.compile(r"dport\s+(\{[^}]*\}|\S+)")
_IPT_DPORT = re.compile(r"--dports?\s+(\S+)")


def _ports_match(spec: str, port: int) -> bool:
    for part in spec.strip("{} ").replace(":", "-").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            if int(lo) <= port <= int(hi or lo):
                return True
        except ValueError:
            continue
    return False


def matching_rules(text: str, port: int) -> list[str]:
    """Lines of ``nft list ruleset`` or ``iptables -S`` that drop or reject TCP ``port``."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        low = line.lower()
        if not any(w in low for w in (" drop", " reject", "-j drop", "-j reject")):
            continue
        m = _NFT_DPORT.search(line) or _IPT_DPORT.search(line)
        if m and _ports_match(m.group(1), port):
            out.append(re.sub(r"\s+counter packets \d+ bytes \d+", "", line))
    return out


def parse_limits_nofile(text: str) -> int | None:
    """The soft "Max open files" of /proc/PID/limits."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return None if soft == "unlimited" else int(soft)
    return None


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def holders(
    inodes: Sequence[int], root: str = "/proc", skip: frozenset[int] = frozenset()
) -> list[int]:
    """Pids with a descriptor on one of ``inodes`` (sockets), first descriptor found per pid."""
    want = {f"socket:[{i}]" for i in inodes}
    pids = []
    for name in os.listdir(root):
        if not name.isdigit() or int(name) in skip:
            continue
        fd_dir = f"{root}/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in want:
                    pids.append(int(name))
                    break
            except OSError:
                continue
    return pids


def process(pid: int, root: str = "/proc") -> ServerProcess:
    """A listening process: its name, descriptors open and soft RLIMIT_NOFILE."""
    base = f"{root}/{pid}"
    try:
        name = _read(f"{base}/comm").strip()
    except OSError:
        name = "?"
    try:
        fds: int | None = len(os.listdir(f"{base}/fd"))
    except OSError:
        fds = None
    try:
        nofile = parse_limits_nofile(_read(f"{base}/limits"))
    except (OSError, ValueError):
        nofile = None
    return ServerProcess(pid=pid, name=name, fds=fds, nofile=nofile)


def read_target(
    host: str,
    port: int,
    *,
    root: str = "/proc",
    run: Run = run_command,
    skip_pids: frozenset[int] = frozenset(),
) -> TargetSide:
    """The server's side of ``host:port`` as this host sees it (see the module docstring).
    A fact that cannot be read is left out and named in ``problems``."""
    problems: list[str] = []
    sources: list[str] = []
    socks = PortSockets()
    read_any = False
    for name in ("tcp", "tcp6"):
        try:
            socks = parse_proc_tcp(_read(f"{root}/net/{name}"), port, socks)
            read_any = True
        except OSError as exc:
            if name == "tcp":
                problems.append(f"{root}/net/tcp: {exc.strerror or exc}")
    if read_any:
        sources.append(f"{root}/net/tcp")
    listeners = [
        (a, i, rx)
        for a, i, rx in socks.listeners
        if a in (host, "0.0.0.0", "::") or host in ("localhost",)
    ]
    queue: int | None = max((rx for _, _, rx in listeners), default=None)
    backlog: int | None = None
    try:
        q = parse_ss_listen(run(["ss", "-Hltn", f"sport = :{port}"]))
        if q is not None:
            queue, backlog = q
            sources.append("ss -ltn")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        problems.append(f"ss: {exc}")
    procs: list[ServerProcess] = []
    if listeners:
        pids = holders([i for _, i, _ in listeners], root, skip_pids)
        procs = sorted((process(p, root) for p in pids), key=lambda p: -(p.fds or 0))
        if procs:
            sources.append(f"{root}/PID/fd and limits")
        else:
            problems.append("no process found holding the listening socket (not root?)")
    rules: list[str] = []
    for argv in (["nft", "list", "ruleset"], ["iptables", "-S"], ["ip6tables", "-S"]):
        try:
            found = matching_rules(run(argv), port)
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{argv[0]}: {exc}")
            continue
        sources.append(" ".join(argv))
        rules += [r for r in found if r not in rules]
    return TargetSide(
        host=host,
        port=port,
        listening=bool(listeners) if read_any else None,
        processes=tuple(procs),
        accept_queue=queue if listeners else None,
        backlog=backlog if listeners else None,
        established=socks.established if read_any else None,
        syn_recv=socks.syn_recv if read_any else None,
        rules=tuple(rules),
        sources=tuple(sources),
        problems=tuple(problems),
    )


class CountersProbe:
    """The measurement's probe for a local target: this namespace's TCP counters
    (ListenOverflows, ListenDrops, SYN retransmissions) in every sample."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        self.problem: str | None = None

    def read(self, sample: Mapping[str, object], *, force: bool = False) -> Mapping[str, object]:
        try:
            c = netstat_counters(self.root)
        except Exception as exc:  # a probe degrades, never stops the run
            self.problem = str(exc)
            return {}
        return {
            "listen_overflows": c.listen_overflows,
            "listen_drops": c.listen_drops,
            "syn_retrans": c.syn_retrans,
        }


def local_target(
    destinations: Sequence[tuple[str, int]],
) -> tuple[CountersProbe | None, Callable[[], TargetSide | None] | None]:
    """For a single destination on this host (loopback or an address of this namespace,
    Linux): the TCP counters as the measurement's probe and a reader of the server's side
    (its listener, process, descriptors, queue, firewall rules); (None, None) otherwise."""
    import sys

    if not sys.platform.startswith("linux") or len(destinations) != 1:
        return None, None
    host, port = destinations[0]
    if not is_local(host):
        return None, None
    me = frozenset({os.getpid()})

    def read() -> TargetSide | None:
        return read_target(host, port, skip_pids=me)

    return CountersProbe(), read
