"""Whether a step reached a ceiling and which one: pure, from the evidence the loop gathered.

One rule for ``open``, ``run`` and every scenario:

- The client's workers reported a ceiling (a failure streak, or every port of an explicit
  slice bound): the ceiling is reached at what the client held; its cause and side come from
  :func:`conncap.analysis.attribute`, so a client-side errno (EADDRNOTAVAIL, EMFILE, …) names
  the client and a stall or refusal is explained by the server's evidence.
- The client got its quota but the server holds fewer and its accept() failed for lack of a
  resource (descriptors, the file table, memory): the server's ceiling.
- The step was stopped by its deadline short of what it asked for (``short_is_ceiling``), or
  the server closed connections after their handshake and held ended below the request:
  held levelled off below the request, attributed from the same evidence.
- Held means held: when the server's side was read on this host (``target``) and it holds
  fewer connections on the port than the client does, the ceiling counts the server's (the
  rest exist only at the client: their handshake's last ACK met a full accept queue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from conncap.analysis import CeilingEvidence, attribute
from conncap.catalogue import Cause
from conncap.result import SIDES, Ceiling, Certainty, ServerCloses, Side, TargetSide

#: Connections the client may hold beyond the server's count before the ceiling counts the
#: server's (handshakes in flight while both were read).
IN_FLIGHT_SLACK = 2

#: The server's own resources: accept() failing for one of them bounds what it holds.
SERVER_RESOURCE_CAUSES = (Cause.FILE_DESCRIPTORS, Cause.SYSTEM_FILE_TABLE, Cause.MEMORY)

#: Causes a pool may name more precisely than its errno does: EADDRNOTAVAIL is out of ports,
#: and when the client's namespace holds them mostly in TIME_WAIT, the pool says so.
REFINES: dict[str, frozenset[str]] = {
    str(Cause.EPHEMERAL_PORTS): frozenset({str(Cause.TIME_WAIT)}),
}


@dataclass(frozen=True, slots=True)
class ClientStop:
    """A client pool's own ceiling: the errno its workers stopped on, the call, their words,
    and the cause the pool gave it (it may know more than the errno: ports all in TIME_WAIT)."""

    errno: str
    op: str
    evidence: str
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A step's ceiling, or none (``reached`` False and every other field None)."""

    reached: bool
    count: int | None = None
    cause: str | None = None
    side: str | None = None
    errno: str | None = None
    op: str | None = None
    evidence: str | None = None
    server_held: int | None = None
    certainty: Certainty | None = None

    @classmethod
    def none(cls, server_held: int | None = None) -> Verdict:
        return cls(reached=False, server_held=server_held)

    def ceiling(self, *, step: str | None = None) -> Ceiling:
        """The result's ``ceiling``: this verdict with the catalogue's advice for its cause."""
        if not self.reached or self.cause is None:
            return Ceiling.none()
        side: Side = next((s for s in SIDES if s == self.side), "unknown")
        return Ceiling.reached_at(
            count=self.count,
            cause=self.cause,
            side=side,
            errno=self.errno,
            op=self.op,
            evidence=self.evidence,
            server_held=self.server_held,
            step=step,
            certainty=self.certainty,
        )


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What the loop saw in one step, as plain numbers (the input of :func:`decide`)."""

    requested: int
    client_held: int
    server_held: int | None
    client_stops: Sequence[ClientStop] = ()
    client_failures: Mapping[str, int] = field(default_factory=dict)
    client_failures_by_cause: Mapping[str, int] = field(default_factory=dict)
    server_errors: Mapping[str, int] = field(default_factory=dict)  # cause id -> n, this step
    server_errnos: Mapping[str, int] = field(default_factory=dict)  # errno -> n, this step
    counters: Mapping[str, int | None] = field(default_factory=dict)  # growth over the step
    levels: Mapping[str, int | None] = field(default_factory=dict)  # conntrack count/max
    stop_reason: str = "ramp-over"
    closes: ServerCloses | None = None  # what the server did to established connections
    target: TargetSide | None = None  # the server's side, read on this host


def evidence(facts: StepFacts) -> CeilingEvidence:
    """The attribution's input. A ceiling without any failed attempt (explicit bind: every
    port of the slice bound) still counts each worker's errno once."""
    failures = dict(facts.client_failures)
    if not failures:
        for w in facts.client_stops:
            if w.op == "recv":
                continue  # the server closed them: the closes are the evidence
            failures[w.errno] = failures.get(w.errno, 0) + 1
    c = facts.counters
    return CeilingEvidence(
        client_failures=failures,
        client_failures_by_cause=dict(facts.client_failures_by_cause),
        server_errors=dict(facts.server_errors),
        client_held=facts.client_held,
        server_held=facts.server_held,
        listen_overflows=c.get("listen_overflows"),
        listen_drops=c.get("listen_drops"),
        syn_retrans=c.get("syn_retrans"),
        abort_on_memory=c.get("tcp_abort_on_memory"),
        conntrack_drops=c.get("conntrack_drops"),
        conntrack_insert_failed=c.get("conntrack_insert_failed"),
        conntrack_early_drop=c.get("conntrack_early_drop"),
        conntrack_count=facts.levels.get("conntrack_count"),
        conntrack_max=facts.levels.get("conntrack_max"),
        stop_reason=facts.stop_reason,
        closes=facts.closes,
        target=facts.target,
    )


def _most_common(stops: Sequence[ClientStop]) -> ClientStop | None:
    if not stops:
        return None
    names = [w.errno for w in stops]
    errno = min(set(names), key=lambda e: (-names.count(e), e))
    return next(w for w in stops if w.errno == errno)


def decide(facts: StepFacts, *, short_is_ceiling: bool = False) -> Verdict:
    """The step's ceiling (see the module docstring for the rules)."""
    server_held = facts.server_held
    stops = facts.client_stops
    short = facts.client_held < facts.requested
    closed = facts.closes is not None and facts.closes.closed > 0
    t = facts.target
    client_only = (
        t is not None
        and t.established is not None
        and facts.client_held > t.established + IN_FLIGHT_SLACK
    )
    if (
        stops
        or client_only
        or (short_is_ceiling and short and facts.stop_reason == "max-duration")
        or (short and closed)
    ):
        att = attribute(evidence(facts))
        first = _most_common(stops)
        cause = str(att.cause)
        if first is not None and first.cause in REFINES.get(cause, ()):
            cause = str(first.cause)
        text = att.evidence
        if first is not None and first.evidence and first.evidence not in text:
            text = f"{text}; client: {first.evidence}"
        count = facts.client_held
        if t is not None and t.established is not None:
            if server_held is None:
                server_held = t.established
            if count > t.established + IN_FLIGHT_SLACK:
                text = (
                    f"{text}; the client held {count:,} but the server's side of port "
                    f"{t.port} has {t.established:,} established: {count - t.established:,} "
                    "exist only at the client (their last ACK met a full accept queue)"
                )
                count = t.established
        return Verdict(
            reached=True,
            count=count,
            cause=cause,
            side=att.side,
            errno=first.errno if first else None,
            op=first.op if first else None,
            evidence=text,
            server_held=server_held,
            certainty=att.certainty,
        )
    if server_held is None or server_held >= facts.client_held:
        return Verdict.none(server_held)
    resource = next((c for c in SERVER_RESOURCE_CAUSES if facts.server_errors.get(c)), None)
    if resource is None:
        return Verdict.none(server_held)
    cause = str(resource)
    errno = (
        min(facts.server_errnos.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if facts.server_errnos
        else None
    )
    return Verdict(
        reached=True,
        count=facts.client_held,
        cause=str(cause),
        side="server",
        errno=errno,
        op="accept",
        evidence=(
            f"server accept() failed ×{facts.server_errors[cause]:,} ({errno or cause}) while "
            f"the client's connects still succeeded: the server holds {server_held:,}, the "
            f"client {facts.client_held:,}; the others completed their handshake into the "
            "server's accept queue or, once it was full, are half-open (established at the "
            "client only)"
        ),
        server_held=server_held,
    )
