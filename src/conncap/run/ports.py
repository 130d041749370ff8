"""Which local ports a run can count on: the server's ports (chosen outside the ephemeral range,
so that listening costs the client no port), the ports other sockets already hold in the range,
and why a measured port ceiling fell short of the prediction.

Linux keeps one bind bucket per local port and network namespace, for IPv4 and IPv6 alike.
connect() without bind() may share a port that another connect() chose (the 4-tuples differ),
but never one that bind() took: a listener anywhere in the range costs every destination that
port (``__inet_hash_connect`` skips buckets with ``fastreuse >= 0``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from conncap.limits import PortRange

#: /proc/net/tcp state codes (include/net/tcp_states.h).
TCP_LISTEN = 0x0A
TCP_STATES: dict[int, str] = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
}

Reader = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class SocketRow:
    """One line of /proc/net/tcp or /proc/net/tcp6 (addresses as text)."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int


def _ip(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # tcp6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def parse_proc_net_tcp(text: str) -> list[SocketRow]:
    """Parse /proc/net/tcp or tcp6; lines that do not parse are skipped (a socket may close
    while the kernel prints the table)."""
    rows: list[SocketRow] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            lip, lport = parts[1].split(":")
            rip, rport = parts[2].split(":")
            rows.append(
                SocketRow(_ip(lip), int(lport, 16), _ip(rip), int(rport, 16), int(parts[3], 16))
            )
        except ValueError:
            continue
    return rows


def _read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read()


def read_sockets(root: str = "/proc", reader: Reader = _read_text) -> list[SocketRow]:
    """Every TCP socket of this network namespace (IPv4 and IPv6); [] where unreadable."""
    rows: list[SocketRow] = []
    for name in ("tcp", "tcp6"):
        try:
            rows.extend(parse_proc_net_tcp(reader(f"{root}/net/{name}")))
        except OSError:
            continue
    return rows


def _in(port: int, rng: PortRange, reserved: frozenset[int]) -> bool:
    return rng[0] <= port <= rng[1] and port not in reserved


def listeners_in_range(
    rows: Iterable[SocketRow], rng: PortRange, reserved: frozenset[int] = frozenset()
) -> set[int]:
    """Ports of the ephemeral range that a listening socket holds (lost to every connect())."""
    return {
        r.local_port for r in rows if r.state == TCP_LISTEN and _in(r.local_port, rng, reserved)
    }


@dataclass(frozen=True, slots=True)
class PortGap:
    """Ports of the range the client did not get towards its destination, and who holds them."""

    usable: int
    """Ports in the range less reserved ones."""
    ours: int
    """Distinct local ports our connections to the destination hold."""
    listening: int
    """Of the others: ports a listening socket holds."""
    other_sockets: int
    """Of the others: ports some other (connected, closing) socket holds, bound by bind()."""
    unseen: int
    """Of the others: ports no socket in the table holds (a socket bound but not yet
    connected or listening is not listed there)."""

    @property
    def missing(self) -> int:
        return self.usable - self.ours

    def explain(self) -> str:
        """One clause: why the client got fewer ports than the range has."""
        if self.missing <= 0:
            return "every usable port of the range was used"
        parts = []
        if self.listening:
            parts.append(f"{self.listening:,} had a listening socket")
        if self.other_sockets:
            parts.append(f"{self.other_sockets:,} another program's socket (bound by bind())")
        if self.unseen:
            parts.append(
                f"{self.unseen:,} no socket listed in /proc/net/tcp (bound but not connected "
                "or listening, or freed since)"
            )
        return (
            f"{self.missing:,} ports of the range were not free for this destination; "
            f"of those, at the end of the step, {', '.join(parts)}"
        )


def port_gap(
    rows: Iterable[SocketRow],
    rng: PortRange,
    reserved: frozenset[int],
    destinations: Iterable[tuple[str, int]],
) -> PortGap:
    """Account for every usable port of ``rng`` after a port ceiling towards ``destinations``."""
    dests = set(destinations)
    usable = {p for p in range(rng[0], rng[1] + 1) if p not in reserved}
    ours: set[int] = set()
    listening: set[int] = set()
    others: set[int] = set()
    for r in rows:
        if r.local_port not in usable:
            continue
        if (r.remote_ip, r.remote_port) in dests and r.state != TCP_LISTEN:
            ours.add(r.local_port)
        elif r.state == TCP_LISTEN:
            listening.add(r.local_port)
        else:
            others.add(r.local_port)
    listening -= ours
    others -= ours | listening
    unseen = len(usable) - len(ours) - len(listening) - len(others)
    return PortGap(
        usable=len(usable),
        ours=len(ours),
        listening=len(listening),
        other_sockets=len(others),
        unseen=max(0, unseen),
    )


def pick_ports_outside(
    host: str,
    n: int,
    rng: PortRange,
    *,
    avoid: Iterable[int] = (),
    bind: Callable[[socket.socket, tuple[str, int]], None] | None = None,
) -> list[int]:
    """``n`` ports outside the ephemeral range that ``host`` can listen on now, checked by
    binding them (never guessed): above the range first, then below it down to 1024.

    A server there costs the client no port of its range, so a one-port run reaches exactly
    the model's count. Fewer than ``n`` come back when fewer are free; the caller falls back
    to port 0 for the rest. The ports are released on return; a race with another program is
    possible and the caller retries.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    skip = set(avoid)
    candidates = [*range(rng[1] + 1, 65536), *range(rng[0] - 1, 1023, -1)]
    held: list[socket.socket] = []
    out: list[int] = []
    try:
        for port in candidates:
            if len(out) >= n:
                break
            if port in skip or rng[0] <= port <= rng[1]:
                continue
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                (bind or _bind)(s, (host, port))
            except OSError:
                s.close()
                continue
            held.append(s)
            out.append(port)
    finally:
        for s in held:
            s.close()
    return out


def _bind(s: socket.socket, addr: tuple[str, int]) -> None:
    s.bind(addr)
