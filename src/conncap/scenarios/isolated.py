"""The two-namespace set-up behind ``conncap run --isolated`` (and every scenario's limits).

A client host and a server host, each its own network namespace, joined by a veth pair; the
port range, somaxconn and SYN backlog are set inside the namespaces only, and the descriptor
limits are handed to the engine's worker pools (RLIMIT_NOFILE is per process, not per
namespace). The run command uses it like this::

    from conncap.scenarios.isolated import isolated_pair, settings_from_args

    settings = settings_from_args(args)            # None without --isolated
    with isolated_pair(settings) as pair:          # namespaces exist only inside this block
        server = ServerPool(bind=pair.server_ip, netns=pair.server_netns,
                            nofile=pair.server_nofile, workers=...)
        client = ClientPool(plan_to(pair.server_ip, pair.source_ips),
                            netns=pair.client_netns, nofile=pair.client_nofile)
        probes.netstat_counters(reader=pair.server_reader())   # ListenOverflows inside
        limits = pair.client_limits()                           # HostLimits as seen inside

:func:`namespace_limits` gives the model the limits as a namespace sees them, with a different
descriptor limit for each side (:func:`conncap.model.predict_sides` predicts from both);
:class:`NamespaceReader` reads /proc files inside a namespace through one helper process.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conncap import procfs
from conncap.errors import UsageError
from conncap.result import JsonValue

if TYPE_CHECKING:
    from conncap.limits import HostLimits
    from conncap.netns import Host, Topology
    from conncap.probes import Reader

#: Fewest descriptors a worker can run with (stdio, epoll, listener, the interpreter's own).
MIN_NOFILE = 64
#: Most source addresses the client can have: its own and 198.19.0.0/16 (SOURCE_BLOCK).
MAX_SOURCE_IPS = 65535


@dataclass(frozen=True, slots=True)
class IsolatedSettings:
    """What ``--isolated`` changes, inside the namespaces or the worker processes only."""

    port_range: tuple[int, int] | None = None
    """The client namespace's net.ipv4.ip_local_port_range."""
    somaxconn: int | None = None
    """The server namespace's net.core.somaxconn."""
    max_syn_backlog: int | None = None
    """The server namespace's net.ipv4.tcp_max_syn_backlog."""
    syncookies: int | None = None
    """The server namespace's net.ipv4.tcp_syncookies (0 off, 1 when the SYN queue
    overflows, 2 always)."""
    server_nofile: int | None = None
    """RLIMIT_NOFILE of each server worker (None: the hard limit)."""
    client_nofile: int | None = None
    """RLIMIT_NOFILE of each client worker (None: the hard limit)."""
    extra_source_ips: int = 0
    """Source addresses the client gets besides its own (198.19.0.0/16)."""

    def __post_init__(self) -> None:
        if self.port_range is not None:
            lo, hi = self.port_range
            if not 1 <= lo <= hi <= 65535:
                raise UsageError(f"--port-range {lo}-{hi}: need 1 <= LO <= HI <= 65535")
        if self.syncookies is not None and self.syncookies not in (0, 1, 2):
            raise UsageError(f"--syncookies is 0, 1 or 2, not {self.syncookies}")
        for name in ("somaxconn", "max_syn_backlog"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {v}")
        for name in ("server_nofile", "client_nofile"):
            v = getattr(self, name)
            if v is not None:
                check_nofile(v, f"--{name.replace('_', '-')}")
        if self.extra_source_ips < 0:
            raise UsageError("the number of extra source IPs cannot be negative")

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "port_range": list(self.port_range) if self.port_range else None,
            "somaxconn": self.somaxconn,
            "max_syn_backlog": self.max_syn_backlog,
            "syncookies": self.syncookies,
            "server_nofile": self.server_nofile,
            "client_nofile": self.client_nofile,
            "extra_source_ips": self.extra_source_ips,
        }


def nofile_hard() -> int:
    """This process's hard RLIMIT_NOFILE: no worker can go above it without CAP_SYS_RESOURCE."""
    from conncap.engine.plan import nofile_hard as hard

    return hard()


def check_nofile(value: int, flag: str) -> int:
    """A per-process descriptor limit a worker can really take, or a one-line UsageError."""
    hard = nofile_hard()
    if value < MIN_NOFILE:
        raise UsageError(f"{flag} {value} is too small: a worker needs at least {MIN_NOFILE}")
    if value > hard:
        raise UsageError(
            f"{flag} {value:,} is above this process's hard limit {hard:,} (ulimit -Hn), "
            "which cannot be raised without CAP_SYS_RESOURCE; give a smaller value and "
            "conncap spreads the connections over more worker processes"
        )
    return value


def parse_port_range_arg(text: str) -> tuple[int, int]:
    """A user's ``LO-HI`` for ``--port-range`` (both ends required) -> (LO, HI); bad text is a
    UsageError. /proc's own format is :func:`conncap.procfs.parse_port_range`."""
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise UsageError(f"--port-range {text!r}: write LO-HI, e.g. 1024-5000") from None
    if not sep or not 1 <= lo <= hi <= 65535:
        raise UsageError(f"--port-range {text!r}: need 1 <= LO <= HI <= 65535, e.g. 1024-5000")
    return lo, hi


def add_isolated_arguments(parser: argparse.ArgumentParser, *, nofile_flags: bool = False) -> None:
    """``--isolated`` and the namespace settings it applies (for ``conncap run``). With
    ``nofile_flags`` also ``--client-nofile``/``--server-nofile`` (a command that has its
    own, as ``run`` does, leaves them out; :func:`settings_from_args` reads them either way)."""
    g = parser.add_argument_group("isolated mode (network namespaces; needs root)")
    g.add_argument(
        "--isolated",
        action="store_true",
        help="run client and server in two network namespaces joined by a veth, with the "
        "settings below applied inside them only (the host is not changed)",
    )
    g.add_argument("--port-range", metavar="LO-HI", help="the client's ip_local_port_range")
    g.add_argument("--somaxconn", type=int, metavar="N", help="the server's net.core.somaxconn")
    g.add_argument(
        "--max-syn-backlog", type=int, metavar="N", help="the server's tcp_max_syn_backlog"
    )
    g.add_argument(
        "--syncookies",
        type=int,
        metavar="0|1|2",
        help="the server's tcp_syncookies (default: the kernel's, 1). With 1, a burst into a "
        "full accept queue can leave connections half-open: established at the client only",
    )
    if nofile_flags:
        g.add_argument(
            "--server-nofile", type=int, metavar="N", help="each server worker's ulimit -n"
        )
        g.add_argument(
            "--client-nofile", type=int, metavar="N", help="each client worker's ulimit -n"
        )


#: Flags that change a namespace, so they need --isolated.
NAMESPACE_FLAGS = ("port_range", "somaxconn", "max_syn_backlog", "syncookies")


def settings_from_args(args: argparse.Namespace) -> IsolatedSettings | None:
    """The settings of ``--isolated``; None without it (then the namespace flags are
    refused: conncap never changes the host's own settings)."""
    given = [f for f in NAMESPACE_FLAGS if getattr(args, f, None) is not None]
    if not getattr(args, "isolated", False):
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UsageError(
                f"{flag} changes a namespace conncap creates: add --isolated (conncap never "
                "changes the host's own settings)"
            )
        return None
    pr = getattr(args, "port_range", None)
    return IsolatedSettings(
        port_range=parse_port_range_arg(pr) if pr is not None else None,
        somaxconn=getattr(args, "somaxconn", None),
        max_syn_backlog=getattr(args, "max_syn_backlog", None),
        syncookies=getattr(args, "syncookies", None),
        server_nofile=getattr(args, "server_nofile", None),
        client_nofile=getattr(args, "client_nofile", None),
    )


@dataclass
class IsolatedPair:
    """A client and a server namespace, ready for the engine's pools."""

    topology: Topology
    client: Host
    server: Host
    client_ip: str
    server_ip: str
    source_ips: tuple[str, ...]
    """Every address the client may bind: ``client_ip`` first, then the extra ones."""
    settings: IsolatedSettings
    _readers: dict[str, NamespaceReader] = field(default_factory=dict, repr=False)

    @property
    def client_netns(self) -> str:
        return self.client.name

    @property
    def server_netns(self) -> str:
        return self.server.name

    @property
    def client_nofile(self) -> int | None:
        return self.settings.client_nofile

    @property
    def server_nofile(self) -> int | None:
        return self.settings.server_nofile

    def client_reader(self) -> Reader:
        """Reads /proc files as the client's namespace sees them (for conncap.probes)."""
        return self._reader(self.client)

    def server_reader(self) -> Reader:
        """Reads /proc files as the server's namespace sees them (ListenOverflows, ...)."""
        return self._reader(self.server)

    def _reader(self, host: Host) -> Reader:
        reader = self._readers.get(host.name)
        if reader is None:
            reader = self._readers[host.name] = NamespaceReader(self.topology, host)
        return reader

    def close(self) -> None:
        """End the reader processes (the topology would end them too, but not close our
        ends of their pipes)."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def client_limits(self, base: HostLimits | None = None) -> HostLimits:
        """HostLimits as a client worker sees them (range, nofile) for the model."""
        return namespace_limits(self.topology, self.client, self.client_nofile, base)

    def server_limits(self, base: HostLimits | None = None) -> HostLimits:
        return namespace_limits(self.topology, self.server, self.server_nofile, base)

    def add_source_ips(self, n: int) -> tuple[str, ...]:
        """Make sure the client has ``n`` source addresses (its own first, then /32s from
        198.19.0.0/16, which the server routes via the client); returns all of them. For a
        run that decides how many it needs after the pair is built."""
        from ipaddress import IPv4Network

        from conncap.netns.naming import SOURCE_BLOCK

        have = list(self.source_ips)
        if n <= len(have):
            return tuple(have[:n])
        if n - 1 > SOURCE_BLOCK.num_addresses - 2:
            raise UsageError(
                f"at most {SOURCE_BLOCK.num_addresses - 1:,} source IPs in isolated mode"
            )
        extras = [a for a in have if IPv4Network(a).subnet_of(SOURCE_BLOCK)]
        hosts = SOURCE_BLOCK.hosts()
        wanted = [str(a) for _, a in zip(range(n - 1), hosts, strict=False)]
        new = [a for a in wanted if a not in extras]
        self.topology.add_addresses(self.client, [f"{a}/32" for a in new])
        self.topology.route(self.server, str(SOURCE_BLOCK), via=self.client_ip)
        self.source_ips = (self.client_ip, *wanted)
        return self.source_ips

    def describe(self) -> list[str]:
        """Lines for the run's output: what lives where, and what was set."""
        s = self.settings
        ips = list(self.source_ips)
        shown = ", ".join(ips) if len(ips) <= 4 else f"{ips[0]}, {ips[1]} … {ips[-1]}: {len(ips):,}"
        lines = [
            f"client namespace {self.client.name} ({shown}) -> server "
            f"namespace {self.server.name} ({self.server_ip}), one veth"
        ]
        set_: list[str] = []
        if s.port_range:
            set_.append(f"client ip_local_port_range {s.port_range[0]}-{s.port_range[1]}")
        if s.somaxconn is not None:
            set_.append(f"server somaxconn {s.somaxconn}")
        if s.max_syn_backlog is not None:
            set_.append(f"server tcp_max_syn_backlog {s.max_syn_backlog}")
        if s.syncookies is not None:
            set_.append(f"server tcp_syncookies {s.syncookies}")
        if s.client_nofile is not None:
            set_.append(f"client workers ulimit -n {s.client_nofile}")
        if s.server_nofile is not None:
            set_.append(f"server workers ulimit -n {s.server_nofile}")
        if set_:
            lines.append("set inside the namespaces only: " + ", ".join(set_))
        return lines

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "client_netns": self.client.name,
            "server_netns": self.server.name,
            "client_ip": self.client_ip,
            "server_ip": self.server_ip,
            "source_ips": list(self.source_ips),
            "settings": self.settings.to_json(),
        }


def setup_pair(topo: Topology, settings: IsolatedSettings) -> IsolatedPair:
    """Build the client/server namespaces in an open ``topo`` with ``settings`` applied."""
    cs = topo.client_server(
        port_range=settings.port_range,
        somaxconn=settings.somaxconn,
        max_syn_backlog=settings.max_syn_backlog,
        server_extra=(
            {"net.ipv4.tcp_syncookies": settings.syncookies}
            if settings.syncookies is not None
            else None
        ),
        extra_client_ips=settings.extra_source_ips,
    )
    return IsolatedPair(
        topo, cs.client, cs.server, cs.client_ip, cs.server_ip, cs.source_ips, settings
    )


@contextmanager
def isolated_pair(settings: IsolatedSettings | None = None) -> Iterator[IsolatedPair]:
    """A fresh topology with the pair in it; everything is removed when the block ends
    (normally, on an error, on Ctrl-C or SIGTERM). Needs root: otherwise RunFailed with
    one line saying what is missing (``conncap.netns.check_support``)."""
    from conncap.netns import Topology

    with Topology() as topo:
        pair = setup_pair(topo, settings or IsolatedSettings())
        try:
            yield pair
        finally:
            pair.close()


# --- reading files inside a namespace -------------------------------------------------------------

#: The helper :class:`NamespaceReader` runs inside a namespace: a path a line in, then
#: ``O <length>`` and the bytes, or ``E <length>`` and the error, out. It ends when its
#: stdin closes (so also when conncap dies).
_READER_SCRIPT = r"""
import sys
r, w = sys.stdin.buffer, sys.stdout.buffer
for line in r:
    try:
        with open(line[:-1].decode(), "rb") as f:
            data, tag = f.read(), b"O"
    except OSError as e:
        data, tag = str(e).encode(), b"E"
    w.write(b"%s %d\n" % (tag, len(data)))
    w.write(data)
    w.flush()
"""


class NamespaceReader:
    """Reads files as a process inside a namespace sees them (/proc/net/*, /proc/sys/net/*
    are per namespace), through one helper process started there: about 0.1 ms a read
    instead of the ~2.5 ms of an ``ip netns exec cat`` each time, which matters at 10
    samples a second. If the helper is gone, each read falls back to ``ip netns exec``."""

    def __init__(self, topo: Topology, host: Host, *, timeout_s: float = 5.0) -> None:
        import subprocess
        import sys
        import threading

        from conncap.probes import netns_reader

        self._fallback = netns_reader(host.name, timeout_s=timeout_s)
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = topo.popen(
                host,
                [sys.executable, "-S", "-c", _READER_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self._proc = None

    def __call__(self, path: str) -> str:
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return self._fallback(path)
            try:
                tag, data = self._ask(proc, path)
            except OSError:
                self._close_locked()
                return self._fallback(path)
        if tag == b"E":
            raise OSError(f"{path}: {data.decode(errors='replace')}")
        return data.decode("ascii", errors="replace")

    def _ask(self, proc: Any, path: str) -> tuple[bytes, bytes]:
        import select

        if "\n" in path:
            raise OSError(f"bad path {path!r}")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(path.encode() + b"\n")
        proc.stdin.flush()
        out = proc.stdout
        ready, _, _ = select.select([out], [], [], self._timeout)
        if not ready:
            raise OSError(f"the reader in the namespace did not answer for {path}")
        head = out.readline()
        tag, _, size = head.strip().partition(b" ")
        if tag not in (b"O", b"E") or not size.isdigit():
            raise OSError(f"the reader in the namespace answered {head[:40]!r}")
        data = out.read(int(size))
        if len(data) != int(size):
            raise OSError("the reader in the namespace ended mid-answer")
        return tag, data

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        import subprocess

        proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with suppress(OSError):
                    f.close()  # the helper's stdin closes: it ends by itself
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()  # started here, ended by its pid
            proc.wait()


# --- limits as seen inside a namespace ------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.replace(",", " ").split() if t.lstrip("-").isdigit()]


def namespace_limits(
    topo: Topology, host: Host, nofile: int | None, base: HostLimits | None = None
) -> HostLimits:
    """The host's limits with every per-namespace fact read inside ``host`` (port range,
    reserved ports, somaxconn, SYN backlog, conntrack entries, the TIME_WAIT knobs churn's
    model reads) and the descriptor limit a
    worker there gets (``nofile``, else the hard limit)."""
    from conncap.limits import Fact, read_limits

    limits = base if base is not None else read_limits()
    script = (
        "for k in ipv4/ip_local_port_range ipv4/ip_local_reserved_ports core/somaxconn "
        "ipv4/tcp_max_syn_backlog netfilter/nf_conntrack_count ipv4/tcp_tw_reuse "
        "ipv4/tcp_tw_reuse_delay ipv4/tcp_timestamps ipv4/tcp_max_tw_buckets; do "
        'printf "%s=" "$k"; tr "\\t\\n" "  " < /proc/sys/net/$k 2>/dev/null; echo; done'
    )
    out = topo.run(host, ["sh", "-c", script]).stdout
    raw = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    where = f"inside {host.name}"
    changes: dict[str, Any] = {}  # HostLimits fields -> Fact, for dataclasses.replace
    with suppress(ValueError):
        pr = procfs.parse_port_range(raw.get("ipv4/ip_local_port_range", ""))
        changes["port_range"] = Fact.of(pr, f"net.ipv4.ip_local_port_range {where}")
    text = raw.get("ipv4/ip_local_reserved_ports")
    if text is not None:
        with suppress(ValueError):
            reserved = procfs.parse_reserved_ports(text)
            changes["reserved_ports"] = Fact.of(reserved, f"ip_local_reserved_ports {where}")
    for key, name in (
        ("core/somaxconn", "somaxconn"),
        ("ipv4/tcp_max_syn_backlog", "tcp_max_syn_backlog"),
        ("ipv4/tcp_tw_reuse", "tcp_tw_reuse"),
        ("ipv4/tcp_max_tw_buckets", "tcp_max_tw_buckets"),
    ):
        v = _ints(raw.get(key, ""))
        if v:
            changes[name] = Fact.of(v[0], f"net.{key.replace('/', '.')} {where}")
    extra = dict(limits.extra)
    for key, name in (
        ("ipv4/tcp_tw_reuse_delay", "tcp_tw_reuse_delay_ms"),
        ("ipv4/tcp_timestamps", "tcp_timestamps"),
    ):
        v = _ints(raw.get(key, ""))
        if v:
            extra[name] = Fact.of(v[0], f"net.{key.replace('/', '.')} {where}")
    changes["extra"] = extra
    ct = _ints(raw.get("netfilter/nf_conntrack_count", ""))
    if ct:
        changes["conntrack_count"] = Fact.of(ct[0], f"nf_conntrack_count {where}")
    limit = nofile if nofile is not None else nofile_hard()
    src = "the worker's RLIMIT_NOFILE" if nofile is not None else "ulimit -Hn"
    changes["nofile_soft"] = Fact.of(limit, src)
    changes["nofile_hard"] = Fact.of(limit, src)
    return dataclasses.replace(limits, **changes)
