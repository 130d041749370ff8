"""The server worker's loop: accept and hold (or echo) connections, survive exhaustion.

Hot path: one epoll, listening sockets accepted with ``_accept()`` (a raw descriptor and the
peer address, no socket object), each held connection is an int in a preallocated
``bytearray`` / ``array`` indexed by descriptor, and per-source-IP counts live in a small
dict keyed by IP. Nothing is allocated per connection that outlives the accept.

Exhaustion is a result: accept() failing with EMFILE, ENFILE, ENOBUFS or ENOMEM is counted,
the listeners are switched off in epoll (so a full accept queue does not spin the loop) and
switched on again after a backoff (10 ms doubling to 250 ms) or as soon as a held connection
closes and frees a descriptor. trio's ``ACCEPT_CAPACITY_ERRNOS`` is the model.

While busy, the loop wakes at most every ``coalesce`` seconds and accepts the queue in one
batch: the kernel has already completed the handshakes, so with a deep accept queue this
costs clients nothing and saves a wakeup per connection (measured in docs/engine.md). With a
small backlog (below COALESCE_MIN_BACKLOG) the server accepts at once instead: waiting would
overflow the queue.

``close_after`` (``serve --close-after S``): the server closes each connection S seconds after
accepting it, with a FIN, so the server closes first and TIME_WAIT lands on its side. As in
the client's churn, deadlines come in accept order: a FIFO ring of (fd, deadline) in
preallocated arrays, and ``due[fd]`` tells a live entry from one whose fd was reused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from conncap.engine import poller as pl
from conncap.engine import protocol

#: accept() errors that mean "out of capacity": back off, do not die, do not spin.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection that died in the queue: skip it.
TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EINTR, errno.EPERM}
)
BACKOFF_MIN = 0.01
BACKOFF_MAX = 0.25
#: Most accepts per listener per wakeup, so closes are never starved.
ACCEPT_BATCH = 512
READ_SIZE = 65536
#: While accepting, wake at most this often (seconds): see Acceptor.step. Measured on a 2-core
#: VM at 100,000 held: 20 ms took the pair from ~39K to ~50K connections/s (docs/engine.md).
DEFAULT_COALESCE = 0.02
#: Coalescing waits while handshakes queue up: only where the accept queue can hold what
#: arrives meanwhile (75K/s for 20 ms is 1,500). Below this backlog the server accepts at once,
#: or its own waiting would overflow a small listen queue and distort what it measures.
COALESCE_MIN_BACKLOG = 4096
#: Most distinct source IPs counted one by one; connections from any further IP are counted
#: under :data:`OTHER_IPS` (each tracked IP costs about 155 bytes for the worker's lifetime).
MAX_TRACKED_IPS = 4096
OTHER_IPS = "other"


def effective_coalesce(requested: float | None, backlog: int | None) -> float:
    """The coalescing delay a server worker uses for this listen backlog (0: accept at once).

    An explicit ``requested`` value wins; the default applies only to deep accept queues.
    """
    if requested is not None:
        return requested
    depth = min(read_somaxconn() if backlog is None else backlog, read_somaxconn())
    return DEFAULT_COALESCE if depth >= COALESCE_MIN_BACKLOG else 0.0


Emit = Callable[..., None]


class Listener(Protocol):
    """What the loop needs of a listening socket (``socket.socket`` has it; fakes too)."""

    def fileno(self) -> int: ...
    def _accept(self) -> tuple[int, Any]: ...
    def close(self) -> None: ...


def read_somaxconn(default: int = 4096) -> int:
    """This network namespace's net.core.somaxconn (the backlog listen() is capped to)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def check_port_free(family: int, bind: str, port: int) -> None:
    """OSError(EADDRINUSE) naming the address when another socket listens on ``bind:port``.

    A bind *without* SO_REUSEPORT fails on a port anyone listens on, including a listener
    that set SO_REUSEPORT, which our own SO_REUSEPORT bind would silently join (and share
    its connections with). Our first worker probes so; the pool's others join it."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    exc.errno,
                    f"{bind} port {port} is already in use by another listener; conncap "
                    "never shares a port (give another port, or 0 for any free one)",
                ) from None
            raise


def open_listeners(
    bind: str,
    ports: Sequence[int],
    backlog: int | None,
    reuseport: bool = True,
    exclusive: bool = False,
) -> list[socket.socket]:
    """Non-blocking listening sockets on ``bind`` for each port (0 = the kernel picks).
    ``exclusive``: refuse a port another socket listens on (see :func:`check_port_free`);
    the pool's first worker sets it, the others then join that worker's ports. An error
    names the address and the port."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    depth = read_somaxconn() if backlog is None else backlog
    out: list[socket.socket] = []
    port = 0
    try:
        for port in ports:
            if exclusive and port:
                check_port_free(family, bind, port)
            s = socket.socket(family, socket.SOCK_STREAM)
            out.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport and hasattr(socket, "SO_REUSEPORT"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((bind, port))
            s.listen(depth)
            s.setblocking(False)
    except OSError as exc:
        for s in out:
            s.close()
        if exc.strerror and str(port) in exc.strerror:
            raise
        raise OSError(exc.errno, f"cannot listen on {bind} port {port}: {exc.strerror}") from exc
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


class Acceptor:
    """Accepts on ``listeners`` and holds every connection until the peer closes or stop()."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        *,
        mode: str = "hold",
        max_fd: int = 1 << 16,
        emit: Emit | None = None,
        control_fd: int | None = None,
        poller: pl.Poller | None = None,
        clock: Callable[[], float] = time.monotonic,
        coalesce: float = 0.0,
        close_after: float | None = None,
    ) -> None:
        if mode not in ("hold", "echo"):
            raise ValueError(f"mode must be hold or echo, not {mode!r}")
        if close_after is not None and not close_after >= 0:
            raise ValueError("close_after must be 0 or more seconds")
        self.listeners = list(listeners)
        self.mode = mode
        self.emit = emit
        self.clock = clock
        self.ep = poller if poller is not None else pl.new_poller()
        self.control_fd = control_fd
        self.control = protocol.ControlBuffer()
        size = max_fd + 64
        #: 1 = a held connection, 2 = a listener, 3 = the control pipe (by descriptor).
        self.kind = bytearray(size)
        #: Index into ``self.ips`` of each held connection's source IP.
        self.ip_of = array("I", bytes(4 * size))
        self.ips: list[str] = []
        self.ip_index: dict[str, int] = {}
        self.per_ip: list[int] = []
        self.pending_out: dict[int, bytes] = {}  # echo mode: bytes not yet sent back
        self.held = 0
        self.accepted = 0
        self.closed = 0
        self.resets = 0
        self.errors: dict[int, int] = {}
        self.backoffs = 0
        self.paused_until = 0.0  # listeners off until then (0 = on)
        self.backoff = BACKOFF_MIN
        self.stopping = False
        self.coalesce = coalesce
        self._busy = 0.0
        self.t0 = clock()
        self._dirty = True
        self._last_emit = 0.0
        self._accept_of: dict[int, Callable[[], tuple[int, Any]]] = {}
        # close_after: the server closes first (docs/engine.md)
        self.close_after = close_after
        self.expired = 0
        self.due = array("d", bytes(8 * size)) if close_after is not None else array("d")
        cap = 1024 if close_after is not None else 0
        self.ring_fd = array("i", bytes(4 * cap))
        self.ring_t = array("d", bytes(8 * cap))
        self.ring_head = 0
        self.ring_len = 0
        for ls in self.listeners:
            fd = ls.fileno()
            self._accept_of[fd] = ls._accept
            self.kind[fd] = 2
            self.ep.register(fd, pl.IN)
        if control_fd is not None:
            self.kind[control_fd] = 3
            self.ep.register(control_fd, pl.IN)

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stop() or a ``stop`` command / EOF on the control pipe; caller closes."""
        while not self.stopping:
            self.step(protocol.STATS_INTERVAL)

    def step(self, timeout: float) -> None:
        """One poll and the work it brings; also resumes listeners and emits stats."""
        now = self.clock()
        if self.coalesce and self._busy:
            # The handshake is the kernel's: clients are established whether or not we have
            # accepted yet. While busy, wake at most every `coalesce` s and take the queue in
            # one batch: far fewer wakeups (and, on a VM, IPIs) per connection.
            wait = self._busy + self.coalesce - now
            if wait > 0:
                time.sleep(wait)
            now = self.clock()
            self._busy = 0.0
        if self.paused_until:
            if now >= self.paused_until:
                self._resume_listeners()
            else:
                timeout = min(timeout, self.paused_until - now)
        if self.ring_len:
            timeout = min(timeout, self.ring_t[self.ring_head] - now)
        try:
            events = self.ep.poll(max(timeout, 0.0), 1024)
        except InterruptedError:
            events = []
        kind = self.kind
        for fd, ev in events:
            k = kind[fd]
            if k == 1:
                self._on_conn(fd, ev)
            elif k == 2:
                self._on_listener(fd)
            elif k == 3:
                self._on_control()
        if self.ring_len and self.ring_t[self.ring_head] <= self.clock():
            self._close_due(self.clock())
        if self.emit is not None:
            now = self.clock()
            gap = now - self._last_emit
            if (self._dirty and gap >= protocol.STATS_INTERVAL) or gap >= protocol.IDLE_INTERVAL:
                self.emit("s", **self.stats())
                self._last_emit = now
                self._dirty = False

    def _on_listener(self, lfd: int) -> None:
        accept = self._accept_of.get(lfd)
        if accept is None or self.paused_until:
            return
        register = self.ep.register
        kind = self.kind
        ip_of = self.ip_of
        ip_index = self.ip_index
        per_ip = self.per_ip
        mask = pl.IN | pl.RDHUP
        echo = self.mode == "echo"
        closing = self.close_after is not None
        due = self.clock() + (self.close_after or 0.0) if closing else 0.0
        n = 0
        for _ in range(ACCEPT_BATCH):
            try:
                fd, addr = accept()
            except BlockingIOError:
                break
            except OSError as exc:
                code = exc.errno or 0
                self.errors[code] = self.errors.get(code, 0) + 1
                self._dirty = True
                if code in TRANSIENT_ERRNOS:
                    continue
                self._pause_listeners()  # capacity (or unknown): back off, never spin
                break
            ip = addr[0]
            idx = ip_index.get(ip)
            if idx is None:
                idx = self._new_ip(ip)
            per_ip[idx] += 1
            if fd >= len(kind):  # a descriptor above the limit we were told: still hold it
                self._grow(fd)
                kind = self.kind
                ip_of = self.ip_of
            kind[fd] = 1
            ip_of[fd] = idx
            if echo:
                os.set_blocking(fd, False)
            register(fd, mask)
            n += 1
            if closing:
                self._schedule_close(fd, due)
        if n:
            if n < ACCEPT_BATCH:
                self._busy = self.clock()
            self.accepted += n
            self.held += n
            self.backoff = BACKOFF_MIN
            self._dirty = True

    def _new_ip(self, ip: str) -> int:
        """The index of a source IP not seen before; past :data:`MAX_TRACKED_IPS` the one
        shared index of :data:`OTHER_IPS` (the table stays bounded however many clients)."""
        if len(self.ips) >= MAX_TRACKED_IPS:
            ip = OTHER_IPS
            idx = self.ip_index.get(ip)
            if idx is not None:
                return idx
        idx = len(self.ips)
        self.ips.append(ip)
        self.ip_index[ip] = idx
        self.per_ip.append(0)
        return idx

    def _grow(self, fd: int) -> None:
        extra = fd + 1024 - len(self.kind)
        self.kind.extend(bytes(extra))
        self.ip_of.extend(array("I", bytes(4 * extra)))
        if self.close_after is not None:
            self.due.extend(array("d", bytes(8 * extra)))

    def _schedule_close(self, fd: int, due: float) -> None:
        """close_after: close ``fd`` at ``due`` (appended to the ring; deadlines only grow)."""
        cap = len(self.ring_fd)
        if self.ring_len == cap:  # full: unroll into a ring twice the size
            order = [(self.ring_head + i) % cap for i in range(cap)] if cap else []
            more = max(cap, 1024)
            self.ring_fd = array("i", [self.ring_fd[i] for i in order]) + array(
                "i", bytes(4 * more)
            )
            self.ring_t = array("d", [self.ring_t[i] for i in order]) + array("d", bytes(8 * more))
            self.ring_head = 0
            cap = len(self.ring_fd)
        i = (self.ring_head + self.ring_len) % cap
        self.ring_fd[i] = fd
        self.ring_t[i] = due
        self.due[fd] = due
        self.ring_len += 1

    def _close_due(self, now: float) -> None:
        """close_after: close (FIN) every connection whose time is up; the server closed
        first, so it holds the TIME_WAIT."""
        ring_fd, ring_t, kind, due = self.ring_fd, self.ring_t, self.kind, self.due
        cap = len(ring_fd)
        while self.ring_len and ring_t[self.ring_head] <= now:
            fd = ring_fd[self.ring_head]
            if kind[fd] == 1 and due[fd] == ring_t[self.ring_head]:
                self.expired += 1
                self._close(fd)
            self.ring_head = (self.ring_head + 1) % cap
            self.ring_len -= 1

    def _on_conn(self, fd: int, ev: int) -> None:
        if ev & pl.OUT and fd in self.pending_out:
            self._flush(fd)
            return
        if ev & (pl.IN | pl.RDHUP | pl.HUP | pl.ERR):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                self.resets += 1
                self._close(fd)
                return
            if not data:
                self._close(fd)
                return
            if self.mode == "echo":
                self._echo(fd, data)

    def _echo(self, fd: int, data: bytes) -> None:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.resets += 1
            self._close(fd)
            return
        if n < len(data):  # peer not reading: stop reading it until this is sent
            self.pending_out[fd] = data[n:]
            self.ep.modify(fd, pl.OUT | pl.RDHUP)

    def _flush(self, fd: int) -> None:
        data = self.pending_out.pop(fd)
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.resets += 1
            self._close(fd)
            return
        if n < len(data):
            self.pending_out[fd] = data[n:]
        else:
            self.ep.modify(fd, pl.IN | pl.RDHUP)

    def _close(self, fd: int) -> None:
        self.kind[fd] = 0
        self.per_ip[self.ip_of[fd]] -= 1
        self.pending_out.pop(fd, None)
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.ep.unregister(fd)
        os.close(fd)
        self.held -= 1
        self.closed += 1
        self._dirty = True
        if self.paused_until:  # a descriptor is free again: accept now
            self._resume_listeners()

    def _pause_listeners(self) -> None:
        if not self.paused_until:
            self.backoffs += 1
            for ls in self.listeners:
                self.ep.modify(ls.fileno(), 0)
        self.paused_until = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _resume_listeners(self) -> None:
        self.paused_until = 0.0
        for ls in self.listeners:
            self.ep.modify(ls.fileno(), pl.IN)

    def _on_control(self) -> None:
        assert self.control_fd is not None
        try:
            data = os.read(self.control_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # parent gone
            self.stopping = True
            self.ep.unregister(self.control_fd)
            return
        for word, _arg in self.control.feed(data):
            if word == "stop":
                self.stopping = True
            elif word == "quiet":
                self._quiet()

    def _quiet(self) -> None:
        """Stop watching connections and listeners (the run is ending): the clients' resets
        are then the kernel's work only, with no wakeup here, and ``held`` stays what was held
        when the run ended. A fresh poller watches the control pipe alone."""
        old = self.ep
        self.ep = pl.new_poller()
        if self.control_fd is not None:
            self.ep.register(self.control_fd, pl.IN)
        old.close()
        self.paused_until = 0.0
        self._accept_of.clear()

    # ---- reporting and shutdown --------------------------------------------------------------

    def stats(self) -> protocol.ServerSnapshot:
        return {
            "t": round(self.clock() - self.t0, 3),
            "held": self.held,
            "accepted": self.accepted,
            "closed": self.closed,
            "resets": self.resets,
            "errors": {str(k): v for k, v in self.errors.items()},
            "per_ip": {ip: n for ip, n in zip(self.ips, self.per_ip, strict=True) if n},
            "backoffs": self.backoffs,
            "paused": bool(self.paused_until),
            "rss": rss_bytes(),
            **({"expired": self.expired} if self.close_after is not None else {}),
        }

    def close_all(self) -> None:
        """Close the listeners first (no new handshakes), then every held connection."""
        for ls in self.listeners:
            try:
                self.kind[ls.fileno()] = 0
                self.ep.unregister(ls.fileno())
            except (OSError, ValueError, KeyError):
                pass
            ls.close()
        kind = self.kind
        fd = kind.find(1)
        while fd != -1:
            kind[fd] = 0
            with contextlib.suppress(OSError):
                os.close(fd)
            fd = kind.find(1, fd + 1)
        self.held = 0
        self.ep.close()


_last_rss = [0]


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc/self/statm; 0 where unknown).

    Out of descriptors (the very moment the figure matters) statm cannot be opened; then the
    peak RSS from getrusage, which needs no descriptor (a holding worker's memory only grows,
    so its peak is its size then). Keeping statm open instead would cost every worker a
    descriptor, and the model counts them (``protocol.CLIENT_WORKER_FDS``)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            value = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        value = max(_last_rss[0], _peak_rss())
    _last_rss[0] = value
    return value


def _peak_rss() -> int:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except (ImportError, OSError, ValueError):
        return 0


def build(config: protocol.ServerConfig, emit: Emit) -> Acceptor:
    """Worker set-up for ``role: server``: listen, then say ``ready`` (worker.py runs it)."""
    listeners = open_listeners(
        str(config.get("bind", "127.0.0.1")),
        [int(p) for p in config.get("ports", [0])],
        config.get("backlog"),
        bool(config.get("reuseport", True)),
        exclusive=bool(config.get("exclusive", False)),
    )
    acc = Acceptor(
        cast("list[Listener]", listeners),
        mode=str(config.get("mode", "hold")),
        max_fd=int(config.get("_nofile", 1 << 16)),
        emit=emit,
        control_fd=0,
        coalesce=effective_coalesce(config.get("coalesce"), config.get("backlog")),
        close_after=None if config.get("close_after") is None else float(config["close_after"]),
    )
    ports = [int(ls.getsockname()[1]) for ls in listeners]
    emit("ready", pid=os.getpid(), ports=ports)
    return acc
