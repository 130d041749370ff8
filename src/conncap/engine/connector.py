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
handshake, on a FIFO ring of deadlines (:mod:`conncap.engine.held`). **Held means held**: a
worker opens until it *holds* its quota, within a cap on attempts (:data:`ATTEMPTS_PER_QUOTA`
× quota + ``streak``); what the server does to held connections (closes, first bytes,
lifetimes, ICMP, ``send`` unacknowledged) is counted as :mod:`conncap.engine.peer` describes.
When the server closes ``streak`` connections while held grows by fewer than that, the worker
is at a ceiling (the server's). Counters and the stats line: :mod:`conncap.engine.tally`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from conncap import latency
from conncap.engine import poller as pl
from conncap.engine import protocol
from conncap.engine.held import CLOSE_MODES, CONNECTING, CONTROL, FREE, HELD, LINGER_0, SENT, Holder
from conncap.engine.peer import ICMP_ERRNOS, note_icmp, set_recverr, unacked
from conncap.engine.portrange import (
    port_slice,
    read_port_range,
    read_reserved_ports,
    read_time_wait,
)
from conncap.engine.protocol import IP_BIND_ADDRESS_NO_PORT

#: Port exhaustion as connect() reports it.
PORT_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EADDRINUSE})
#: Times a pair must fail with a port error in a row before it counts as exhausted.
PAIR_DEAD_AFTER = 2
#: Default: failed attempts in a row (no success between) that make a ceiling.
DEFAULT_STREAK = 32
#: New connects per loop turn at most (then the loop polls for completions).
BATCH = 128
#: Attempts a worker may make per connection of its quota (plus ``streak``), so a server that
#: closes everything cannot keep it opening forever.
ATTEMPTS_PER_QUOTA = 4

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


class Connector(Holder):
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
        send: bytes | None = None,
    ) -> None:
        if not pairs:
            raise ValueError("no (source, destination) pair to connect over")
        if bind_mode not in protocol.PORT_CHOICES:
            raise ValueError(f"bind mode must be one of {protocol.PORT_CHOICES}")
        if close not in CLOSE_MODES:
            raise ValueError(f"close must be one of {CLOSE_MODES}")
        if lifetime is not None and not lifetime >= 0:
            raise ValueError("lifetime must be 0 or more seconds")
        ep = poller if poller is not None else pl.new_poller()
        super().__init__(
            quota,
            size=max_fd + 64,
            lifetime=lifetime,
            close=close,
            send=send,
            streak=streak,
            edge=pl.is_edge_triggered(ep),
            clock=clock,
            time_wait=time_wait,
            autostart=autostart,
        )
        self.pairs = list(pairs)
        self.addrs = [(p.host, p.port) for p in pairs]
        self.families = [p.family for p in pairs]
        self.srcs = [p.src for p in pairs]
        self.rate = rate
        self.window = max(1, window)
        self.timeout = timeout
        self.bind_mode = bind_mode
        self.emit = emit
        self.make_socket = make_socket
        self.ep = ep
        self.control_fd = control_fd
        self.control = protocol.ControlBuffer()
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
        self.max_attempts = ATTEMPTS_PER_QUOTA * quota + self.streak_limit
        self.recverr = False
        self.cap: int | None = None
        self.tokens = 0.0
        self.t_last_token = self.t0
        self._last_emit = 0.0
        self._next_scan = 0.0
        if control_fd is not None:
            self.state[control_fd] = CONTROL
            self.ep.register(control_fd, pl.IN)

    def _budget(self, now: float) -> int:
        if not self.running or self.paused or self.ceiling is not None or self.stopping:
            return 0
        have = self.ok if self.churn else self.held  # held means held (module docstring)
        n = min(BATCH, self.window - self.inflight, self.quota - have - self.inflight)
        if not self.churn:
            n = min(n, self.max_attempts - self.attempts)
            if n <= 0 and self.attempts >= self.max_attempts and have < self.quota:
                self._attempts_ceiling()
                return 0
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
        ring = self.ring
        if ring.n:
            timeout = min(timeout, max(0.0, ring.t[ring.head] - now))
        try:
            events = self.ep.poll(timeout, 1024)
        except InterruptedError:
            events = []
        if events:
            self._on_events(events)
        now = self.clock()
        if ring.n and ring.t[ring.head] <= now:
            closed = ring.close_due(now, self.state, self.started)
            if closed:
                self.held -= closed
                self.closed += closed
                self._dirty = True
        if (self.inflight or self.sending) and now >= self._next_scan:
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
        recverr = self.recverr
        monotonic_ns = time.monotonic_ns
        t_ns = self.t_ns
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
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
                if recverr:  # an earlier connect failed as an ICMP error would make it fail
                    set_recverr(s, families[pi])
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
            t_connect = monotonic_ns()
            try:
                err = s.connect_ex(addrs[pi])
            except OSError as exc:
                err = exc.errno or 0
            if err in in_progress:
                fd = s.detach()
                if fd >= size:
                    self._grow(fd)
                    state, started, pair_of = self.state, self.started, self.pair_of
                    t_ns = self.t_ns
                    size = len(state)
                state[fd] = CONNECTING
                started[fd] = now
                t_ns[fd] = t_connect
                pair_of[fd] = pi
                register(fd, mask)
                inflight += 1
            else:
                if recverr and err in ICMP_ERRNOS:
                    note_icmp(self.icmp, s, families[pi])
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

    def _on_events(self, events: list[tuple[int, int]]) -> None:
        state = self.state
        edge = self.edge
        bad = pl.ERR | pl.HUP
        ok_n = 0
        churn = self.churn
        now = self.clock()
        due = now + (self.lifetime or 0.0) if churn else 0.0
        started = self.started
        push = self.ring.push
        send = self.send
        now_ns = time.monotonic_ns()  # the wake-up that reports these handshakes
        t_ns, lat, bounds = self.t_ns, self.lat, latency.BOUNDS_NS
        lat_sum, lat_max = 0, self.lat_max
        for fd, ev in events:
            st = state[fd]
            if st == CONNECTING:
                self.inflight -= 1
                if ev & bad or not ev & pl.OUT:
                    self._fail_async(fd)
                    continue
                state[fd] = HELD
                ok_n += 1
                d = now_ns - t_ns[fd]
                lat[bisect_right(bounds, d)] += 1
                lat_sum += d
                if d > lat_max:
                    lat_max = d
                if churn:
                    push(fd, due)
                    started[fd] = due  # marks which connection the ring entry is for
                else:
                    started[fd] = now  # established: the start of its lifetime
                if not edge:
                    self.ep.modify(fd, pl.IN | pl.RDHUP)
                if send is not None:
                    self._send_first(fd)
                if ev & (pl.IN | pl.RDHUP):
                    self._on_held(fd)
            elif st in (HELD, SENT):
                self._on_held(fd)
            elif st == CONTROL:
                self._on_control()
        if ok_n:
            self.lat_sum += lat_sum
            self.lat_max = lat_max
            self.ok += ok_n
            self.held += ok_n
            self.streak = 0
            if self.held > self.peak:
                self.peak = self.held
            self._dirty = True
        if self.lost != self._mark_lost:
            self._close_streak()

    def _fail_async(self, fd: int) -> None:
        code = errno.ECONNREFUSED
        try:
            probe = socket.socket(fileno=fd)
            try:
                if self.recverr:
                    note_icmp(self.icmp, probe, self.families[self.pair_of[fd]])
                code = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
            finally:
                probe.detach()
        except OSError:
            pass
        self.state[fd] = FREE
        os.close(fd)
        self._fail(code, self.pair_of[fd], port_error=self.bind_mode != "explicit")

    def _expire(self, now: float) -> None:
        """Connects older than ``timeout``: closed and counted as ETIMEDOUT. ``send``: a
        first message still unacknowledged after ``timeout`` (the connection exists only at
        the client): closed, counted as ETIMEDOUT on ``send``; acknowledged: held."""
        limit = now - self.timeout
        state = self.state
        started = self.started
        if self.sending:
            fd = state.find(SENT)
            while fd != -1:
                if started[fd] <= limit:
                    self.sending -= 1
                    if unacked(fd, self.families[self.pair_of[fd]]):
                        state[fd] = FREE
                        self.first.of[fd] = 0
                        with contextlib.suppress(OSError, ValueError, KeyError):
                            self.ep.unregister(fd)
                        os.close(fd)
                        self.held -= 1
                        self.unacked += 1
                        self._fail(errno.ETIMEDOUT, self.pair_of[fd], op="send")
                    else:
                        state[fd] = HELD
                fd = state.find(SENT, fd + 1)
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
        if code in ICMP_ERRNOS and not self.recverr and _linux():
            self.recverr = True  # later sockets read the ICMP type and code behind it
        if self.streak >= self.streak_limit:
            self._ceiling(code, f"{self.streak} attempts in a row failed, the last with this errno")

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

    def close_all(self, reset: bool = True) -> None:
        """Close every connection. ``reset``: with SO_LINGER 0 (an RST), so a run leaves no
        TIME_WAIT behind to slow the next one's port search (the server counts a reset).
        Hold mode and ``--close rst`` set it on every socket when it is made."""
        state = self.state
        for fd in range(len(state)):
            st = state[fd]
            if st in (CONNECTING, HELD, SENT):
                state[fd] = FREE
                if reset and self.churn and self.close_mode != "rst":  # else set at creation
                    try:
                        s = socket.socket(self.family_of(fd), socket.SOCK_STREAM, 0, fd)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
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


def build(config: protocol.ClientConfig, emit: Emit) -> Connector:
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
        lifetime=None if (life := config.get("lifetime")) is None else float(life),
        close=str(config.get("close") or "fin"),
        send=bytes.fromhex(config["send"]) if config.get("send") else None,
    )
    conn.full_range = full
    if config.get("cap") is not None:
        conn.cap = int(config["cap"])
    emit("ready", pid=os.getpid(), ports=[])
    return conn
