"""The steps of ``conncap run`` and what the model says of each. Pure: no sockets, no /proc.

Step 1 ("ports") opens from one source IP to one server port, as a naive client does, until
the first ceiling; on a default Linux host that is the ephemeral port range. Step 2
("four-tuple") keeps those connections and adds more over several source IPs and server ports:
every (source IP, destination port) pair is a fresh pool of ports, so the port ceiling lifts
until the next limit or the requested count.

A step's prediction and measured ceiling count connections held by the whole run (step 2's
include step 1's), so that they compare with what the held curve shows.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from conncap import model, result
from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.limits import Fact, HostLimits
from conncap.result import JsonValue

#: Causes whose count the model knows exactly (no estimate): a miss there needs a reason.
EXACT_CAUSES = frozenset({Cause.EPHEMERAL_PORTS, Cause.FILE_DESCRIPTORS})

#: Head-room on worker counts: client workers race for ports unevenly, and SO_REUSEPORT
#: spreads accepted connections over server workers by a hash, not evenly.
CLIENT_MARGIN = 1.1
SERVER_MARGIN = 1.25


@dataclass(frozen=True, slots=True)
class StepSpec:
    """What one step connects: from which source IPs (empty: the kernel picks, no bind) to
    which server ports on ``host``."""

    name: str
    title: str
    host: str
    ports: tuple[int, ...]
    source_ips: tuple[str, ...] = ()

    @property
    def destinations(self) -> list[tuple[str, int]]:
        return [(self.host, p) for p in self.ports]

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "name": self.name,
            "title": self.title,
            "host": self.host,
            "ports": list(self.ports),
            "source_ips": list(self.source_ips),
        }


def source_addresses(first: str, n: int) -> tuple[str, ...]:
    """``n`` consecutive addresses from ``first`` (127.0.0.1, 127.0.0.2, ...; Linux routes the
    whole of 127.0.0.0/8 to itself). UsageError when they leave 127.0.0.0/8 for a loopback
    start, or for IPv6 loopback, which has one address."""
    if n < 1:
        raise UsageError("--source-ips must be at least 1")
    base = ipaddress.ip_address(first)
    if base.version == 6:
        if n > 1:
            raise UsageError("IPv6 loopback has one address (::1): use --source-ips 1")
        return (str(base),)
    loop = ipaddress.ip_network("127.0.0.0/8")
    last = ipaddress.ip_address(int(base) + n - 1)
    if base in loop and last not in loop:
        raise UsageError(f"--source-ips {n}: 127.0.0.0/8 has no room for {n} addresses")
    return tuple(str(ipaddress.ip_address(int(base) + i)) for i in range(n))


def plan_steps(
    host: str,
    ports: Sequence[int],
    *,
    escalate: bool,
    source_ips: int,
    sources: Sequence[str] | None = None,
) -> list[StepSpec]:
    """Step 1 to ``ports[0]`` from one address (no bind); step 2 from ``source_ips`` addresses
    to every port in ``ports``, when ``escalate``. The addresses count up from ``host``
    (loopback), or are ``sources`` when given (``--isolated``: the client namespace's own)."""
    if not ports:
        raise UsageError("no server port")
    steps = [StepSpec("ports", "one source IP to one server port", host, (ports[0],))]
    if escalate:
        srcs = tuple(sources) if sources is not None else source_addresses(host, source_ips)
        if not srcs:
            raise UsageError("no source address for step 2")
        title = (
            f"{len(srcs)} source IP{'s' if len(srcs) > 1 else ''} × {len(ports)} server "
            f"port{'s' if len(ports) > 1 else ''}: a new 4-tuple for every pair"
        )
        steps.append(StepSpec("four-tuple", title, host, tuple(ports), srcs))
    return steps


def workers_for(count: int, capacity: int, margin: float) -> int:
    """Processes that hold ``count`` connections at ``capacity`` each, with ``margin``."""
    if count <= 0:
        return 1
    return max(1, math.ceil(count * margin / max(1, capacity)))


def step1_expected(count: int, port_pool: int | None) -> int:
    """Connections step 1 should be ready to hold: the count, or the port pool if smaller
    (with room to spare, so the ports bind before any descriptor limit does)."""
    if port_pool is None:
        return count
    return min(count, port_pool)


#: Fill a fresh port pool at most this far in step 2: Linux's connect() searches even ports
#: first (odd ones are left for bind(), since 4.6), so once half of a pool is used every
#: connect() walks the used half first and the rate falls from tens of thousands a second to
#: about a thousand. More pairs, each less full, keep step 2 fast.
POOL_FILL = 0.5
#: Most source IPs and server ports ``auto`` picks for step 2.
MAX_AUTO_FANOUT = 16


def auto_fanout(count: int, port_pool: int | None) -> int:
    """Source IPs and server ports (n of each, n × n pairs) step 2 uses when asked for ``auto``:
    the fewest that hold what step 1 leaves of ``count`` with every new pool at most
    :data:`POOL_FILL` full. Step 1's pool (one of the pairs) is full already."""
    if port_pool is None or port_pool <= 0:
        return 2
    remaining = count - min(count, port_pool)
    per_pool = max(1.0, port_pool * POOL_FILL)
    n = 2
    while n < MAX_AUTO_FANOUT and (n * n - 1) * per_pool < remaining:
        n += 1
    return n


def model_plan(
    spec: StepSpec,
    *,
    client_processes: int,
    server_processes: int,
    ports_in_use: int = 0,
    bytes_per_conn: float | None = None,
    same_machine: bool | None = None,
) -> model.Plan:
    """The ceiling model's Plan for a step (the whole run's connections up to this step):
    :func:`conncap.model.worker_plan` of the step's destinations and source IPs.
    ``same_machine``: both ends cost this machine's memory and file table (the model's
    ``loopback``); default: whether the destination is a loopback address. ``--isolated``
    says True: its two namespaces share one kernel."""
    return model.worker_plan(
        spec.destinations,
        source_ips=len(spec.source_ips),
        client_processes=client_processes,
        server_processes=server_processes,
        same_machine=same_machine,
        ports_in_use=ports_in_use,
        bytes_per_conn=bytes_per_conn,
    )


def with_nofile(limits: HostLimits, nofile: int | None) -> HostLimits:
    """``limits`` as a worker started with RLIMIT_NOFILE ``nofile`` sees them (None: as they
    are). conncap's workers set both the soft and the hard limit to it."""
    if nofile is None:
        return limits
    import dataclasses

    fact = Fact.of(nofile, "the worker's RLIMIT_NOFILE (--client-nofile/--server-nofile)")
    return dataclasses.replace(limits, nofile_soft=fact, nofile_hard=fact)


class SingleProcessBound(TypedDict):
    """What one client process would hit: its descriptor bound (``single_process``)."""

    count: int
    cause: str
    detail: str
    binds_first: bool


@dataclass(frozen=True, slots=True)
class StepPrediction:
    """The model's answer for a step, its one-line description, and what one process would hit."""

    doc: dict[str, JsonValue]
    line: str
    single_process: SingleProcessBound | None = None

    @property
    def count(self) -> int | None:
        c = self.doc.get("count")
        return c if isinstance(c, int) else None

    @property
    def cause(self) -> str | None:
        c = self.doc.get("cause")
        return c if isinstance(c, str) else None

    @property
    def estimate(self) -> bool:
        return bool(self.doc.get("estimate"))

    def to_json(self) -> dict[str, JsonValue]:
        out = dict(self.doc)
        out["line"] = self.line
        if (sp := self.single_process) is not None:
            out["single_process"] = {
                "count": sp["count"],
                "cause": sp["cause"],
                "detail": sp["detail"],
                "binds_first": sp["binds_first"],
            }
        return out

    def result(self) -> result.Prediction:
        """The prediction as the result stores it."""
        return result.prediction_from_json(self.to_json())


def predict_step(
    limits: HostLimits,
    plan: model.Plan,
    *,
    server_limits: HostLimits | None = None,
    server_fds_in_use: int | None = None,
    client_only: bool = False,
) -> StepPrediction:
    """``model.predict`` for the step, with the descriptor bound of a single client process
    (what a program that does not spread over processes would hit).

    ``limits`` are the client's. With ``server_limits`` (the server's own: another namespace,
    another RLIMIT_NOFILE) or ``server_fds_in_use`` (descriptors a server worker keeps besides
    its connections), each side is predicted from its own limits
    (:func:`conncap.model.two_sided`). ``client_only``: the server is not conncap's
    (``--target``), whose limits are unknown: the client's ceiling is the prediction."""
    if client_only:
        pred = model.predict(limits, plan)
        pred = dataclasses.replace(pred, overall=pred.client)
    elif server_limits is None and server_fds_in_use is None:
        pred = model.predict(limits, plan)
    else:
        server_plan = (
            dataclasses.replace(plan, fds_in_use_per_process=server_fds_in_use)
            if server_fds_in_use is not None
            else None
        )
        pred = model.two_sided(limits, server_limits or limits, plan, server_plan)
    doc = model.to_json(pred)
    single: SingleProcessBound | None = None
    one = model.predict(limits, _replace_processes(plan, 1))
    fd = next((b for b in one.client.bounds if b.cause is Cause.FILE_DESCRIPTORS), None)
    if fd is not None and fd.count is not None:
        single = {
            "count": fd.count,
            "cause": str(fd.cause),
            "detail": fd.detail,
            "binds_first": one.client.count == fd.count and one.client.cause is fd.cause,
        }
    return StepPrediction(doc=doc, line=model.describe(pred, plan), single_process=single)


def _replace_processes(plan: model.Plan, n: int) -> model.Plan:
    import dataclasses

    return dataclasses.replace(plan, client_processes=n)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A measured ceiling against its prediction, in words."""

    predicted: int | None
    measured: int | None
    exact: bool
    matches: bool
    text: str
    reasons: tuple[str, ...] = field(default=())

    def result(self) -> result.Comparison:
        """The comparison as the result stores it."""
        return result.Comparison(
            predicted=self.predicted,
            measured=self.measured,
            exact=self.exact,
            matches=self.matches,
            text=self.text,
            difference=(
                self.measured - self.predicted
                if self.measured is not None and self.predicted is not None
                else None
            ),
            reasons=self.reasons,
        )


def compare(
    prediction: StepPrediction,
    *,
    reached: bool,
    measured: int | None,
    cause: str | None,
    requested: int,
    stop_reason: str,
    reasons: Sequence[str] = (),
    short_ok: int = 0,
    measured_what: str = "measured",
) -> Comparison:
    """Compare a step's outcome with its prediction.

    Ports and descriptors are counted exactly: "predicted 28,232, measured 28,232 ✓", or the
    difference and ``reasons`` (why: other sockets held ports, ...); ``measured_what`` names
    the measured figure ("the server accepted" for a server's limit); up to ``short_ok`` fewer
    than predicted still matches when the kernel does not promise more (``reasons`` say
    why: an odd-sized port range). Memory is an estimate (±5 % counts as a match). A step
    that ended for another reason (the count, the duration, the memory guard, Ctrl-C) says so
    with the predicted ceiling still ahead.
    """
    p, pc = prediction.count, prediction.cause
    why = tuple(reasons)
    if not reached or measured is None:
        if p is None:
            return Comparison(None, measured, False, True, "no ceiling predicted or reached", why)
        held = f"{measured:,}" if measured is not None else "nothing"
        if stop_reason == "count":
            lead = f"reached the requested {requested:,}"
        else:
            lead = f"stopped by {stop_reason} at {held}"
        ok = measured is None or measured <= p
        tail = "" if ok else " (more than predicted: the model is too low)"
        detail = f" ({'; '.join(why)})" if why else ""
        text = f"{lead}, below the predicted ceiling of {p:,} ({pc}){tail}{detail}"
        return Comparison(p, measured, False, ok, text, why)
    if p is None:
        return Comparison(
            None,
            measured,
            False,
            False,
            f"{measured_what} {measured:,} ({cause}); the model predicted no ceiling",
            why,
        )
    exact = pc in EXACT_CAUSES and not prediction.estimate
    if cause != pc:
        text = (
            f"predicted {p:,} ({pc}), {measured_what} {measured:,} ({cause}): "
            f"{cause} bound first, which the model did not foresee"
        )
        return Comparison(p, measured, exact, False, text, why)
    diff = measured - p
    detail = f" ({'; '.join(why)})" if why else ""
    if exact:
        if diff == 0:
            text = f"predicted {p:,}, {measured_what} {measured:,} ✓{detail}"
            return Comparison(p, measured, True, True, text, why)
        text = f"predicted {p:,}, {measured_what} {measured:,} ({diff:+,}){detail}"
        if -short_ok <= diff < 0:
            return Comparison(p, measured, True, True, text + " ✓", why)
        return Comparison(p, measured, True, False, text, why)
    share = diff / p if p else 0.0
    ok = abs(share) <= 0.05
    mark = " ✓" if ok else ""
    text = f"predicted about {p:,} (estimate), {measured_what} {measured:,} ({share:+.1%}){mark}"
    return Comparison(p, measured, False, ok, text, why)


#: ``--churn``: seconds of opening, the fixed rate when the range is too wide to exhaust
#: within them, and the fastest rate picked to exhaust a narrow one.
CHURN_DURATION = 6.0
CHURN_RATE = 200.0
CHURN_MAX_RATE = 1000.0


def churn_rate(port_pool: int | None, duration: float = CHURN_DURATION) -> float:
    """The rate of ``--churn``'s step: one that runs a narrow range's ports out halfway
    through the step (``port_pool`` ÷ half the duration, when that is at most
    :data:`CHURN_MAX_RATE`), else the modest :data:`CHURN_RATE`. Whether it really exhausts
    them (TIME_WAIT, tcp_tw_reuse) is the churn model's to say."""
    if port_pool is None or port_pool <= 0:
        return CHURN_RATE
    rate = port_pool / (duration / 2)
    return rate if rate <= CHURN_MAX_RATE else CHURN_RATE
