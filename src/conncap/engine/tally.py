"""What a client worker counts, the ceiling it names, and the stats line it reports.

:class:`ClientTally` is the state a :class:`~conncap.engine.connector.Connector` reports:
counters (attempts, handshakes, held, failures by errno, connections the server closed),
the connect-latency histogram (:mod:`conncap.latency`), churn's TIME_WAIT figures, the
ceiling once one is hit, and the phase. The connector's loop updates these attributes
inline (it inherits them, so the hot path reads them as its own); this module only builds
what is reported (``stats``, :class:`~conncap.engine.protocol.ClientSnapshot`).
"""

from __future__ import annotations

import errno
from array import array
from collections.abc import Callable

from conncap import latency
from conncap.engine import protocol
from conncap.engine.acceptor import rss_bytes
from conncap.engine.peer import EOF, LIFE_BUCKETS, FirstBytes

__all__ = ["ClientTally"]


class ClientTally:
    """A client worker's counters and its report (the connector's base class)."""

    def __init__(
        self,
        quota: int,
        *,
        size: int,
        churn: bool,
        clock: Callable[[], float],
        time_wait: Callable[[], int | None],
        autostart: bool,
    ) -> None:
        self.quota = quota
        self.churn = churn
        self.clock = clock
        self.read_tw = time_wait
        # counters
        self.attempts = 0
        self.ok = 0
        self.held = 0
        self.peak = 0
        self.inflight = 0
        self.failures: dict[int, int] = {}
        self.dropped: dict[int, int] = {}
        self.streak = 0
        # closed by the server after the handshake: lifetimes, first bytes (engine/peer.py)
        self.lost = 0
        self.last_close = EOF
        self.life = array("I", bytes(4 * LIFE_BUCKETS))
        self.first = FirstBytes(size)
        self.icmp: dict[str, int] = {}
        # --send: first messages written and not yet answered; never acknowledged
        self.sending = 0
        self.unacked = 0
        # connect latency (conncap.latency): a histogram, its sum and max in nanoseconds
        self.lat = array("Q", bytes(8 * latency.BUCKETS))
        self.lat_sum = 0
        self.lat_max = 0
        # churn: closed at the end of their lifetime, TIME_WAIT now and at most, first failure
        self.closed = 0
        self.tw = 0
        self.tw_peak = 0
        self.first_fail: float | None = None
        self.first_fail_errno = 0
        # the ceiling, and the operation that failed last (its evidence)
        self.last_op = "connect"
        self.ceiling: protocol.CeilingReport | None = None
        self._ceiling_settled = False
        # phase
        self.running = autostart
        self.paused = False
        self.stopping = False
        self.t0 = clock()
        self.t_go = self.t0
        self._dirty = True

    @property
    def phase(self) -> str:
        if self.stopping:
            return "stopped"
        if self.ceiling is not None:
            return "ceiling" if self.inflight == 0 else "settling"
        if (self.ok if self.churn else self.held) >= self.quota:
            return "done"
        if not self.running:
            return "wait"
        if self.paused:
            return "paused"
        return "run"

    def _ceiling(self, code: int, evidence: str) -> None:
        """The first ceiling sticks, with this namespace's TIME_WAIT now (the evidence for
        cause ``time-wait``)."""
        if self.ceiling is None:
            tw = self.read_tw()
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

    def _attempts_ceiling(self) -> None:
        """Held means held: the attempts allowed for the quota are spent."""
        self._ceiling(
            EOF if self.lost else (self.first_fail_errno or errno.ETIMEDOUT),
            f"{self.attempts:,} attempts for a quota of {self.quota:,}: held "
            f"{self.held:,}, {self.lost:,} closed by the server",
        )

    def _sample_tw(self) -> None:
        n = self.read_tw()
        if n is not None:
            self.tw = n
            if n > self.tw_peak:
                self.tw_peak = n

    def stats(self) -> protocol.ClientSnapshot:
        """The stats line: the figures every worker reports, then those it has."""
        out = self._stats()
        if self.lost:
            out["life"] = list(self.life)
        msgs = self.first.report()
        if msgs is not None:
            out["msgs"] = msgs
        if self.icmp:
            out["icmp"] = dict(self.icmp)
        if self.unacked:
            out["unacked"] = self.unacked
        if self.churn:
            out["closed"] = self.closed
            out["tw"] = self.tw
            out["tw_peak"] = self.tw_peak
            out["first_fail"] = None if self.first_fail is None else round(self.first_fail, 3)
            out["first_fail_errno"] = self.first_fail_errno
        return out

    def _stats(self) -> protocol.ClientSnapshot:
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
            "lat": latency.trimmed(self.lat),
            "lat_sum": self.lat_sum,
            "lat_max": self.lat_max,
        }
