"""What every scenario does the same way: start a server in its namespace, ramp client pools
in theirs, sample both sides and the namespaces' counters into one timeline, attribute each
step's ceiling from the evidence, check expectations, and stop everything it started.

A scenario is a function ``run(sr: ScenarioRun) -> None`` that calls :meth:`ScenarioRun.server`,
:meth:`ScenarioRun.ramp` (one step), :meth:`ScenarioRun.release` and :meth:`ScenarioRun.check`.
All traffic stays between namespaces of the scenario's own topology; every ramp is bounded by
the pools' count and handshake timeout and by ``max_s``; :meth:`ScenarioRun.close` stops every
pool and server by their pids (the topology then removes the namespaces).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from conncap.measure import Launch as PoolLaunch
from conncap.measure import MeasuredStep, Measurement, Verdict
from conncap.measure.verdict import evidence
from conncap.result import (
    Attribution,
    Ceiling,
    JsonValue,
    Node,
    Prediction,
    Sample,
    ServerFigures,
    json_object,
)
from conncap.scenarios import observe
from conncap.scenarios.expect import Expectation, n
from conncap.scenarios.step import Launch, Step

if TYPE_CHECKING:
    from conncap.engine import ServerPool
    from conncap.engine.results import ChurnRun
    from conncap.limits import HostLimits
    from conncap.netns import Host, Topology

#: Seconds between two timeline samples (the result schema asks for at least 1 per second).
SAMPLE_S = 0.25
#: Seconds between two reads of a namespace's counters (each read runs `ip netns exec cat`).
COUNTERS_S = 0.5
#: Scales a scenario can run at.
SCALES = ("small", "full")

Out = Callable[[str], None]


class ScenarioRun:
    """The state of one scenario run inside an open :class:`~conncap.netns.Topology`."""

    def __init__(
        self,
        topo: Topology,
        *,
        scale: str = "full",
        out: Out | None = None,
        options: Mapping[str, int | str] | None = None,
        on_sample: Callable[[Sample, Any], None] | None = None,
        on_event: Callable[[str, Mapping[str, object]], None] | None = None,
    ) -> None:
        """``options``: scenario-specific settings from the command line (``--nodes``);
        ``on_sample(sample, totals)`` and ``on_event(kind, fields)``: the measurement loop's
        samples (with the client's totals then) and events, for ``--events``/``--metrics``."""
        if scale not in SCALES:
            from conncap.errors import UsageError

            raise UsageError(f"--scale must be one of {', '.join(SCALES)}, not {scale!r}")
        self.topo = topo
        self.scale = scale
        self.small = scale == "small"
        self.options: dict[str, int | str] = dict(options or {})
        self.out: Out = out if out is not None else (lambda _line: None)
        self.started_at = dt.datetime.now(dt.UTC)
        self.m = Measurement(
            probe=self,
            on_sample=None if on_sample is None else lambda x: on_sample(x, self.m.last_totals),
            on_event=on_event,
        )
        self.t0 = self.m.t0
        self.timeline: list[Sample] = self.m.timeline
        self.steps: list[Step] = []
        #: ``open --cluster``'s nodes, on the scenario's time line (the ``cluster`` scenario).
        self.nodes: list[Node] = []
        self.expectations: list[Expectation] = []
        self.notes: list[str] = []
        self.settings: dict[str, JsonValue] = {}
        self.layout: dict[str, Any] = {}  # free-form JSON; scenarios fill nested parts in place
        self.headline: str | None = None
        #: The scenario's account in a few sentences, for its summary (set by the scenario).
        self.story: list[str] = []
        self.interrupted = False
        self.error: str | None = None
        self._server: ServerPool | None = None
        self._server_host: Host | None = None
        self._stopped_pids: set[int] = set()
        self._counters: dict[str, observe.NsCounters] = {}
        self._last_counters: dict[str, int | None] = {}
        self._last_counter_t = 0.0
        self._base_limits: HostLimits | None = None

    # ---- clock, output ----------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the scenario started (the timeline's ``t``)."""
        return self.m.now()

    def say(self, line: str) -> None:
        self.out(line)

    def check(self, expectation: Expectation) -> Expectation:
        """Record and print one expectation (✓, ✗ or · for a note)."""
        self.expectations.append(expectation)
        self.out(f"  {expectation.line()}")
        return expectation

    def note(self, line: str) -> None:
        self.notes.append(line)
        self.out(f"  note: {line}")

    # ---- limits and the model --------------------------------------------------------------

    def base_limits(self) -> HostLimits:
        """The host's limits, read once (namespaces override the per-namespace facts)."""
        if self._base_limits is None:
            from conncap.limits import read_limits

            self._base_limits = read_limits()
        return self._base_limits

    def limits(self, host: Host, nofile: int | None) -> HostLimits:
        from conncap.scenarios.isolated import namespace_limits

        return namespace_limits(self.topo, host, nofile, self.base_limits())

    def predict(
        self,
        client: Host,
        client_nofile: int | None,
        server: Host,
        server_nofile: int | None,
        **plan: Any,
    ) -> Prediction:
        """The model's prediction for a plan between two namespaces (``plan``: model.Plan
        fields; loopback is False, the workers raise their soft limit and keep the
        descriptors besides their connections that conncap's workers keep)."""
        from conncap import model
        from conncap.engine.protocol import CLIENT_WORKER_FDS as WORKER_FDS
        from conncap.engine.protocol import server_worker_fds as server_fds
        from conncap.model import predict_sides

        plan.setdefault("loopback", False)
        plan.setdefault("raise_nofile", True)
        plan.setdefault("fds_in_use_per_process", WORKER_FDS)
        plan.setdefault("server_fds_in_use_per_process", server_fds(self._listeners_per_worker()))
        return predict_sides(
            self.limits(client, client_nofile),
            self.limits(server, server_nofile),
            model.Plan(**plan),
        )

    def _listeners_per_worker(self) -> int:
        """Listening sockets each server worker holds: every port, or its share of them
        when the ports are split over the workers (``conncap.engine.server.SHARE_MAX``)."""
        from conncap.engine.server import SHARE_MAX

        server = self._server
        if server is None:
            return 1
        asked = server.requested_ports
        if server.workers > 1 and len(asked) > SHARE_MAX and 0 not in asked:
            return -(-len(asked) // server.workers)
        return max(1, len(asked))

    # ---- the server --------------------------------------------------------------------------

    def server(
        self,
        host: Host,
        ip: str,
        *,
        ports: int = 1,
        workers: int = 1,
        nofile: int | None = None,
        backlog: int | None = None,
        port: int | None = None,
        close_after: float | None = None,
        replace: bool = False,
    ) -> ServerPool:
        """Start the scenario's holding server in ``host`` on ``ports`` kernel-chosen ports
        (``port``: that one port instead). ``close_after``: the server closes each connection
        that many seconds after accepting it (churn's server-closes-first). ``replace``: stop
        the server running now first (a scenario has one server at a time)."""
        from conncap.engine import ServerPool

        if self._server is not None:
            if not replace:
                raise RuntimeError("a scenario has one server")
            self.resume_server()
            old, self._server = self._server, None
            self.m.server = None
            old.stop(timeout=2.0)
        pool = ServerPool(
            bind=ip,
            ports=[port] if port is not None else [0] * ports,
            workers=workers,
            backlog=backlog,
            nofile=nofile,
            netns=host.name,
            close_after=close_after,
        )
        self._server = pool
        self._server_host = host
        pool.start()
        self.m.use_server(pool)
        return pool

    def stop_server_accepting(self) -> list[int]:
        """Freeze the server's workers (SIGSTOP, by their pids): the kernel still completes
        handshakes into the accept queue, but nothing is accepted until :meth:`resume`."""
        assert self._server is not None
        pids = self._server.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            self._stopped_pids.add(pid)
        return pids

    def resume_server(self) -> None:
        for pid in sorted(self._stopped_pids):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._stopped_pids.clear()

    def server_fd_tables(self) -> list[observe.FdTable]:
        """Each server worker's descriptor table (open, sockets, limit)."""
        assert self._server is not None
        return [t for pid in self._server.pids() if (t := observe.fd_table(pid)) is not None]

    def server_peers(self, ports: Sequence[int]) -> observe.PeerView:
        """What the server's kernel holds, by ``ss`` inside its namespace."""
        host = self._server_host
        assert host is not None
        return observe.server_peers(lambda argv: self.topo.run(host, argv).stdout, ports)

    def server_queue(self, port: int) -> observe.ListenQueue | None:
        """The server listener's accept queue (``ss -ltn`` inside its namespace)."""
        host = self._server_host
        assert host is not None
        return observe.listen_queue(lambda argv: self.topo.run(host, argv).stdout, port)

    def server_side(self, step: Step, port: int) -> dict[str, int | None]:
        """Where the client's connections are at the server, from ``ss`` inside its
        namespace: accepted (the server's own count), waiting in the accept queue, still
        SYN-RECV (the client's last ACK met a full queue; the server will retransmit its
        SYN-ACK), and half-open (established at the client, unknown to the server: a SYN
        cookie whose last ACK met a full accept queue is dropped without a trace)."""
        queue = self.server_queue(port)
        view = self.server_peers([port])
        host = self._server_host
        assert host is not None
        syn_recv = observe.count_state(
            lambda argv: self.topo.run(host, argv).stdout, "syn-recv", port
        )
        client = self.held_everywhere()
        out: dict[str, int | None] = {
            "client_held": client,
            "server_accepted": step.server_held,
            "server_established": view.connections,
            "accept_queue": queue.queued if queue else None,
            "backlog": queue.backlog if queue else None,
            "syn_recv": syn_recv,
            "half_open": client - view.connections - syn_recv,
        }
        step.observed["server_side"] = out
        return out

    def held_everywhere(self) -> int:
        """Connections every live client pool holds (what the server should end up with)."""
        return self.m.held()

    def wait_server(
        self, *, until: int | None = None, settle_s: float | None = None, max_s: float = 5.0
    ) -> ServerFigures:
        """The server's stats once its count has settled (:meth:`Measurement.settle_server`)."""
        assert self._server is not None
        kw = {} if settle_s is None else {"settle_s": settle_s}
        stats = self.m.settle_server(until=until, max_s=max_s, **kw)
        figures: ServerFigures = stats.figures()
        return figures

    # ---- counters of namespaces -------------------------------------------------------------

    def watch(self, role: str, host: Host, *, conntrack: bool = False) -> None:
        """Sample ``host``'s counters into the timeline: role ``server`` gives
        listen_overflows/listen_drops, ``client`` gives syn_retrans (as client_*), ``gateway``
        gives the conntrack counters."""
        from conncap import probes

        self._counters[role] = observe.NsCounters(
            host.name, probes.netns_reader(host.name), conntrack=conntrack
        )

    def read(self, sample: Mapping[str, object], *, force: bool = False) -> dict[str, int | None]:
        """The watched namespaces' counters (the measurement's probe)."""
        return self._read_counters(force)

    def _read_counters(self, force: bool = False) -> dict[str, int | None]:
        t = time.monotonic()
        if not force and t - self._last_counter_t < COUNTERS_S:
            return self._last_counters
        out: dict[str, int | None] = {}
        for role, c in self._counters.items():
            values = c.read()
            if role == "server":
                for k in (
                    "listen_overflows",
                    "listen_drops",
                    "tcp_abort_on_memory",
                    "syncookies_sent",
                    "syncookies_recv",
                ):
                    out[k] = values.get(k)
                out["server_curr_estab"] = values.get("curr_estab")
            elif role == "client":
                out["syn_retrans"] = values.get("syn_retrans")
                out["client_curr_estab"] = values.get("curr_estab")
            elif role == "gateway":
                for k in (
                    "conntrack_count",
                    "conntrack_max",
                    "conntrack_drops",
                    "conntrack_insert_failed",
                ):
                    out[k] = values.get(k)
        self._last_counters, self._last_counter_t = out, t
        return out

    # ---- the timeline ------------------------------------------------------------------------

    def sample(self, step: str, force_counters: bool = False) -> Sample:
        """One timeline sample over every live pool, the server and the watched counters."""
        return self.m.sample(step, force=force_counters)

    # ---- one step ---------------------------------------------------------------------------

    def ramp(
        self,
        name: str,
        title: str,
        launches: Sequence[Launch],
        *,
        prediction: Prediction | None = None,
        max_s: float = 60.0,
        settle: str = "stable",
        explain: Callable[[Step], None] | None = None,
        show_model: bool = True,
    ) -> Step:
        """Start one client pool per launch, sample until every pool's ramp is over (count
        reached or a ceiling) or ``max_s``, then measure both sides. The pools keep holding
        until :meth:`release`. ``settle``: ``stable`` waits until the server's count stops
        moving, ``all`` until it holds what every live client pool holds (at most 10 s),
        ``none`` reads it at once (a frozen server). ``explain(step)`` may refine the
        step's attribution with what only the scenario knows, before it is printed."""
        index = len(self.steps) + 1
        self.out(f"step {index} {name}: {title}")
        t_start = self.now()
        ms = self.m.begin(
            name, [PoolLaunch(la.plan, netns=la.host.name, nofile=la.nofile) for la in launches]
        )
        self.m.ramp(ms, hz=1.0 / SAMPLE_S, max_s=max_s)
        verdict = self.m.conclude(ms, settle=settle, short_is_ceiling=True)
        step = self._step(name, title, t_start, ms, verdict, launches, prediction)
        self.steps.append(step)
        if explain is not None:
            explain(step)
        self._print_step(step, show_model)
        return step

    def churn(
        self,
        name: str,
        title: str,
        launch: Launch,
        *,
        closer: str = "client",
        max_s: float = 30.0,
    ) -> tuple[Step, ChurnRun]:
        """One churn step: ``launch.plan`` has a ``lifetime`` (and ``rate``, ``close``,
        ``duration_s``). The churn model predicts it from the client namespace's own limits
        (its port range and TIME_WAIT knobs; ``closer``: who closes first), the pool opens and
        closes through the same measurement until its share is opened or a ceiling, then
        until its connections reach their close; the step's ``observed["churn"]`` is the
        ``churn`` object of ``open --lifetime`` (``engine.results.churn_json``). The pool is
        released (nothing is held past the step)."""
        from conncap.engine.results import churn_json, predict_churn, step_timeline

        plan = launch.plan
        if plan.lifetime is None:
            raise ValueError("a churn step needs a plan with a lifetime")
        self.out(f"step {len(self.steps) + 1} {name}: {title}")
        pred = predict_churn(plan, self.limits(launch.host, launch.nofile), closer=closer)
        self.out(f"  model: {pred.get('line') or pred.get('detail')}")
        t_start = self.now()
        ms = self.m.begin(name, [PoolLaunch(plan, netns=launch.host.name, nofile=launch.nofile)])
        outcome = self.m.churn(ms, lifetime=float(plan.lifetime), hz=1.0 / SAMPLE_S, max_s=max_s)
        verdict = self.m.conclude(ms, settle="none")
        stats = ms.client_stats()
        churn = churn_json(plan, stats[0], step_timeline(self.timeline, ms.i_start), pred)
        exhausts = pred.get("exhausts") is True
        ports = pred.get("ports")
        prediction = Prediction(
            count=ports if exhausts and isinstance(ports, int) else None,
            cause=str(pred.get("cause")) if exhausts else None,
            side="client",
            line=str(pred.get("line") or ""),
            reason=None if exhausts else "the churn model predicts no exhaustion",
        )
        step = self._step(name, title, t_start, ms, verdict, [launch], prediction)
        step.stop_reason = outcome
        if closer == "server" and step.cause == "server-closed":
            # the server closing first is the plan here, not a limit it ran into
            step.ceiling = Ceiling.none()
            step.stop_reason = "count" if outcome == "ceiling" else outcome
        step.observed["churn"] = json_object(churn, "churn")
        self.steps.append(step)
        self.m.release(ms)
        secs = step.t_end - step.t_start
        line = (
            f"  opened {n(churn['opened'])} of {n(step.requested)} in {secs:.1f} s; "
            f"TIME_WAIT peak {n(churn['time_wait_peak'])} (client); "
            f"stopped by {step.stop_reason}"
        )
        if churn["first_failure_s"] is not None:
            line += f"; first {churn['first_failure_errno']} after {churn['first_failure_s']:.2f} s"
        self.out(line)
        if step.ceiling.reached:
            self.out(f"  ceiling: {step.cause} ({step.errno}): {step.ceiling.evidence}")
        return step, churn

    def time_wait_in(self, host: Host) -> int | None:
        """Sockets in TIME_WAIT in ``host``'s namespace now (``tw`` of /proc/net/sockstat)."""
        from conncap import probes, procfs

        try:
            text = probes.netns_reader(host.name)("/proc/net/sockstat")
            return procfs.parse_sockstat(text).tcp_tw
        except (OSError, ValueError):
            return None

    def _step(
        self,
        name: str,
        title: str,
        t_start: float,
        ms: MeasuredStep,
        verdict: Verdict,
        launches: Sequence[Launch],
        prediction: Prediction | None,
    ) -> Step:
        """The concluded step ``ms`` as the scenario's :class:`Step`."""
        from conncap import analysis

        facts = ms.facts
        assert facts is not None
        attr = analysis.attribute(evidence(facts))
        server = (
            ms.server.figures(errors_during_step=dict(facts.server_errors))
            if ms.server is not None
            else None
        )
        stats = ms.client_stats()
        step = Step(
            name=name,
            title=title,
            t_start=t_start,
            t_end=self.now(),
            requested=ms.requested,
            held=facts.client_held,
            established_peak=sum(st.established_peak for st in stats),
            attempts=sum(st.attempts for st in stats),
            failures=dict(facts.client_failures),
            failures_by_cause=dict(facts.client_failures_by_cause),
            ceiling=verdict.ceiling(),
            prediction=prediction or Prediction(),
            attribution=Attribution(str(attr.cause), attr.side, attr.evidence),
            server=server,
            counters={**facts.counters, **facts.levels},
            plan={
                "clients": [
                    json_object({"netns": la.host.name, "nofile": la.nofile, **la.plan.to_json()})
                    for la in launches
                ]
            },
            stop_reason=_stop_reason(ms.outcome, verdict.reached),
            measured=ms,
        )
        return step

    def _print_step(self, step: Step, show_model: bool = True) -> None:
        secs = step.t_end - step.t_start
        line = f"  client held {n(step.held)} of {n(step.requested)} asked ({secs:.1f} s)"
        if step.failures:
            line += "; failures " + ", ".join(
                f"{k} ×{n(v)}" for k, v in sorted(step.failures.items())
            )
        self.out(line)
        if step.server is not None:
            per_ip = step.server.per_source_ip
            srv = (
                f"  server held {n(step.server.held)}, from {len(per_ip)} source "
                f"IP{'s' if len(per_ip) != 1 else ''}"
            )
            errs = step.server.errors_during_step or {}
            if errs:
                srv += "; accept() failed " + ", ".join(f"{k} ×{n(v)}" for k, v in errs.items())
            self.out(srv)
        if step.ceiling.reached:
            a = step.attribution
            self.out(f"  stopped by {a.cause} ({a.side}): {a.evidence}")
        p = step.prediction
        if show_model and p.count is not None:
            self.out(f"  model: {n(p.count)} ({p.cause}, {p.side})")

    def release(self, step: Step) -> None:
        """Close a step's connections (RST, so no TIME_WAIT is left for the next step) and
        reap its workers; their failures stay in the timeline's running totals."""
        if step.measured is not None:
            self.m.release(step.measured)
        if self._server is not None and not self._stopped_pids:
            self.wait_server(settle_s=0.2, max_s=3.0)

    def close(self) -> None:
        """Stop every pool and the server (a frozen server is thawed first). Idempotent."""
        self.resume_server()
        self.m.close()


def _stop_reason(outcome: str | None, reached: bool) -> str:
    """A step's stop reason as the document says it: a ramp that ended is a ceiling or the
    count; any other outcome (max-duration, interrupted) stays as it is."""
    if outcome in (None, "ramp-over"):
        return "ceiling" if reached else "count"
    return outcome
