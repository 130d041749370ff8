"""The client worker's loop: open connections fast, hold them, classify every failure.

Hot path: a socket is created non-blocking, optionally bound, ``connect_ex()``-ed and
``detach()``-ed at once, so what is kept per connection is its descriptor: a state byte in a
``bytearray`` and a start time in an ``array('d')``, both indexed by descriptor. Each socket is
registered once with epoll for OUT|IN|RDHUP, edge-triggered: the handshake's completion is one
event and a later close by the server is another, with no epoll_ctl in between.

Bind modes (see docs/engine.md):

``kernel``
    connect() picks the local port, as user programs do. With a source IP, the socket is bound
    to (ip, 0) with IP_BIND_ADDRESS_NO_PORT so the port is picked at connect() with the whole
    4-tuple known (tcpkali issue #61).
``explicit``
    conncap picks every port itself: bind((ip, port)) with SO_REUSEADDR, walking this worker's
    slice of ip_local_port_range (reserved ports skipped), so the same port serves every
    destination. It avoids the kernel's port search, which slows to ~700 connects/s near
    exhaustion.

A **ceiling** is a failure that keeps happening on every new attempt: for the ports, every
(source, destination) pair failing with EADDRNOTAVAIL (or, in explicit mode, every port of
the slice used); for anything else, ``streak`` failed attempts in a row with no success. The
worker then stops opening, keeps holding, and says so, with the count of sockets in TIME_WAIT
in its namespace at that moment (the evidence for cause ``time-wait``).

**Churn** (``lifetime`` set): every connection is closed ``lifetime`` seconds after its
handshake, with a FIN (``close="fin"``: the client then holds TIME_WAIT) or an RST
(``close="rst"``: SO_LINGER 0, set when the socket is made). All connections live equally
long, so their deadlines come in the order they were established: a FIFO ring of (fd,
deadline) in two preallocated arrays, no object per connection. A ring entry whose fd was
closed meanwhile (the server closed first) is recognised by ``started[fd]``, which holds the
connection's deadline while it is HELD.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from conncap import procfs
from conncap.engine import poller as pl
from conncap.engine import protocol
from conncap.engine.acceptor import rss_bytes
from conncap.engine.protocol import IP_BIND_ADDRESS_NO_PORT

#: Port exhaustion as connect() reports it.
PORT_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EADDRINUSE})
#: Times a pair must fail with a port error in a row before it counts as exhausted.
PAIR_DEAD_AFTER = 2
#: Default: failed attempts in a row (no success between) that make a ceiling.
DEFAULT_STREAK = 32
#: New connects per loop turn at most (then the loop polls for completions).
BATCH = 128
#: State bytes, by descriptor.
FREE, CONNECTING, HELD, CONTROL = 0, 1, 2, 3
#: errno number used in counters for "the peer closed" (an EOF is not an errno).
EOF = 0
#: Close modes in churn: a FIN (the closer holds TIME_WAIT) or an RST (SO_LINGER 0).
CLOSE_MODES = ("fin", "rst")
_LINGER_0 = struct.pack("ii", 1, 0)

Emit = Callable[..., None]


class SockLike(Protocol):
    """What the loop needs of a new socket (``socket.socket`` has it; fakes too)."""

    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...
    def bind(self, address: Any, /) -> None: ...
    def connect_ex(self, address: Any, /) -> int: ...
    def detach(self) -> int: ...
    def close(self) -> None: ...


SocketFactory = Callable[[int, int], SockLike]


def real_socket(family: int, type_: int) -> SockLike:
    return socket.socket(family, type_)


@dataclass(frozen=True, slots=True)
class Pair:
    """One (source IP, destination) combination a worker connects over."""

    src: str | None
    host: str
    port: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def read_port_range(default: tuple[int, int] = (32768, 60999)) -> tuple[int, int]:
    """This network namespace's ip_local_port_range (inclusive)."""
    try:
        with open(procfs.PORT_RANGE) as fh:
            return procfs.parse_port_range(fh.read())
    except (OSError, ValueError):
        return default


def read_reserved_ports() -> frozenset[int]:
    """This network namespace's ip_local_reserved_ports, expanded."""
    try:
        with open(procfs.RESERVED_PORTS) as fh:
            return procfs.expand_ports(procfs.parse_reserved_ports(fh.read()))
    except (OSError, ValueError):
        return frozenset()


def read_time_wait(path: str = "/proc/net/sockstat") -> int | None:
    """Sockets in TIME_WAIT in this process's network namespace (``tw`` of the ``TCP:`` line
    of /proc/net/sockstat, per namespace); None where it cannot be read."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("TCP:"):
                    words = line.split()
                    return int(words[words.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def port_slice(lo: int, hi: int, index: int, workers: int) -> tuple[int, int]:
    """Worker ``index`` of ``workers``: its contiguous share of [lo, hi] (inclusive)."""
    size = hi - lo + 1
    start = lo + size * index // workers
    end = lo + size * (index + 1) // workers - 1
    return start, end


class Connector:
    """Opens ``quota`` connections over ``pairs`` and holds them until stop()."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        quota: int,
        *,
        rate: float | None = None,
        window: int = 512,
        timeout: float = 5.0,
        bind_mode: str = "kernel",
        port_range: tuple[int, int] | None = None,
        reserved: frozenset[int] = frozenset(),
        streak: int = DEFAULT_STREAK,
        max_fd: int = 1 << 16,
        emit: Emit | None = None,
        control_fd: int | None = None,
        autostart: bool = True,
        make_socket: SocketFactory = real_socket,
        poller: pl.Poller | None = None,
        clock: Callable[[], float] = time.monotonic,
        lifetime: float | None = None,
        close: str = "fin",
        time_wait: Callable[[], int | None] = read_time_wait,
    ) -> None:
        if not pairs:
            raise ValueError("no (source, destination) pair to connect over")
        if bind_mode not in protocol.PORT_CHOICES:
            raise ValueError(f"bind mode must be one of {protocol.PORT_CHOICES}")
        if close not in CLOSE_MODES:
            raise ValueError(f"close must be one of {CLOSE_MODES}")
        if lifetime is not None and not lifetime >= 0:
            raise ValueError("lifetime must be 0 or more seconds")
        self.pairs = list(pairs)
        self.addrs = [(p.host, p.port) for p in pairs]
        self.families = [p.family for p in pairs]
        self.srcs = [p.src for p in pairs]
        self.quota = quota
        self.rate = rate
        self.window = max(1, window)
        self.timeout = timeout
        self.bind_mode = bind_mode
        self.streak_limit = max(1, streak)
        self.emit = emit
        self.clock = clock
        self.make_socket = make_socket
        self.ep = poller if poller is not None else pl.new_poller()
        self.edge = pl.is_edge_triggered(self.ep)
        self.control_fd = control_fd
        self.control = protocol.ControlBuffer()
        size = max_fd + 64
        self.state = bytearray(size)
        self.started = array("d", bytes(8 * size))
        self.pair_of = array("I", bytes(4 * size))
        # explicit mode: each pair walks the same slice of the port range
        lo, hi = port_range if port_range is not None else read_port_range()
        self.slice = (lo, hi)
        #: The whole range when ``port_range`` is this worker's slice of it (for messages).
        self.full_range: tuple[int, int] | None = None
        self.reserved = reserved
        self.cursor = [lo] * len(pairs)
        self.alive = list(range(len(pairs)))
        self.pair_fails = [0] * len(pairs)
        self.rr = 0
        # counters
        self.attempts = 0
        self.ok = 0
        self.held = 0
        self.peak = 0
        self.inflight = 0
        self.failures: dict[int, int] = {}
        self.dropped: dict[int, int] = {}
        self.streak = 0
        self.last_op = "connect"
        self.cap: int | None = None
        self.ceiling: dict[str, Any] | None = None
        self._ceiling_settled = False
        self.running = autostart
        self.paused = False
        self.stopping = False
        self.tokens = 0.0
        self.t0 = clock()
        self.t_go = self.t0
        self.t_last_token = self.t0
        self._last_emit = 0.0
        self._dirty = True
        self._next_scan = 0.0
        # churn: close each connection `lifetime` s after its handshake (docs/engine.md)
        self.lifetime = lifetime
        self.churn = lifetime is not None
        self.close_mode = close
        self.read_tw = time_wait
        cap = 1024 if self.churn else 0
        self.ring_fd = array("i", bytes(4 * cap))
        self.ring_t = array("d", bytes(8 * cap))
        self.ring_head = 0
        self.ring_len = 0
        self.closed = 0
        self.tw = 0
        self.tw_peak = 0
        self.first_fail: float | None = None
        self.first_fail_errno = 0
        if control_fd is not None:
            self.state[control_fd] = CONTROL
            self.ep.register(control_fd, pl.IN)

    # ---- state ------------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        if self.stopping:
            return "stopped"
        if self.ceiling is not None:
            return "ceiling" if self.inflight == 0 else "settling"
        if self.ok >= self.quota:
            return "done"
        if not self.running:
            return "wait"
        if self.paused:
            return "paused"
        return "run"

    def _budget(self, now: float) -> int:
        if not self.running or self.paused or self.ceiling is not None or self.stopping:
            return 0
        n = min(BATCH, self.window - self.inflight, self.quota - self.ok - self.inflight)
        if self.cap is not None:
            n = min(n, self.cap - self.held - self.inflight)
        if self.rate is not None:
            self.tokens = min(
                self.tokens + (now - self.t_last_token) * self.rate, max(1.0, self.rate / 10)
            )
            self.t_last_token = now
            n = min(n, int(self.tokens))
        return n

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until stop() or ``stop`` / EOF on the control pipe; the caller closes."""
        while not self.stopping:
            self.step(protocol.STATS_INTERVAL)

    def step(self, timeout: float) -> None:
        """Open what the budget allows, handle completions, time out stale connects, report."""
        now = self.clock()
        budget = self._budget(now)
        if budget > 0:
            self._launch(budget, now)
            timeout = 0.0
        elif self.rate is not None and self.running and self.phase == "run":
            timeout = min(timeout, max(0.0, (1.0 - self.tokens) / self.rate))
        if self.ring_len:
            timeout = min(timeout, max(0.0, self.ring_t[self.ring_head] - now))
        try:
            events = self.ep.poll(timeout, 1024)
        except InterruptedError:
            events = []
        if events:
            self._on_events(events)
        now = self.clock()
        if self.ring_len and self.ring_t[self.ring_head] <= now:
            self._close_due(now)
        if self.inflight and now >= self._next_scan:
            self._expire(now)
            self._next_scan = now + min(0.1, self.timeout / 4)
        if self.ceiling is not None and self.inflight == 0 and not self._ceiling_settled:
            self.ceiling["held"] = self.held  # what the ceiling let through, once settled
            self._ceiling_settled = True
            self._dirty = True
        if self.emit is not None:
            gap = now - self._last_emit
            if (self._dirty and gap >= protocol.STATS_INTERVAL) or gap >= protocol.IDLE_INTERVAL:
                if self.churn:
                    self._sample_tw()
                self.emit("s", **self.stats())
                self._last_emit = now
                self._dirty = False

    def _launch(self, budget: int, now: float) -> None:
        # The hot path: locals only, one socket object per attempt, detached at once.
        make: Any = self.make_socket
        if make is real_socket:
            make = socket.socket
        register = self.ep.register
        state = self.state
        started = self.started
        pair_of = self.pair_of
        families = self.families
        srcs = self.srcs
        addrs = self.addrs
        alive = self.alive
        explicit = self.bind_mode == "explicit"
        mask = pl.OUT | pl.IN | pl.RDHUP | pl.ET
        nonblock = getattr(socket, "SOCK_NONBLOCK", 0)
        stype = socket.SOCK_STREAM | nonblock
        in_progress = (errno.EINPROGRESS, 0, errno.EWOULDBLOCK)
        no_port = _linux()
        ipproto_ip = socket.IPPROTO_IP
        # SO_LINGER 0 at creation (an RST on close, no TIME_WAIT): in hold mode every
        # connection is reset at the end anyway, so the stop is one close per descriptor, or
        # none at all if the worker is killed (the kernel resets them at exit).
        linger = not self.churn or self.close_mode == "rst"
        size = len(state)
        rr = self.rr
        launched = 0
        inflight = 0
        port = 0
        self._dirty = True
        while launched < budget and alive:
            rr += 1
            if rr >= len(alive):
                rr = 0
            pi = alive[rr]
            if explicit:
                port = self._next_port(pi)
                if port < 0:
                    continue  # this pair's slice is used up (removed from alive)
            launched += 1
            src = srcs[pi]
            try:
                s = make(families[pi], stype)
            except OSError as exc:
                self._fail(exc.errno or 0, pi, op="socket")
                continue
            try:
                if not nonblock:
                    s.setblocking(False)
                if linger:  # churn --close rst: close() will send an RST, no TIME_WAIT
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                if explicit:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((src or _any(families[pi]), port))
                elif src is not None:
                    if no_port:
                        s.setsockopt(ipproto_ip, IP_BIND_ADDRESS_NO_PORT, 1)
                    s.bind((src, 0))
            except OSError as exc:
                s.close()
                # explicit: that one port is taken (skip it); kernel: the source IP is not usable
                self._fail(exc.errno or 0, pi, op="bind")
                continue
            try:
                err = s.connect_ex(addrs[pi])
            except OSError as exc:
                err = exc.errno or 0
            if err in in_progress:
                fd = s.detach()
                if fd >= size:
                    self._grow(fd)
                    state, started, pair_of = self.state, self.started, self.pair_of
                    size = len(state)
                state[fd] = CONNECTING
                started[fd] = now
                pair_of[fd] = pi
                register(fd, mask)
                inflight += 1
            else:
                s.close()
                self._fail(err, pi, port_error=not explicit)
        self.rr = rr
        self.attempts += launched
        self.inflight += inflight
        if self.rate is not None:
            self.tokens -= launched  # --rate: every attempt spends one token

    def _next_port(self, pi: int) -> int:
        lo, hi = self.slice
        port = self.cursor[pi]
        while port <= hi and port in self.reserved:
            port += 1
        if port > hi:
            self.alive.remove(pi)
            if not self.alive:
                flo, fhi = self.full_range or (lo, hi)
                self._ceiling(
                    errno.EADDRNOTAVAIL,
                    f"every port of {flo}-{fhi} is in use towards each destination "
                    "(explicit bind mode)",
                )
            return -1
        self.cursor[pi] = port + 1
        return port

    def _grow(self, fd: int) -> None:
        extra = fd + 1024 - len(self.state)
        self.state.extend(bytes(extra))
        self.started.extend(array("d", bytes(8 * extra)))
        self.pair_of.extend(array("I", bytes(4 * extra)))

    def _on_events(self, events: list[tuple[int, int]]) -> None:
        state = self.state
        edge = self.edge
        bad = pl.ERR | pl.HUP
        ok_n = 0
        churn = self.churn
        due = self.clock() + (self.lifetime or 0.0) if churn else 0.0
        for fd, ev in events:
            st = state[fd]
            if st == CONNECTING:
                self.inflight -= 1
                if ev & bad or not ev & pl.OUT:
                    self._fail_async(fd)
                    continue
                state[fd] = HELD
                ok_n += 1
                if churn:
                    self._schedule_close(fd, due)
                if not edge:
                    self.ep.modify(fd, pl.IN | pl.RDHUP)
                if ev & (pl.IN | pl.RDHUP):
                    self._on_held(fd)
            elif st == HELD:
                self._on_held(fd)
            elif st == CONTROL:
                self._on_control()
        if ok_n:
            self.ok += ok_n
            self.held += ok_n
            self.streak = 0
            if self.held > self.peak:
                self.peak = self.held
            self._dirty = True

    def _schedule_close(self, fd: int, due: float) -> None:
        """Churn: close ``fd`` at ``due`` (appended to the ring; deadlines only grow)."""
        cap = len(self.ring_fd)
        if self.ring_len == cap:  # full: unroll into a ring twice the size
            order = [(self.ring_head + i) % cap for i in range(cap)] if cap else []
            self.ring_fd = array("i", [self.ring_fd[i] for i in order]) + array(
                "i", bytes(4 * max(cap, 1024))
            )
            self.ring_t = array("d", [self.ring_t[i] for i in order]) + array(
                "d", bytes(8 * max(cap, 1024))
            )
            self.ring_head = 0
            cap = len(self.ring_fd)
        i = (self.ring_head + self.ring_len) % cap
        self.ring_fd[i] = fd
        self.ring_t[i] = due
        self.started[fd] = due  # marks which connection this ring entry is for
        self.ring_len += 1

    def _close_due(self, now: float) -> None:
        """Churn: close every connection whose lifetime is over (FIN, or RST with
        ``close="rst"``: SO_LINGER 0 was set when the socket was made)."""
        state, started = self.state, self.started
        ring_fd, ring_t = self.ring_fd, self.ring_t
        cap = len(ring_fd)
        head, n = self.ring_head, self.ring_len
        closed = 0
        while n and ring_t[head] <= now:
            fd = ring_fd[head]
            if state[fd] == HELD and started[fd] == ring_t[head]:
                state[fd] = FREE
                os.close(fd)
                closed += 1
            head = (head + 1) % cap
            n -= 1
        self.ring_head, self.ring_len = head, n
        if closed:
            self.held -= closed
            self.closed += closed
            self._dirty = True

    def _sample_tw(self) -> None:
        n = self.read_tw()
        if n is not None:
            self.tw = n
            if n > self.tw_peak:
                self.tw_peak = n

    def _on_held(self, fd: int) -> None:
        """The server sent something or closed: drain; on EOF or error the connection is gone."""
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._drop(fd, exc.errno or 0)
                return
            if not data:
                self._drop(fd, EOF)
                return
            if not self.edge:
                return

    def _drop(self, fd: int, code: int) -> None:
        self.state[fd] = FREE
        os.close(fd)
        self.held -= 1
        self.dropped[code] = self.dropped.get(code, 0) + 1
        self._dirty = True

    def _fail_async(self, fd: int) -> None:
        code = errno.ECONNREFUSED
        try:
            probe = socket.socket(fileno=fd)
            try:
                code = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
            finally:
                probe.detach()
        except OSError:
            pass
        self.state[fd] = FREE
        os.close(fd)
        self._fail(code, self.pair_of[fd], port_error=self.bind_mode != "explicit")

    def _expire(self, now: float) -> None:
        """Connects older than ``timeout``: closed and counted as ETIMEDOUT."""
        limit = now - self.timeout
        state = self.state
        started = self.started
        fd = state.find(CONNECTING)
        while fd != -1:
            if started[fd] <= limit:
                state[fd] = FREE
                self.inflight -= 1
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self.ep.unregister(fd)
                os.close(fd)
                self._fail(errno.ETIMEDOUT, self.pair_of[fd], op="timeout")
            fd = state.find(CONNECTING, fd + 1)

    def _fail(self, code: int, pi: int, *, port_error: bool = True, op: str = "connect") -> None:
        self.failures[code] = self.failures.get(code, 0) + 1
        if self.first_fail is None:
            self.first_fail = self.clock() - self.t_go
            self.first_fail_errno = code
        self.streak += 1
        self.last_op = op
        self._dirty = True
        if op == "bind" and self.bind_mode == "explicit" and code in PORT_ERRNOS:
            return  # that one port is taken (another socket, TIME_WAIT): the next one may not be
        if port_error and op == "connect" and code in PORT_ERRNOS:
            self.pair_fails[pi] += 1
            if self.pair_fails[pi] >= PAIR_DEAD_AFTER and pi in self.alive:
                self.alive.remove(pi)
                if not self.alive:
                    self._ceiling(code, "every (source IP, destination) pair failed to connect")
            return
        if self.streak >= self.streak_limit:
            self._ceiling(code, f"{self.streak} attempts in a row failed, the last with this errno")

    def _ceiling(self, code: int, evidence: str) -> None:
        if self.ceiling is None:
            tw = self.read_tw()  # the evidence for time-wait: this namespace's TIME_WAIT now
            self.ceiling = {
                "errno": code,
                "op": self.last_op,
                "held": self.held,
                "evidence": evidence,
                "time_wait": tw,
            }
            if tw is not None and tw > self.tw_peak:
                self.tw_peak = tw
            self._dirty = True

    def _on_control(self) -> None:
        assert self.control_fd is not None
        try:
            data = os.read(self.control_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stopping = True
            self.ep.unregister(self.control_fd)
            return
        for word, arg in self.control.feed(data):
            self.command(word, arg)

    def command(self, word: str, arg: int | None = None) -> None:
        """Apply one control command (``go``, ``stop``, ``pause``, ``resume``, ``cap N``)."""
        if word == "go" and not self.running:
            self.running = True
            self.t_go = self.t_last_token = self.clock()
        elif word == "stop":
            self.stopping = True
        elif word == "pause":
            self.paused = True
        elif word == "resume":
            self.paused = False
        elif word == "cap":
            self.cap = None if arg is None or arg < 0 else arg
        self._dirty = True

    # ---- reporting and shutdown --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        out = self._stats()
        if self.churn:
            out["closed"] = self.closed
            out["tw"] = self.tw
            out["tw_peak"] = self.tw_peak
            out["first_fail"] = None if self.first_fail is None else round(self.first_fail, 3)
            out["first_fail_errno"] = self.first_fail_errno
        return out

    def _stats(self) -> dict[str, Any]:
        return {
            "t": round(self.clock() - self.t0, 3),
            "t_go": round(self.t_go - self.t0, 3),
            "phase": self.phase,
            "quota": self.quota,
            "held": self.held,
            "ok": self.ok,
            "peak": self.peak,
            "attempts": self.attempts,
            "inflight": self.inflight,
            "failures": {str(k): v for k, v in self.failures.items()},
            "dropped": {str(k): v for k, v in self.dropped.items()},
            "ceiling": self.ceiling,
            "rss": rss_bytes(),
        }

    def close_all(self, reset: bool = True) -> None:
        """Close every connection. ``reset``: with SO_LINGER 0 (an RST), so a run leaves no
        TIME_WAIT behind to slow the next one's port search (the server counts a reset).
        Hold mode and ``--close rst`` set it on every socket when it is made."""
        state = self.state
        linger = struct.pack("ii", 1, 0)
        for fd in range(len(state)):
            st = state[fd]
            if st in (CONNECTING, HELD):
                state[fd] = FREE
                if reset and self.churn and self.close_mode != "rst":  # else set at creation
                    try:
                        s = socket.socket(self.family_of(fd), socket.SOCK_STREAM, 0, fd)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        s.detach()
                    except OSError:
                        pass
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.held = 0
        self.inflight = 0
        self.ep.close()

    def family_of(self, fd: int) -> int:
        return self.pairs[self.pair_of[fd]].family


def _linux() -> bool:
    import sys

    return sys.platform.startswith("linux")


def _any(family: int) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def build(config: dict[str, Any], emit: Emit) -> Connector:
    """Worker set-up for ``role: client``: say ``ready`` (worker.py runs it)."""
    pairs = [Pair(p[0], str(p[1]), int(p[2])) for p in config["pairs"]]
    bind_mode = str(config.get("bind_mode", "kernel"))
    port_range = config.get("port_range")
    lo, hi = tuple(port_range) if port_range else read_port_range()
    index, workers = config.get("slice", [0, 1])
    full = (int(lo), int(hi))
    if bind_mode == "explicit":
        lo, hi = port_slice(lo, hi, int(index), int(workers))
    conn = Connector(
        pairs,
        int(config["quota"]),
        rate=config.get("rate"),
        window=int(config.get("window", 512)),
        timeout=float(config.get("timeout", 5.0)),
        bind_mode=bind_mode,
        port_range=(lo, hi),
        reserved=read_reserved_ports(),
        streak=int(config.get("streak", DEFAULT_STREAK)),
        max_fd=int(config.get("_nofile", 1 << 16)),
        emit=emit,
        control_fd=0,
        autostart=bool(config.get("autostart", False)),
        lifetime=None if config.get("lifetime") is None else float(config["lifetime"]),
        close=str(config.get("close") or "fin"),
    )
    conn.full_range = full
    if config.get("cap") is not None:
        conn.cap = int(config["cap"])
    emit("ready", pid=os.getpid(), ports=[])
    return conn
