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

from conncap.scenarios import observe
from conncap.scenarios.document import step_ceiling
from conncap.scenarios.expect import Expectation, n
from conncap.scenarios.step import Launch, Step

if TYPE_CHECKING:
    from conncap.engine import ClientPool, ClientStats, ServerPool
    from conncap.limits import HostLimits
    from conncap.netns import Host, Topology

#: Seconds between two timeline samples (the result schema asks for at least 1 per second).
SAMPLE_S = 0.25
#: Seconds between two reads of a namespace's counters (each read runs `ip netns exec cat`).
COUNTERS_S = 0.5
#: The server's count is final once it has not moved for this long.
SETTLE_S = 0.4
#: Scales a scenario can run at.
SCALES = ("small", "full")

Out = Callable[[str], None]


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + int(v)


class ScenarioRun:
    """The state of one scenario run inside an open :class:`~conncap.netns.Topology`."""

    def __init__(self, topo: Topology, *, scale: str = "full", out: Out | None = None) -> None:
        if scale not in SCALES:
            from conncap.errors import UsageError

            raise UsageError(f"--scale must be one of {', '.join(SCALES)}, not {scale!r}")
        self.topo = topo
        self.scale = scale
        self.small = scale == "small"
        self.out: Out = out if out is not None else (lambda _line: None)
        self.t0 = time.monotonic()
        self.started_at = dt.datetime.now(dt.UTC)
        self.timeline: list[dict[str, Any]] = []
        self.steps: list[Step] = []
        self.expectations: list[Expectation] = []
        self.notes: list[str] = []
        self.settings: dict[str, Any] = {}
        self.layout: dict[str, Any] = {}
        self.headline: str | None = None
        self.interrupted = False
        self.error: str | None = None
        self._server: ServerPool | None = None
        self._server_host: Host | None = None
        self._stopped_pids: set[int] = set()
        self._live: list[ClientPool] = []
        self._done_fail: dict[str, int] = {}
        self._done_fail_cause: dict[str, int] = {}
        self._counters: dict[str, observe.NsCounters] = {}
        self._last_counters: dict[str, int | None] = {}
        self._last_counter_t = 0.0
        self._base_limits: HostLimits | None = None

    # ---- clock, output ----------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the scenario started (the timeline's ``t``)."""
        return time.monotonic() - self.t0

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
    ) -> dict[str, Any]:
        """The model's prediction for a plan between two namespaces (``plan``: model.Plan
        fields; loopback is False, the workers raise their soft limit and keep the
        descriptors besides their connections that conncap's workers keep)."""
        from conncap import model
        from conncap.run.steps import WORKER_FDS, server_fds
        from conncap.scenarios.isolated import predict_sides

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
    ) -> ServerPool:
        """Start the scenario's holding server in ``host`` on ``ports`` kernel-chosen ports."""
        from conncap.engine import ServerPool

        if self._server is not None:
            raise RuntimeError("a scenario has one server")
        pool = ServerPool(
            bind=ip,
            ports=[0] * ports,
            workers=workers,
            backlog=backlog,
            nofile=nofile,
            netns=host.name,
        )
        self._server = pool
        self._server_host = host
        pool.start()
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
        return sum(p.stats().held for p in self._live)

    def wait_server(
        self, *, until: int | None = None, settle_s: float = SETTLE_S, max_s: float = 5.0
    ) -> dict[str, Any]:
        """Wait until the server's held count has not moved for ``settle_s`` (accepts trail
        the client's handshakes) and, with ``until``, has reached it (a handshake whose last
        ACK met a full queue completes only when the server retransmits its SYN-ACK, after
        1, 3, 7 s...), at most ``max_s``; then return its stats."""
        assert self._server is not None
        end = time.monotonic() + max_s
        last = self._server.stats().held
        still = time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            held = self._server.stats().held
            if held != last:
                last, still = held, time.monotonic()
            elif time.monotonic() - still >= settle_s and (until is None or held >= until):
                break
        return self._server.stats().to_json()

    # ---- counters of namespaces -------------------------------------------------------------

    def watch(self, role: str, host: Host, *, conntrack: bool = False) -> None:
        """Sample ``host``'s counters into the timeline: role ``server`` gives
        listen_overflows/listen_drops, ``client`` gives syn_retrans (as client_*), ``gateway``
        gives the conntrack counters."""
        from conncap import probes

        self._counters[role] = observe.NsCounters(
            host.name, probes.netns_reader(host.name), conntrack=conntrack
        )

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

    def sample(self, step: str, force_counters: bool = False) -> dict[str, Any]:
        """One timeline sample over every live pool, the server and the watched counters."""
        held = established = 0
        rate = 0.0
        fails = dict(self._done_fail)
        by_cause = dict(self._done_fail_cause)
        for pool in self._live:
            st = pool.stats()
            held += st.held
            established += st.established
            rate += st.rate
            _add(fails, st.failures)
            _add(by_cause, st.failures_by_cause)
        s: dict[str, Any] = {
            "t": round(self.now(), 3),
            "step": step,
            "held": held,
            "established": established,
            "failures": sum(fails.values()),
            "rate": round(rate, 1),
            "failures_by_cause": by_cause,
        }
        if self._server is not None:
            ss = self._server.stats()
            s["server_held"] = ss.held
            s["server_accepted"] = ss.accepted
            s["server_errors"] = dict(ss.errors_by_cause)
        s.update(self._read_counters(force_counters))
        self.timeline.append(s)
        return s

    # ---- one step ---------------------------------------------------------------------------

    def ramp(
        self,
        name: str,
        title: str,
        launches: Sequence[Launch],
        *,
        prediction: dict[str, Any] | None = None,
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
        from conncap.engine import ClientPool

        index = len(self.steps) + 1
        self.out(f"step {index} {name}: {title}")
        t_start = self.now()
        before = self.sample(name, force_counters=True)
        server_before = self._server.stats() if self._server is not None else None
        pools: list[ClientPool] = []
        deadline = time.monotonic() + max_s
        stop_reason = "ceiling"
        for launch in launches:
            pool = ClientPool(launch.plan, netns=launch.host.name, nofile=launch.nofile)
            pools.append(pool)
            self._live.append(pool)
            pool.start()
        next_sample = time.monotonic() + SAMPLE_S
        while True:
            if all(p.ramp_over() for p in pools):
                break
            if time.monotonic() >= deadline:
                stop_reason = "max-duration"
                break
            if pools and not any(p.pids() for p in pools):
                from conncap.errors import RunFailed

                raise RunFailed(f"step {name}: every client worker exited before the end")
            time.sleep(0.05)
            if time.monotonic() >= next_sample:
                self.sample(name)
                next_sample = time.monotonic() + SAMPLE_S
        server_json: dict[str, Any] = {}
        if self._server is not None:
            if settle == "all":
                server_json = self.wait_server(until=self.held_everywhere(), max_s=10.0)
            elif settle == "stable":
                server_json = self.wait_server()
            else:
                server_json = self._server.stats().to_json()
        after = self.sample(name, force_counters=True)
        stats = [p.stats() for p in pools]
        step = self._measure(
            name, title, launches, pools, stats, before, after, server_before, server_json,
            prediction or {}, t_start, stop_reason,
        )  # fmt: skip
        self.steps.append(step)
        if explain is not None:
            explain(step)
        self._print_step(step, show_model)
        return step

    def _measure(
        self,
        name: str,
        title: str,
        launches: Sequence[Launch],
        pools: list[ClientPool],
        stats: list[ClientStats],
        before: dict[str, Any],
        after: dict[str, Any],
        server_before: Any,
        server_json: dict[str, Any],
        prediction: dict[str, Any],
        t_start: float,
        stop_reason: str,
    ) -> Step:
        from conncap import analysis

        failures: dict[str, int] = {}
        by_cause: dict[str, int] = {}
        for st in stats:
            _add(failures, st.failures)
            _add(by_cause, st.failures_by_cause)
        counters: dict[str, int | None] = {}
        for key in (
            "listen_overflows",
            "listen_drops",
            "syn_retrans",
            "tcp_abort_on_memory",
            "conntrack_drops",
            "conntrack_insert_failed",
            "syncookies_sent",
            "syncookies_recv",
        ):
            if key in after:
                counters[key] = observe.delta(before, after, key)
        for key in ("conntrack_count", "conntrack_max"):
            if key in after:
                counters[key] = after.get(key)
        server_errors: dict[str, int] = {}
        if server_before is not None and server_json:
            prior = server_before.errors_by_cause
            now = server_json.get("errors") or {}
            server_errors = {
                k: int(v) - int(prior.get(k, 0)) for k, v in now.items() if int(v) > prior.get(k, 0)
            }
            server_json = {**server_json, "errors_during_step": server_errors}
        held = sum(st.held for st in stats)
        ceilings = [st.ceiling for st in stats if st.ceiling is not None]
        # A ceiling without a failed attempt (explicit bind mode: every port of the slice is
        # bound) is still the client's evidence: count each worker's ceiling once.
        seen_failures = dict(failures)
        if not seen_failures:
            for c in ceilings:
                seen_failures[c.errno] = seen_failures.get(c.errno, 0) + 1
        ev = analysis.CeilingEvidence(
            client_failures=seen_failures,
            client_failures_by_cause=by_cause,
            server_errors=server_errors,
            client_held=held,
            server_held=server_json.get("held") if server_json else None,
            listen_overflows=counters.get("listen_overflows"),
            listen_drops=counters.get("listen_drops"),
            syn_retrans=counters.get("syn_retrans"),
            abort_on_memory=counters.get("tcp_abort_on_memory"),
            conntrack_drops=counters.get("conntrack_drops"),
            conntrack_insert_failed=counters.get("conntrack_insert_failed"),
            conntrack_count=counters.get("conntrack_count"),
            conntrack_max=counters.get("conntrack_max"),
            stop_reason=stop_reason,
        )
        attr = analysis.attribute(ev)
        attribution = {"cause": str(attr.cause), "side": attr.side, "evidence": attr.evidence}
        reached = bool(ceilings) or stop_reason == "max-duration"
        plan_json: dict[str, Any] = {
            "clients": [
                {"netns": la.host.name, "nofile": la.nofile, **la.plan.to_json()} for la in launches
            ]
        }
        return Step(
            name=name,
            title=title,
            t_start=t_start,
            t_end=self.now(),
            requested=sum(la.plan.count for la in launches),
            held=held,
            established_peak=sum(st.established_peak for st in stats),
            attempts=sum(st.attempts for st in stats),
            failures=failures,
            failures_by_cause=by_cause,
            ceiling=step_ceiling(
                reached,
                held,
                attribution,
                [(c.errno, c.op, c.evidence) for c in ceilings],
            ),
            prediction=prediction,
            attribution=attribution,
            server=server_json,
            counters=counters,
            plan=plan_json,
            stop_reason=stop_reason if ceilings or stop_reason != "ceiling" else "count",
            pools=pools,
            client_stats=stats,
        )

    def _print_step(self, step: Step, show_model: bool = True) -> None:
        secs = step.t_end - step.t_start
        line = f"  client held {n(step.held)} of {n(step.requested)} asked ({secs:.1f} s)"
        if step.failures:
            line += "; failures " + ", ".join(
                f"{k} ×{n(v)}" for k, v in sorted(step.failures.items())
            )
        self.out(line)
        if step.server:
            per_ip = step.server.get("per_source_ip") or {}
            srv = (
                f"  server held {n(step.server.get('held'))}, from {len(per_ip)} source "
                f"IP{'s' if len(per_ip) != 1 else ''}"
            )
            errs = step.server.get("errors_during_step") or {}
            if errs:
                srv += "; accept() failed " + ", ".join(f"{k} ×{n(v)}" for k, v in errs.items())
            self.out(srv)
        if step.ceiling.get("reached"):
            a = step.attribution
            self.out(f"  stopped by {a['cause']} ({a['side']}): {a['evidence']}")
        p = step.prediction
        if show_model and p.get("count") is not None:
            self.out(f"  model: {n(p['count'])} ({p.get('cause')}, {p.get('side')})")

    def release(self, step: Step) -> None:
        """Close a step's connections (RST, so no TIME_WAIT is left for the next step) and
        reap its workers; their failures stay in the timeline's running totals."""
        for pool in step.pools:
            self._stop_pool(pool)
        step.pools = []
        if self._server is not None and not self._stopped_pids:
            self.wait_server(settle_s=0.2, max_s=3.0)

    def _stop_pool(self, pool: ClientPool) -> None:
        if pool not in self._live:
            return
        final = pool.stop(timeout=2.0)
        self._live.remove(pool)
        _add(self._done_fail, final.failures)
        _add(self._done_fail_cause, final.failures_by_cause)

    def close(self) -> None:
        """Stop every pool and the server (a frozen server is thawed first). Idempotent."""
        self.resume_server()
        for pool in list(self._live):
            with suppress(Exception):
                self._stop_pool(pool)
        if self._server is not None:
            with suppress(Exception):
                self._server.stop(timeout=2.0)
