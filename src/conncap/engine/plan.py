"""What ``conncap open`` is asked to do: targets, source IPs, workers. Pure parsing and
arithmetic (plus reading this host's addresses for ``--source-ip auto``).

Errors are :class:`conncap.errors.UsageError` with one line that says what to write instead.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from conncap.engine import protocol
from conncap.errors import UsageError
from conncap.result import JsonValue

#: Most source addresses one --source-ip value may expand to.
MAX_SOURCES = 65536
#: Most (source IP, destination) pairs one run cycles through: each worker keeps a few
#: words per pair, and a pair is a pool of up to 64,512 ports, so 262,144 pairs already
#: offer billions of connections.
MAX_PAIRS = 262_144


@dataclass(frozen=True, slots=True)
class Target:
    """A destination host and an inclusive port range (one port: lo == hi)."""

    host: str
    lo: int
    hi: int

    @property
    def ports(self) -> range:
        return range(self.lo, self.hi + 1)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.lo}" if self.lo == self.hi else f"{host}:{self.lo}-{self.hi}"


@dataclass(frozen=True, slots=True)
class OpenPlan:
    """One ``open`` run. ``source_ips`` empty: the kernel picks the source address."""

    targets: tuple[Target, ...]
    count: int
    source_ips: tuple[str, ...] = ()
    workers: int = 1
    rate: float | None = None
    hold_s: float = 0.0
    timeout_s: float = 5.0
    bind_mode: str = "kernel"
    window: int = 512
    streak: int = 32
    port_range: tuple[int, int] | None = None
    notes: tuple[str, ...] = field(default=())
    #: Churn (``open --lifetime``): close each connection this many seconds after its
    #: handshake; None: hold them (the default). ``count`` is then rate × duration.
    lifetime: float | None = None
    #: Churn: ``fin`` (a normal close: the client holds TIME_WAIT) or ``rst`` (SO_LINGER 0).
    close: str = "fin"
    #: Churn: seconds of opening at ``rate`` (``open --duration``).
    duration_s: float | None = None
    #: ``open --send``: the first message written on every connection (None: none).
    send: bytes | None = None

    @property
    def churn(self) -> bool:
        return self.lifetime is not None

    def destinations(self) -> list[tuple[str, int]]:
        return [(t.host, p) for t in self.targets for p in t.ports]

    @property
    def pair_count(self) -> int:
        """How many (source IP, host, port) :meth:`pairs` yields, without building them."""
        return max(1, len(self.source_ips)) * sum(t.hi - t.lo + 1 for t in self.targets)

    def pairs(self) -> Iterator[tuple[str | None, str, int]]:
        """Every (source IP, host, port) the workers cycle through, one at a time (a plan may
        describe far more than it is allowed to build: :func:`check_pair_count`)."""
        srcs: Sequence[str | None] = self.source_ips or (None,)
        for t in self.targets:
            for p, s in itertools.product(t.ports, srcs):
                yield (s, t.host, p)

    def split(self, n: int) -> list[int]:
        """``count`` split exactly over ``n`` workers (the first ones take the remainder)."""
        base, extra = divmod(self.count, n)
        return [base + (1 if i < extra else 0) for i in range(n)]

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "targets": [str(t) for t in self.targets],
            "source_ips": list(self.source_ips),
            "workers": self.workers,
            "count": self.count,
            "rate": self.rate,
            "hold_s": self.hold_s,
            "timeout_s": self.timeout_s,
            "bind_mode": self.bind_mode,
            **(
                {"lifetime": self.lifetime, "close": self.close, "duration_s": self.duration_s}
                if self.churn
                else {}
            ),
            **({"send": self.send.decode("latin-1")} if self.send else {}),
        }


def parse_ports_arg(text: str, what: str = "port") -> tuple[int, int]:
    """A user's ``P`` or ``P1-P2`` (a target's ports, ``serve --ports``) -> (lo, hi); bad text
    is a UsageError. /proc's ip_local_port_range is :func:`conncap.procfs.parse_port_range`."""
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number or a range like 5000-5009") from None
    if not (0 < lo <= hi <= 65535):
        raise UsageError(f"{what} {text!r}: ports are 1-65535 and the range goes low-high")
    return lo, hi


def parse_target(text: str) -> Target:
    """``host:port``, ``host:P1-P2`` or ``[v6]:port``; an IPv6 address without brackets is
    ambiguous (is ``::1:80`` port 80 of ::1, or the address ::1:80?) and refused."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]:")
    else:
        host, sep, rest = text.rpartition(":")
        if ":" in host:
            raise UsageError(
                f"target {text!r} is ambiguous: write an IPv6 address in brackets, "
                f"e.g. [{host}]:{rest}"
            )
    if not sep or not host or not rest:
        raise UsageError(f"target {text!r} is not host:port or host:P1-P2 (e.g. 127.0.0.1:5000)")
    lo, hi = parse_ports_arg(rest, f"target {text!r}: port")
    try:
        infos = socket.getaddrinfo(host, lo, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"target {text!r}: cannot resolve {host!r} ({exc.strerror})") from None
    addr = str(infos[0][4][0])
    return Target(addr, lo, hi)


def parse_sources(values: Iterable[str]) -> tuple[list[str], bool]:
    """``--source-ip`` values (IP, CIDR, A-B range, comma lists) -> addresses, and ``auto``."""
    out: list[str] = []
    auto = False
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            if item == "auto":
                auto = True
                continue
            out.extend(_expand(item))
            if len(out) > MAX_SOURCES:
                raise UsageError(f"--source-ip expands to more than {MAX_SOURCES} addresses")
    return list(dict.fromkeys(out)), auto


def _expand(item: str) -> list[str]:
    try:
        if "/" in item:
            net = ipaddress.ip_network(item, strict=False)
            if net.num_addresses > MAX_SOURCES:
                raise UsageError(f"--source-ip {item}: more than {MAX_SOURCES} addresses")
            hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
            return [str(a) for a in hosts]
        if "-" in item:
            a_s, b_s = item.split("-", 1)
            a, b = ipaddress.ip_address(a_s), ipaddress.ip_address(b_s)
            if a.version != b.version or int(b) < int(a):
                raise UsageError(f"--source-ip {item}: write the range low-high, one IP version")
            if int(b) - int(a) + 1 > MAX_SOURCES:
                raise UsageError(f"--source-ip {item}: more than {MAX_SOURCES} addresses")
            return [str(ipaddress.ip_address(i)) for i in range(int(a), int(b) + 1)]
        return [str(ipaddress.ip_address(item))]
    except ValueError:
        raise UsageError(
            f"--source-ip {item!r} is not an IP, a CIDR (127.0.0.0/29), a range or 'auto'"
        ) from None


def auto_sources(targets: Sequence[Target], count: int, ports_per_ip: int) -> list[str]:
    """Local addresses that reach every target, as many as ``count`` needs.

    Linux routes all of 127.0.0.0/8 to itself, so a loopback target gets 127.0.0.1,
    127.0.0.2, ... as many as ``count / (ports_per_ip × destinations)`` asks. Otherwise every
    local address of the right family that the kernel accepts as a source towards each target
    (a UDP connect sends nothing).
    """
    dests = sum(t.hi - t.lo + 1 for t in targets)
    # Linux connect() searches ports of one parity first; past half the range every connect
    # walks the other half (~1 ms each), so give each source IP at most half of it.
    usable = max(1, ports_per_ip // 2) if sys.platform.startswith("linux") else ports_per_ip
    need = max(1, math.ceil(count / max(1, usable * dests)))
    v4_loop = all(
        ipaddress.ip_address(t.host) in ipaddress.ip_network("127.0.0.0/8") for t in targets
    )
    if v4_loop and sys.platform.startswith("linux"):
        need = min(need, 254 * 256)
        return [
            str(ipaddress.ip_address(int(ipaddress.ip_address("127.0.0.1")) + i))
            for i in range(need)
        ]
    candidates = _local_addresses()
    good = [a for a in candidates if all(_reaches(a, t) for t in targets)]
    if not good:
        raise UsageError("--source-ip auto: no local address reaches the target")
    return good


def _local_addresses() -> list[str]:
    try:
        import psutil

        out = []
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    out.append(a.address.split("%")[0])
        return list(dict.fromkeys(out))
    except Exception:
        return ["127.0.0.1", "::1"]


def _reaches(src: str, target: Target) -> bool:
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    if (":" in target.host) != (fam == socket.AF_INET6):
        return False
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((src, 0))
            s.connect((target.host, target.lo))
        except OSError:
            return False
    return True


def nofile_hard() -> int:
    """This process's hard RLIMIT_NOFILE (what each worker can raise its soft limit to)."""
    try:
        import resource
    except ImportError:
        return 1 << 20
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


def per_worker_capacity(nofile: int | None = None) -> int:
    """Connections one client worker can hold under its descriptor limit (less the
    descriptors it keeps for itself, :data:`conncap.engine.protocol.CLIENT_WORKER_FDS`)."""
    limit = nofile if nofile is not None else nofile_hard()
    return max(1, limit - protocol.CLIENT_WORKER_FDS)


def auto_workers(count: int, nofile: int | None = None) -> int:
    """As many workers as the per-process descriptor limit requires for ``count``."""
    return max(1, math.ceil(count / per_worker_capacity(nofile)))


def check_pair_count(plan: OpenPlan) -> None:
    """UsageError for a plan with more (source IP, destination) pairs than a worker can keep."""
    n = plan.pair_count
    if n > MAX_PAIRS:
        raise UsageError(
            f"{len(plan.source_ips) or 1:,} source IP(s) × "
            f"{sum(t.hi - t.lo + 1 for t in plan.targets):,} destination port(s) make "
            f"{n:,} (source IP, destination) pairs; at most {MAX_PAIRS:,} (each pair is a "
            "pool of up to 64,512 ports): give fewer source IPs or ports"
        )


def check_local_sources(sources: Sequence[str]) -> None:
    """UsageError naming the first source address this host cannot bind (not one of its own:
    every connect() from it would fail, and the run would measure nothing)."""
    for src in sources:
        ip = ipaddress.ip_address(src)
        if ip.version == 4 and ip.is_loopback and sys.platform.startswith("linux"):
            continue  # Linux routes all of 127.0.0.0/8 to itself
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((src, 0))
            except OSError as exc:
                raise UsageError(
                    f"--source-ip {src}: not an address of this host ({exc.strerror}); "
                    "use one of its own (`ip -br addr`) or auto"
                ) from None


def check_plan(plan: OpenPlan) -> None:
    if plan.count < 1:
        raise UsageError("--count must be at least 1")
    if plan.workers < 1:
        raise UsageError("--workers must be at least 1 (or auto)")
    if plan.workers > plan.count:
        raise UsageError(f"--workers {plan.workers} is more than --count {plan.count}")
    if plan.rate is not None and not (math.isfinite(plan.rate) and plan.rate > 0):
        raise UsageError(f"--rate must be a positive number, not {plan.rate}")
    if not (math.isfinite(plan.timeout_s) and plan.timeout_s > 0):
        raise UsageError("--timeout must be a positive number of seconds")
    if not (math.isfinite(plan.hold_s) and plan.hold_s >= 0):
        raise UsageError("--hold must be 0 or more seconds")
    if plan.bind_mode not in protocol.PORT_CHOICES:
        raise UsageError(f"--bind-mode must be one of {', '.join(protocol.PORT_CHOICES)}")
    if not plan.targets:
        raise UsageError("give at least one TARGET (host:port)")
    check_pair_count(plan)
    if plan.churn:
        from conncap.model.churn import CLOSE_MODES, check_churn_values

        if plan.rate is None:
            raise UsageError("--lifetime needs --rate (new connections per second)")
        check_churn_values(plan.rate, plan.lifetime or 0.0, plan.duration_s)
        if plan.close not in CLOSE_MODES:
            raise UsageError(f"--close must be fin or rst, not {plan.close!r}")


def build_open_plan(
    *,
    targets: Sequence[str],
    count: int,
    source_ip: Sequence[str] | None = None,
    workers: str = "auto",
    rate: float | None = None,
    hold: float = 0.0,
    timeout: float = 5.0,
    bind_mode: str = "kernel",
    nofile: int | None = None,
) -> tuple[OpenPlan, list[str]]:
    """The OpenPlan of ``conncap open``'s options on this host (its port range, its
    addresses for ``auto``), and the notes to print about the choices made. Used by the
    command and by each node's agent of a cluster run."""
    from conncap.engine.portrange import read_port_range

    if count < 1:
        raise UsageError("--count must be at least 1")
    if nofile is not None and nofile < 16:
        raise UsageError("--nofile must be at least 16")
    parsed = tuple(parse_target(t) for t in targets)
    sources, auto = parse_sources(source_ip or [])
    notes: list[str] = []
    lo, hi = read_port_range()
    if auto:
        found = auto_sources(parsed, count, hi - lo + 1)
        sources = list(dict.fromkeys([*sources, *found]))
        notes.append(f"--source-ip auto: {len(found)} address(es) from {found[0]}")
    if workers == "auto":
        n_workers = min(auto_workers(count, nofile), count)
        cap = per_worker_capacity(nofile)
        notes.append(
            f"--workers auto: {n_workers} worker process(es), each holding at most {cap:,} "
            "connections under its descriptor limit (RLIMIT_NOFILE)"
        )
    else:
        try:
            n_workers = int(workers)
        except ValueError:
            raise UsageError("--workers is a number or auto") from None
    plan = OpenPlan(
        targets=parsed,
        count=count,
        source_ips=tuple(sources),
        workers=n_workers,
        rate=rate,
        hold_s=hold,
        timeout_s=timeout,
        bind_mode=bind_mode,
    )
    return plan, notes
