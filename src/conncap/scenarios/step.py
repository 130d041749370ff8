"""One step of a scenario as data: what was launched (:class:`Launch`), what was measured
(:class:`Step`), and the server-side account of where the client's connections are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conncap.result import Attribution, Ceiling, JsonValue, Prediction, ServerFigures
from conncap.result import Step as ResultStep
from conncap.scenarios.expect import n

if TYPE_CHECKING:
    from conncap.engine import OpenPlan
    from conncap.measure import MeasuredStep
    from conncap.netns import Host


@dataclass(frozen=True)
class Launch:
    """One client pool of a step: which namespace, which plan, which descriptor limit."""

    host: Host
    plan: OpenPlan
    nofile: int | None = None


@dataclass
class Step:
    """One measured step: what was asked, what the client and the server saw, and why it
    stopped. ``observed`` is what the scenario read with the system's tools (``ss``, fd
    tables); ``measured`` the loop's step, whose pools hold until :meth:`ScenarioRun.release`."""

    name: str
    title: str
    t_start: float
    t_end: float
    requested: int
    held: int
    established_peak: int
    attempts: int
    failures: dict[str, int]
    failures_by_cause: dict[str, int]
    ceiling: Ceiling
    prediction: Prediction
    attribution: Attribution
    server: ServerFigures | None
    counters: dict[str, int | None]
    plan: dict[str, JsonValue]
    stop_reason: str
    observed: dict[str, JsonValue] = field(default_factory=dict)
    measured: MeasuredStep | None = field(default=None, repr=False)

    @property
    def errno(self) -> str | None:
        return self.ceiling.errno

    @property
    def cause(self) -> str | None:
        return self.ceiling.cause

    @property
    def server_held(self) -> int | None:
        return self.server.held if self.server is not None else None

    @property
    def server_errors(self) -> Mapping[str, int]:
        """The server's accept() errors during this step, by cause (none read: empty)."""
        return (self.server.errors_during_step if self.server is not None else None) or {}

    def result(self) -> ResultStep:
        """The step as the result's ``steps[]`` entry."""
        return ResultStep(
            name=self.name,
            title=self.title,
            plan=self.plan,
            t_start=round(self.t_start, 3),
            t_end=round(self.t_end, 3),
            requested=self.requested,
            held=self.held,
            established_peak=self.established_peak,
            attempts=self.attempts,
            failures=dict(self.failures),
            failures_by_cause=dict(self.failures_by_cause),
            stop_reason=self.stop_reason,
            ceiling=self.ceiling,
            prediction=self.prediction,
            attribution=self.attribution,
            server=self.server,
            counters=dict(self.counters),
            observed=dict(self.observed),
        )


def side_line(side: Mapping[str, int | None]) -> str:
    """'client holds 316: 251 accepted, 65 in the accept queue (backlog 64), none in
    SYN-RECV, none half-open'."""
    half = side.get("half_open")
    syn = side.get("syn_recv")
    why = (
        " (established at the client only: SYN cookies whose last ACK met a full queue)"
        if half
        else ""
    )
    return (
        f"client holds {n(side.get('client_held'))}: {n(side.get('server_accepted'))} "
        f"accepted, {n(side.get('accept_queue'))} in the accept queue (backlog "
        f"{n(side.get('backlog'))}), {n(syn) if syn else 'none'} in SYN-RECV, "
        f"{n(half) if half else 'none'} half-open{why}"
    )
