"""The ``conncap run`` experiment: start a holding server and client workers, ramp step by
step, sample a timeline, stop at a ceiling, the count, the memory guard or the deadline, and
build the ``conncap.result/1`` document.

Bounded in every direction: at most ``count`` connections (the quotas add up to it), at most
``max_duration`` seconds, never below the memory guard. Whatever it started (worker processes,
their sockets) is stopped in ``finally``, so success, an error and Ctrl-C (the caller sets
:attr:`Experiment.stop_event`) all leave nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from conncap import analysis
from conncap.catalogue import Cause
from conncap.engine import ClientPool, OpenPlan, ServerPool, Target, per_worker_capacity
from conncap.engine.protocol import server_worker_fds
from conncap.errors import RunFailed, UsageError
from conncap.limits import HostLimits
from conncap.measure import ClientTotals, Launch, Measurement, OnEvent
from conncap.result import (
    Ceiling,
    JsonObject,
    Result,
    Sample,
    ServerFigures,
)
from conncap.run import ports as portmod
from conncap.run import steps as st
from conncap.run import verdict
from conncap.run.churn import run_churn_step
from conncap.run.config import (
    IsolatedSides,
    Observer,
    Progress,
    RunConfig,
    SamplerLike,
    Silent,
)
from conncap.run.document import StepRun, run_result
from conncap.run.sampling import (
    SamplerProbe,
    default_mem_available,
    default_sampler,
    isolated_sampler,
)

#: Tries at starting the server when a port picked outside the range is taken meanwhile.
SERVER_START_TRIES = 3
#: ``--isolated``: the server's first port. Fixed: the server is another host, so its
#: listening ports cost the client none of its range, wherever they are.
ISOLATED_FIRST_PORT = 8000


class Experiment:
    """One ``conncap run``: :meth:`run` returns the conncap.result/1 document."""

    def __init__(
        self,
        config: RunConfig,
        *,
        limits: HostLimits | None = None,
        observer: Observer | None = None,
        stop_event: threading.Event | None = None,
        make_server: Callable[..., Any] = ServerPool,
        make_client: Callable[..., Any] = ClientPool,
        make_sampler: Callable[[], SamplerLike] = default_sampler,
        mem_available: Callable[[], int | None] = default_mem_available,
        read_sockets: Callable[[], list[portmod.SocketRow]] = portmod.read_sockets,
        pick_ports: Callable[..., list[int]] = portmod.pick_ports_outside,
        clock: Callable[[], float] = time.monotonic,
        isolated: IsolatedSides | None = None,
        argv: Sequence[str] = (),
        on_event: OnEvent | None = None,
        watch: Callable[[Sample, ClientTotals], None] | None = None,
        linger: Callable[[Measurement], None] | None = None,
    ) -> None:
        """``isolated``: the two namespaces of ``--isolated`` (``config`` then has their
        ``host``, ``server_netns`` and ``client_netns``); limits, source addresses, the
        client's sockets and the server's counters are read from them. ``linger``: called
        once the steps are over (not after a stop or an error), before anything is closed:
        a cluster node keeps holding there until the driver stops every node."""
        config.check()
        self.config = config
        self.argv = tuple(argv)
        self._watch = watch
        self._linger = linger
        self.limits = limits
        self.isolated = isolated
        self.observer: Observer = observer or Silent()
        self.stop_event = stop_event or threading.Event()
        self._make_server = make_server
        self._make_client = make_client
        self._make_sampler = make_sampler
        self._mem_available = mem_available
        self._read_sockets = read_sockets
        if isolated is not None:
            if read_sockets is portmod.read_sockets:
                client_reader = isolated.client_reader()
                self._read_sockets = lambda: portmod.read_sockets(reader=client_reader)
            if make_sampler is default_sampler:
                self._make_sampler = lambda: isolated_sampler(isolated)
        self._client_limits: HostLimits | None = None
        self._server_limits: HostLimits | None = None
        self._pick_ports = pick_ports
        self._clock = clock
        self.m = Measurement(
            stop=self.stop_event,
            deadline_s=config.max_duration,
            clock=clock,
            make_client=lambda la: self._make_client(la.plan, netns=la.netns, nofile=la.nofile),
            on_sample=self._on_sample,
            on_event=on_event,
        )
        self.timeline: list[Sample] = self.m.timeline
        self._current: StepRun | None = None
        self._n_steps = 1
        self.steps: list[StepRun] = []
        self.notes: list[str] = []
        self.server: Any = None
        self.sampler: SamplerLike | None = None
        self.stop_reason = "error"
        self.error: str | None = None
        self._t0 = 0.0
        self._held_at_end = 0
        self._guard_bytes: int | None = None
        self._mem_start: int | None = None
        self._port_range: tuple[int, int] | None = None
        self._reserved: frozenset[int] = frozenset()
        self._ports_in_use = 0
        self._server_workers = 1
        self._client_cap = 1
        self._n_source_ips = 1
        self._n_ports = 1
        self._final_server: ServerFigures | None = None
        self._target_ports: list[int] = []
        self.churn: JsonObject | None = None

    # ---- the run ------------------------------------------------------------------------------

    def run(self) -> Result:
        """Carry out the experiment; always returns a document (``stop_reason`` "error" and
        ``error`` set when it failed; the caller raises). Stops every worker before returning."""
        started = _dt.datetime.now(_dt.UTC)
        self._t0 = self.m.t0
        try:
            self._prepare()
            self._start_server()
            self._run_steps()
            if self.config.churn and self.stop_reason in ("ceiling", "count"):
                run_churn_step(self)
            if self._linger is not None and self.stop_reason in ("ceiling", "count"):
                self._linger(self.m)
        except RunFailed as exc:
            self.stop_reason = "error"
            self.error = str(exc)
        finally:
            self._stop_all()
        duration = self._clock() - self._t0
        return run_result(
            self.config,
            argv=self.argv,
            started=started,
            duration=duration,
            totals=self.m.client_totals(),
            timeline=self.timeline,
            steps=self.steps,
            server_ports=self._server_ports(),
            server_workers=self._server_workers,
            held_at_end=self._held_at_end,
            stop_reason=self.stop_reason,
            error=self.error,
            server=self._final_server,
            sampler=self.sampler,
            guard_bytes=self._guard_bytes,
            mem_start=self._mem_start,
            limits=self.limits,
            server_limits=self._server_limits,
            isolated=self.isolated,
            notes=self.notes,
            target=self.m.target,
            churn=self.churn,
        )

    def _prepare(self) -> None:
        cfg = self.config
        if self.limits is None:
            from conncap.limits import read_limits

            self.limits = read_limits()
        if self.isolated is not None:
            # Each side as its namespace and its workers see it; the document's `limits`
            # are the client's.
            base = self.limits
            self.limits = self._client_limits = self.isolated.client_limits(base)
            self._server_limits = self.isolated.server_limits(base)
            for line in self.isolated.describe():
                self.observer.event(f"isolated: {line}")
        else:
            self._client_limits = st.with_nofile(self.limits, cfg.client_nofile)
            self._server_limits = st.with_nofile(self.limits, cfg.server_nofile)
        lim = self.limits
        rng = lim.port_range.value
        if rng is None:
            from conncap.engine.portrange import read_port_range

            rng = read_port_range()
            self.notes.append(
                f"the ephemeral port range could not be read ({lim.port_range.reason}): "
                f"assumed {rng[0]}-{rng[1]}"
            )
        self._port_range = rng
        self._reserved = frozenset(  # only those inside the range matter
            p
            for a, b in (lim.reserved_ports.value or ())
            for p in range(max(a, rng[0]), min(b, rng[1]) + 1)
        )
        self._mem_start = self._mem_available()
        if self._mem_start is not None:
            self._guard_bytes = int(self._mem_start * cfg.memory_guard)
        else:
            self.notes.append("MemAvailable could not be read: the memory guard is off")
        if cfg.server_netns is None or self.isolated is not None:
            listeners = portmod.listeners_in_range(self._read_sockets(), rng, self._reserved)
            self._ports_in_use = len(listeners)
            if listeners:
                self.notes.append(
                    f"{len(listeners)} port(s) of the range {rng[0]}-{rng[1]} are held by "
                    "listening sockets: no connect() can use them"
                )
        self._client_cap = per_worker_capacity(cfg.client_nofile)
        server_cap = per_worker_capacity(cfg.server_nofile)
        self._server_workers = cfg.server_workers or st.workers_for(
            cfg.count, server_cap, st.SERVER_MARGIN
        )
        fanout = st.auto_fanout(cfg.count, self._port_pool())
        fanout_ips = 1 if ":" in cfg.host else fanout  # IPv6 loopback is one address
        self._n_source_ips = cfg.source_ips or fanout_ips
        if cfg.sources is not None:
            self._n_source_ips = min(len(cfg.sources), cfg.source_ips or len(cfg.sources))
        self._n_ports = 1 if cfg.target_port is not None else cfg.ports or fanout
        if cfg.escalate and self.isolated is None and cfg.sources is None:
            st.source_addresses(cfg.host, self._n_source_ips)

    def _pick_server_ports(self) -> list[int]:
        cfg = self.config
        n = self._n_ports if cfg.escalate else 1
        if self.isolated is not None:
            return [ISOLATED_FIRST_PORT + i for i in range(n)]
        if cfg.server_netns is not None or self._port_range is None:
            return [0] * n
        picked = self._pick_ports(cfg.host, n, self._port_range)
        if len(picked) < n:
            self.notes.append(
                f"only {len(picked)} free port(s) outside the range: the kernel picks the rest "
                "inside it, each one fewer port for the client"
            )
        return [*picked, *([0] * (n - len(picked)))]

    def _start_server(self) -> None:
        cfg = self.config
        if cfg.target_port is not None:
            self._use_target(cfg.host, cfg.target_port)
            return
        last: RunFailed | None = None
        for _ in range(SERVER_START_TRIES):
            ports = self._pick_server_ports()
            server = self._make_server(
                bind=cfg.host,
                ports=ports,
                workers=self._server_workers,
                nofile=cfg.server_nofile,
                netns=cfg.server_netns,
            )
            try:
                server.start()
            except RunFailed as exc:
                last = exc  # a picked port was taken meanwhile: pick again
                try:
                    server.stop(timeout=1.0)  # whatever did start of it
                except Exception as stop_exc:
                    self.notes.append(f"stopping a server that failed to start: {stop_exc}")
                continue
            self.server = server
            self.m.use_server(server)
            real = [int(p) for p in server.ports]
            why = ""
            if self.isolated is not None:
                why = (
                    " (fixed: the server is another host here, so its listening ports cost "
                    "the client none of its range)"
                )
                self.notes.append(
                    f"the server listens on fixed port(s) {verdict.ports_text(real)} in its own "
                    "namespace: a listener costs a port only to clients on its own host, so "
                    "the client's whole range is free"
                )
            elif self._port_range is not None:
                lo, hi = self._port_range
                inside = [p for p in real if lo <= p <= hi]
                self._ports_in_use += len(inside)
            self.observer.event(
                f"server: {self._server_workers} worker(s) on {cfg.host} port(s) "
                f"{verdict.ports_text(real)}{why}"
            )
            return
        raise RunFailed(f"the server could not start: {last}")

    def _use_target(self, host: str, port: int) -> None:
        """``--target``: a server conncap does not own. Nothing is started; on this host its
        side (listener, process, descriptors, queue, firewall rules) is read at each step's
        end, elsewhere only what the client sees decides."""
        from conncap.probes.target import local_target

        self._target_ports = [port]
        _probe, read = local_target([(host, port)])
        self.m.read_target = read
        where = (
            "on this host: its listener, process and counters are read"
            if read is not None
            else "elsewhere: only what the client sees decides"
        )
        self.observer.event(f"target: {host}:{port}, a server conncap does not own ({where})")
        if self._port_range is not None and self._port_range[0] <= port <= self._port_range[1]:
            self._ports_in_use += 1 if read is not None else 0

    def _server_ports(self) -> list[int]:
        """The ports the client connects to: the server's, or the target's."""
        if self.server is not None:
            return [int(p) for p in self.server.ports]
        return list(self._target_ports)

    def _specs(self) -> list[st.StepSpec]:
        sources: tuple[str, ...] | None = None
        if self.isolated is not None and self.config.escalate:
            # The client namespace's own address, then /32s the server routes back to it;
            # counting up from the server's address would pick the server's neighbours.
            try:
                sources = self.isolated.add_source_ips(self._n_source_ips)
            except UsageError as exc:
                raise RunFailed(str(exc)) from exc
        elif self.config.sources is not None:
            sources = self.config.sources[: self._n_source_ips]
        return st.plan_steps(
            self.config.host,
            self._server_ports(),
            escalate=self.config.escalate,
            source_ips=self._n_source_ips,
            sources=sources,
        )

    def _run_steps(self) -> None:
        cfg = self.config
        assert self.limits is not None
        self.sampler = self._make_sampler()
        self.sampler.set_pids(server=self.server.pids() if self.server is not None else ())
        self.m.probe = SamplerProbe(self.sampler)
        specs = self._specs()
        self._n_steps = len(specs)
        self.m.sample("start", phase="hold")
        for index, spec in enumerate(specs):
            total = self.m.held()
            remaining = cfg.count - total
            if remaining <= 0:
                break
            step = StepRun(spec=spec, index=index, held_before=total)
            self.steps.append(step)
            self._begin_step(step, remaining, len(specs))
            assert step.measured is not None
            outcome = self.m.ramp(step.measured, hz=cfg.ramp_hz, should_stop=self._should_stop)
            self._end_step(step, outcome)
            if outcome != "ramp-over":
                self.stop_reason = outcome
                return
            reached = bool(step.ceiling.reached)
            self.stop_reason = "ceiling" if reached else "count"
            hold = self.m.hold(
                spec.name, cfg.plateau_s, hz=cfg.hold_hz, should_stop=self._should_stop
            )
            step.t_end = self.m.now()  # the step lasts until its plateau ends
            step.i_end = len(self.timeline) - 1
            if hold is not None:
                self.stop_reason = hold
                return
            if not reached:
                return  # the count is reached: nothing left for a next step
            if index + 1 < len(specs) and not verdict.liftable(step.ceiling):
                self.notes.append(
                    f"step {index + 2} ({specs[index + 1].name}) skipped: the ceiling was "
                    f"{step.ceiling.cause} on the {step.ceiling.side} side, "
                    "which more source IPs and server ports do not lift"
                )
                return

    def _begin_step(self, step: StepRun, remaining: int, n_steps: int) -> None:
        cfg = self.config
        assert self.limits is not None
        spec = step.spec
        if cfg.client_workers is not None:
            workers = cfg.client_workers
        elif step.index == 0:
            pool = st.step1_expected(remaining, self._port_pool())
            workers = st.workers_for(pool, self._client_cap, st.CLIENT_MARGIN)
        else:
            workers = st.workers_for(remaining, self._client_cap, st.CLIENT_MARGIN)
        workers = max(1, min(workers, remaining))
        plan = OpenPlan(
            targets=tuple(Target(spec.host, p, p) for p in spec.ports),
            count=remaining,
            source_ips=spec.source_ips,
            workers=workers,
            rate=cfg.rate,
            timeout_s=cfg.timeout_s,
            bind_mode="kernel",
        )
        step.plan = plan
        processes = sum(s.plan.workers for s in self.steps if s.plan is not None)
        mplan = st.model_plan(
            spec,
            client_processes=processes,
            server_processes=self._server_workers,
            ports_in_use=self._ports_in_use,
            bytes_per_conn=self._measured_bytes_per_conn(),
            same_machine=True if self.isolated is not None else None,
        )
        step.prediction = st.predict_step(
            self._client_limits or self.limits,
            mplan,
            server_limits=self._server_limits,
            server_fds_in_use=server_worker_fds(self._listeners_per_server_worker()),
            client_only=cfg.target_port is not None,
        )
        self.observer.event(
            f"step {step.index + 1}/{n_steps} ({spec.title}): {step.prediction.line}"
        )
        if step.index == 0 and step.prediction.single_process:
            sp = step.prediction.single_process
            if sp.get("binds_first") and workers > 1:
                self.observer.event(
                    f"  one client process would stop at {sp['count']:,} first ({sp['cause']}: "
                    f"{sp['detail']}); this step spreads over {workers} processes"
                )
        self._current = step
        try:
            step.measured = self.m.begin(
                spec.name, [Launch(plan, netns=cfg.client_netns, nofile=cfg.client_nofile)]
            )
        finally:
            self._set_client_pids()
        step.t_start = step.measured.t_start
        step.i_start = step.measured.i_start

    def _listeners_per_server_worker(self) -> int:
        """Listening sockets each server worker holds (every port, or its share of them
        when the pool splits many ports over its workers)."""
        from conncap.engine.server import SHARE_MAX

        n = len(self.server.ports) if self.server is not None else 1
        if self._server_workers > 1 and n > SHARE_MAX:
            return -(-n // self._server_workers)
        return n

    def _port_pool(self) -> int | None:
        if self._port_range is None:
            return None
        lo, hi = self._port_range
        return hi - lo + 1 - len(self._reserved) - self._ports_in_use

    def _set_client_pids(self) -> None:
        if self.sampler is None:
            return
        self.sampler.set_pids(
            client=self.m.client_pids(), server=self.server.pids() if self.server else ()
        )

    def _should_stop(self, sample: Sample) -> str | None:
        avail = sample.mem_available
        if self._guard_bytes is not None and isinstance(avail, int) and avail < self._guard_bytes:
            self.m.pause_clients()
            return "memory-guard"
        return None

    # ---- sampling -------------------------------------------------------------------------

    def _on_sample(self, sample: Sample) -> None:
        """Every sample of the measurement: the step's peak, the live view, and ``watch``
        (the event stream and the metrics)."""
        if self._watch is not None:
            self._watch(sample, self.m.last_totals)
        step = self._current
        if step is None:
            return
        held = sample.held
        step.peak = max(step.peak, held)
        self.observer.progress(
            Progress(
                step_index=step.index,
                step_count=self._n_steps,
                step_name=step.spec.name,
                step_title=step.spec.title,
                phase=str(sample.phase),
                held=held,
                count=self.config.count,
                rate=self.m.rate,
                failures_by_cause=dict(sample.failures_by_cause),
                kernel_bytes=sample.kernel_bytes,
                kernel_bytes_start=self.timeline[0].kernel_bytes,
                mem_available=sample.mem_available,
                guard_bytes=self._guard_bytes,
                server_held=sample.server_held or 0,
                elapsed=self.m.now(),
                max_duration=self.config.max_duration,
                latency_p50_ms=sample.latency_p50_ms,
                latency_p99_ms=sample.latency_p99_ms,
            )
        )

    def _measured_bytes_per_conn(self) -> float | None:
        """Kernel + user bytes per connection measured so far (None before a usable ramp)."""
        if len(self.timeline) < 3:
            return None
        mem = analysis.memory_report(self.timeline, guard_fraction=0.0)
        parts = [mem.kernel_bytes_per_conn, mem.user_bytes_per_conn]
        vals = [float(v) for v in parts if isinstance(v, int | float)]
        total = sum(vals)
        return total if vals and total > 0 else None

    # ---- the end of a step ------------------------------------------------------------------

    def _end_step(self, step: StepRun, outcome: str) -> None:
        assert step.plan is not None and step.prediction is not None
        assert step.measured is not None
        step.outcome = outcome
        cs = step.measured.client_stats()[0]
        step.opened = int(cs.established)
        if outcome == "ramp-over":
            v = self.m.conclude(step.measured, settle="stable", count="all")
            step.server_held = v.server_held
            step.ceiling = v.ceiling()
        else:
            step.ceiling = Ceiling.none()
        step.t_end = step.t_ramp_end = self.m.now()
        step.i_end = len(self.timeline) - 1
        held_total = self.m.held()
        step.peak = max(step.peak, held_total)
        reached = bool(step.ceiling.reached)
        m = verdict.measured(step.ceiling, client_held=held_total, server_held=step.server_held)
        reasons = list(m.reasons)
        short_ok = 0
        if (
            reached
            and step.ceiling.cause == Cause.EPHEMERAL_PORTS
            and step.prediction.cause == Cause.EPHEMERAL_PORTS
            and step.ceiling.count != step.prediction.count
        ):
            odd = verdict.odd_range_reason(
                self._port_range, self._reserved, step.spec, self._read_sockets()
            )
            if odd is not None and step.ceiling.count == (step.prediction.count or 0) - 1:
                reasons.append(odd)
                short_ok = 1  # the kernel does not promise the last port of an odd range
            else:
                reasons.append(self._port_reason(step))
        step.comparison = st.compare(
            step.prediction,
            reached=reached,
            measured=m.value,
            cause=step.ceiling.cause,
            requested=self.config.count,
            stop_reason="count" if outcome == "ramp-over" else outcome,
            reasons=reasons,
            short_ok=short_ok,
            measured_what=m.what,
        )
        self.observer.event(f"step {step.index + 1} ({step.spec.name}): {step.comparison.text}")

    def _port_reason(self, step: StepRun) -> str:
        client_elsewhere = self.config.client_netns is not None and self.isolated is None
        if self._port_range is None or client_elsewhere:
            return "the ports could not be accounted for from here"
        if step.spec.source_ips or len(step.spec.ports) > 1:
            return "ports are accounted one destination at a time: not done for this step"
        gap = portmod.port_gap(
            self._read_sockets(), self._port_range, self._reserved, step.spec.destinations
        )
        return gap.explain()

    # ---- the end ---------------------------------------------------------------------------

    def _stop_all(self) -> None:
        """The last sample (what was held when the run ended), then clients first (they reset
        their connections), then the server."""
        errors: list[BaseException] = []
        if self.steps and self.sampler is not None:
            try:
                self.m.sample(self.steps[-1].spec.name, phase="end")
            except Exception as exc:  # never skip the clean-up below
                errors.append(exc)
        if self.timeline:
            self._held_at_end = self.timeline[-1].held
        final, problems = self.m.close()
        errors.extend(problems)
        if final is not None:
            self._final_server = final.figures()
        if errors and self.error is None:
            self.error = f"clean-up: {errors[0]}"
