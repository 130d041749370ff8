"""The connections a client worker holds: what it keeps per connection, what the server does
to them, and when churn closes them.

Per connection a worker keeps its descriptor's **state byte** (a ``bytearray`` indexed by
descriptor, values below) and a few numbers in arrays indexed the same way (:class:`Holder`);
no object per connection. A held connection the server writes to or closes is drained and
counted as :mod:`conncap.engine.peer` describes; ``streak`` closes by the server while held
grows by fewer than that are the server's ceiling.

**Churn** (``lifetime`` set): every connection is closed ``lifetime`` seconds after its
handshake, with a FIN (``close="fin"``: the client then holds TIME_WAIT) or an RST
(``close="rst"``: SO_LINGER 0, set when the socket is made). All connections live equally
long, so their deadlines come in the order they were established: a FIFO ring of (fd,
deadline) in two preallocated arrays (:class:`CloseRing`). A ring entry whose fd was closed
meanwhile (the server closed first) is recognised by ``started[fd]``, which holds the
connection's deadline while it is HELD.
"""

from __future__ import annotations

import contextlib
import os
import struct
from array import array
from collections.abc import Callable

from conncap.engine.peer import EOF, LIFE_BUCKETS, MSG_OTHER
from conncap.engine.tally import ClientTally

#: State bytes, by descriptor. SENT: established, the first message sent, not yet answered.
FREE, CONNECTING, HELD, CONTROL, SENT = 0, 1, 2, 3, 4
#: Close modes in churn: a FIN (the closer holds TIME_WAIT) or an RST (SO_LINGER 0).
CLOSE_MODES = ("fin", "rst")
#: SO_LINGER on, 0 seconds: close() sends an RST and leaves no TIME_WAIT.
LINGER_0 = struct.pack("ii", 1, 0)


class CloseRing:
    """Churn's close schedule: (fd, deadline) in arrival order, deadlines only grow."""

    __slots__ = ("fd", "head", "n", "t")

    def __init__(self, cap: int = 1024) -> None:
        self.fd = array("i", bytes(4 * cap))
        self.t = array("d", bytes(8 * cap))
        self.head = 0
        #: Entries in the ring.
        self.n = 0

    def push(self, fd: int, due: float) -> None:
        """Close ``fd`` at ``due`` (the caller sets ``started[fd] = due``, see the module)."""
        cap = len(self.fd)
        if self.n == cap:  # full: unroll into a ring twice the size
            order = [(self.head + i) % cap for i in range(cap)] if cap else []
            grow = max(cap, 1024)
            self.fd = array("i", [self.fd[i] for i in order]) + array("i", bytes(4 * grow))
            self.t = array("d", [self.t[i] for i in order]) + array("d", bytes(8 * grow))
            self.head = 0
            cap = len(self.fd)
        i = (self.head + self.n) % cap
        self.fd[i] = fd
        self.t[i] = due
        self.n += 1

    def close_due(self, now: float, state: bytearray, started: array[float]) -> int:
        """Close every connection whose deadline is ``now`` or earlier (FIN, or RST where
        SO_LINGER 0 was set when the socket was made); returns how many were closed."""
        ring_fd, ring_t = self.fd, self.t
        cap = len(ring_fd)
        head, n = self.head, self.n
        closed = 0
        while n and ring_t[head] <= now:
            fd = ring_fd[head]
            if state[fd] == HELD and started[fd] == ring_t[head]:
                state[fd] = FREE
                os.close(fd)
                closed += 1
            head = (head + 1) % cap
            n -= 1
        self.head, self.n = head, n
        return closed


class Holder(ClientTally):
    """The per-descriptor tables and the handling of held connections (the connector's base
    class: its loop reads these attributes and calls these methods as its own)."""

    def __init__(
        self,
        quota: int,
        *,
        size: int,
        lifetime: float | None,
        close: str,
        send: bytes | None,
        streak: int,
        edge: bool,
        clock: Callable[[], float],
        time_wait: Callable[[], int | None],
        autostart: bool,
    ) -> None:
        churn = lifetime is not None
        super().__init__(
            quota, size=size, churn=churn, clock=clock, time_wait=time_wait, autostart=autostart
        )
        #: Edge-triggered polling: drain until EAGAIN (level-triggered: one read per event).
        self.edge = edge
        # by descriptor: state byte, start time (churn: deadline), pair, monotonic_ns at connect
        self.state = bytearray(size)
        self.started = array("d", bytes(8 * size))
        self.pair_of = array("I", bytes(4 * size))
        self.t_ns = array("q", bytes(8 * size))
        self.streak_limit = max(1, streak)
        # the server's close streak: lost and held when it was last checked
        self._mark_lost = 0
        self._mark_held = 0
        self.send = send or None
        # churn: close each connection `lifetime` s after its handshake (docs/engine.md)
        self.lifetime = lifetime
        self.close_mode = close
        self.ring = CloseRing(1024 if churn else 0)

    def _grow(self, fd: int) -> None:
        extra = fd + 1024 - len(self.state)
        self.state.extend(bytes(extra))
        self.started.extend(array("d", bytes(8 * extra)))
        self.pair_of.extend(array("I", bytes(4 * extra)))
        self.first.of.extend(bytes(extra))
        self.t_ns.extend(array("q", bytes(8 * extra)))

    def _on_held(self, fd: int) -> None:
        """The server sent something or closed: drain (its first bytes are noted); on EOF or
        an error the connection is gone."""
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
            first = self.first
            if not first.of[fd]:
                first.note(fd, data)
                self._dirty = True
            if self.state[fd] == SENT:  # answered: held
                self.state[fd] = HELD
                self.sending -= 1
            if not self.edge:
                return

    def _drop(self, fd: int, code: int) -> None:
        """The server closed ``fd`` (FIN: ``code`` EOF; RST: ECONNRESET) after its handshake."""
        state = self.state
        if state[fd] == SENT:
            self.sending -= 1
        state[fd] = FREE
        os.close(fd)
        self.held -= 1
        self.dropped[code] = self.dropped.get(code, 0) + 1
        first = self.first
        slot = first.of[fd]
        if slot:
            first.of[fd] = 0
            if slot == MSG_OTHER:
                first.other[1] += 1
            else:
                first.msgs[slot - 1][2] += 1
        now = self.clock()
        born = self.started[fd] - (self.lifetime or 0.0) if self.churn else self.started[fd]
        ms = int(max(0.0, now - born) * 1000.0)
        self.life[min(ms.bit_length(), LIFE_BUCKETS - 1)] += 1
        self.lost += 1
        self.last_close = code
        self._dirty = True

    def _close_streak(self) -> None:
        """The server closes as fast as we open (``streak`` closes while held grew by fewer):
        held no longer grows, the server's ceiling. Checked once per batch of events."""
        lost = self.lost - self._mark_lost
        if lost < self.streak_limit:
            return
        gained = self.held - self._mark_held
        if gained < lost and self.ceiling is None and not self.churn:
            self.last_op = "recv"
            self._ceiling(
                self.last_close,
                f"the server closed {lost:,} connections after their handshake while held "
                f"grew by {max(gained, 0):,} (to {self.held:,})",
            )
        self._mark_lost, self._mark_held = self.lost, self.held

    def _send_first(self, fd: int) -> None:
        """``send``: write the first message; held once answered or acknowledged."""
        assert self.send is not None
        # a full buffer or a closed peer: the scan or the close event says more
        with contextlib.suppress(OSError):
            os.write(fd, self.send)
        self.state[fd] = SENT
        self.sending += 1
