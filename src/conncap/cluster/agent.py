"""The agent that runs on every node of a cluster run: it reads its node's limits, predicts
its own ceiling, and at the common start measures its share through the one measurement
loop (``conncap.measure.Measurement``, the client pool's worker processes on this node).

A plain class with no Ray in it: the driver makes it a Ray actor (``ray.remote(Agent)``), the
tests call it directly. Its methods answer at once; the measurement runs in a thread of its
own (the pool's workers die with that thread, PR_SET_PDEATHSIG), bounded by the plan's count,
the handshake timeout, ``max_duration_s`` and :meth:`stop`.

Ray's footprint on the node is measured here, not assumed:

- **ports**: listening sockets of this node inside its ephemeral range (Ray's ports when
  ``ray start`` was not given ports outside the range) take those ports from every pool:
  they are counted and subtracted (``ports_in_use``). Ray's own outgoing connections use
  ephemeral ports too, but towards Ray's ports (GCS, raylets), never towards the target: a
  port a connect() took is shared by connects to other destinations, so they cost nothing.
- **descriptors**: the pool's workers are separate processes, each with its own
  RLIMIT_NOFILE, so the descriptors of Ray's processes (this one included) take none of
  theirs; the system-wide file table is read live (Ray's files already counted in it).
- **memory**: MemAvailable is read live (Ray's processes already counted); the object store
  may still grow to its capacity, so that capacity is subtracted from it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from conncap.cluster.messages import AgentSpec, Final, NodeInfo, PollAnswer, RunSpec, SampleRow
from conncap.result import JsonValue, Sample, part_to_json

if TYPE_CHECKING:
    from conncap.run import RunConfig

#: Longest wait for the common start (a start time further away is a driver bug).
MAX_START_WAIT_S = 60.0
#: Samples per second while ramping and holding.
RAMP_HZ = 4.0
HOLD_HZ = 2.0


def ray_listen_ports(port_range: tuple[int, int], reserved: frozenset[int]) -> list[int]:
    """Ports of this network namespace's listening TCP sockets inside ``port_range`` (less
    reserved ones, which the model already subtracts)."""
    from conncap import procfs

    found: set[int] = set()
    for path in procfs.NET_TCP:
        try:
            with open(path) as fh:
                found |= procfs.parse_listen_ports(fh.read())
        except OSError:
            continue
    lo, hi = port_range
    return sorted(p for p in found if lo <= p <= hi and p not in reserved)


def _own_ip(targets: list[str]) -> str | None:
    """The source address this node uses towards the first target (a UDP connect sends
    nothing)."""
    host, _, port = targets[0].rpartition(":")
    host = host.strip("[]")
    try:
        with socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        ) as s:
            s.connect((host, int(port.split("-")[0])))
            return str(s.getsockname()[0])
    except (OSError, ValueError):
        return None


class Agent:
    """One node's agent (see the module docstring). ``spec`` is the open command's arguments
    for this node: ``targets``, ``share`` (its part of ``--count``), ``source_ip``,
    ``workers``, ``rate``, ``timeout``, ``bind_mode``, ``nofile``, ``max_duration_s`` and
    ``object_store_bytes`` (the node's object store capacity, from Ray)."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = AgentSpec(**spec)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._samples: list[SampleRow] = []
        self._phase = "new"
        self._ramp_over = False
        self._final: Final | None = None
        self._thread: threading.Thread | None = None
        self._plan: Any = None
        self._info: NodeInfo | None = None
        #: ``run``: step 2's source addresses on this node (None: counted up on loopback).
        self._sources: tuple[str, ...] | None = None

    # ---- before the start -------------------------------------------------------------------

    def _build_plan(self) -> tuple[Any, list[str]]:
        from conncap.engine.plan import build_open_plan

        s = self.spec
        return build_open_plan(
            targets=list(s["targets"]),
            count=int(s["share"]),
            rate=s.get("rate"),
            source_ip=s.get("source_ip"),
            workers=str(s.get("workers", "auto")),
            timeout=float(s.get("timeout", 5.0)),
            bind_mode=str(s.get("bind_mode", "kernel")),
            nofile=s.get("nofile"),
        )

    def info(self) -> NodeInfo:
        """This node's limits, its plan, Ray's cost and the predicted ceiling of its share (and
        its OS: the ceiling's advice is that OS's)."""
        if self._info is not None:
            return self._info
        from conncap.engine.plan import check_plan
        from conncap.engine.portrange import read_port_range, read_reserved_ports
        from conncap.engine.results import predict
        from conncap.limits import Fact, read_limits

        plan, notes = self._build_plan()
        check_plan(plan)
        self._plan = plan
        limits = read_limits()
        rng = read_port_range()
        in_range = ray_listen_ports(rng, read_reserved_ports())
        store = int(self.spec.get("object_store_bytes") or 0)
        avail = limits.mem_available.value
        if store and avail is not None:
            limits = dataclasses.replace(
                limits,
                mem_available=Fact.of(
                    max(0, avail - store),
                    f"{limits.mem_available.source} less Ray's object store ({store:,} bytes)",
                ),
            )
        nofile = self.spec.get("nofile")
        prediction = predict(plan, nofile, limits, ports_in_use=len(in_range))
        run = self.spec.get("run")
        if run is not None:
            sources, why = step2_sources(run, plan.count, rng)
            self._sources = sources
            if why:
                notes = [*notes, why]
        self._info = {
            "hostname": socket.gethostname(),
            "os": sys.platform,
            "ip": _own_ip(plan_targets(plan)),
            "pid": os.getpid(),
            "share": plan.count,
            "workers": plan.workers,
            "plan": plan.to_json(),
            "notes": notes,
            "limits": {
                "port_range": list(rng),
                "nofile": nofile if nofile is not None else limits.nofile_hard.value,
                "mem_available": avail,
                "files_open": limits.files_open.value,
                "files_max": limits.files_max.value,
            },
            "ray_cost": {
                "listeners_in_range": len(in_range),
                "ports": in_range,
                "object_store_bytes": store,
                "agent_fds": _count_fds(),
            },
            "prediction": {
                k: v
                for k, v in _json_object(prediction).items()
                if k in ("count", "cause", "side", "bounds", "reason")
            },
        }
        if run is not None:
            self._info["sources"] = list(self._sources or ())
        return self._info

    def clock(self) -> float:
        """This node's wall clock (the driver measures the offset around this call)."""
        return time.time()

    # ---- the measurement --------------------------------------------------------------------

    def start(self, at: float) -> bool:
        """Measure from ``at`` (this node's clock) on; returns at once."""
        if self._thread is not None:
            return False
        self.info()
        self._phase = "waiting"
        self._thread = threading.Thread(
            target=self._run_steps if "run" in self.spec else self._run,
            args=(float(at),),
            name="conncap-agent",
            daemon=True,
        )
        self._thread.start()
        return True

    def _keep(self, sample: Sample) -> None:
        row = {k: v for k, v in _json_object(sample).items() if k != "step"}
        row["t_wall"] = round(time.time(), 6)
        with self._lock:
            self._samples.append(row)

    def _run(self, at: float) -> None:
        from conncap.measure import Launch, Measurement

        final: Final = {"held": 0, "ceiling": {"reached": False}}
        wait = min(MAX_START_WAIT_S, max(0.0, at - time.time()))
        if self._stop.wait(wait):
            final["stop_reason"] = "interrupted"
            self._finish(final)
            return
        max_s = float(self.spec.get("max_duration_s") or 600.0)
        m = Measurement(stop=self._stop, deadline_s=max_s, on_sample=self._keep)
        try:
            self._phase = "ramp"
            step = m.begin("open", [Launch(self._plan, nofile=self.spec.get("nofile"))])
            outcome = m.ramp(step, hz=RAMP_HZ)
            verdict = m.conclude(step, settle="none")
            final["ceiling"] = _json_object(verdict.ceiling())
            final["stop_reason"] = outcome
            self._ramp_over = True
            if outcome == "ramp-over":
                final["stop_reason"] = "ceiling" if verdict.reached else "count"
                self._phase = "hold"
                while m.hold("open", 1.0, hz=HOLD_HZ) is None:
                    pass
            totals = m.client_totals()
            final["held"] = totals.held
            final["established"] = totals.established
            final["attempts"] = totals.attempts
            final["failures"] = dict(sorted(totals.failures.items()))
            final["failures_by_cause"] = dict(sorted(totals.failures_by_cause.items()))
            final["peak"] = max((s.held for s in m.timeline), default=0)
        except Exception as exc:  # reported to the driver as this node's error
            final["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            _, problems = m.close()
            if problems:
                final["cleanup"] = [str(p) for p in problems]
            self._finish(final)

    def _run_steps(self, at: float) -> None:
        """``run --target --cluster``: ``conncap run``'s experiment on this node (step 1 one
        source IP to the target, step 2 this node's own addresses), its share as the count;
        once its steps are over it holds until :meth:`stop`."""
        from conncap.measure import Measurement
        from conncap.result import to_json
        from conncap.run import Experiment

        final: Final = {"held": 0, "ceiling": {"reached": False}}
        wait = min(MAX_START_WAIT_S, max(0.0, at - time.time()))
        if self._stop.wait(wait):
            final["stop_reason"] = "interrupted"
            self._finish(final)
            return
        self._phase = "ramp"

        def linger(m: Measurement) -> None:
            self._ramp_over = True
            self._phase = "hold"
            while m.hold("hold", 1.0, hz=HOLD_HZ) is None:
                pass

        try:
            doc = Experiment(
                run_config(self.spec, self._sources),
                stop_event=self._stop,
                watch=lambda sample, _totals: self._keep(sample),
                linger=linger,
            ).run()
            self._ramp_over = True
            final["held"] = doc.held_at_end
            final["ceiling"] = _json_object(doc.ceiling)
            final["stop_reason"] = str(doc.stop_reason)
            final["attempts"] = doc.attempts or 0
            final["failures"] = dict(doc.failures)
            final["failures_by_cause"] = dict(doc.failures_by_cause)
            final["peak"] = doc.established_peak
            final["run"] = {**to_json(doc), "timeline": []}
            if doc.error is not None:
                final["error"] = doc.error
        except Exception as exc:  # reported to the driver as this node's error
            final["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self._finish(final)

    def _finish(self, final: Final) -> None:
        with self._lock:
            self._final = final
            self._phase = "done"

    def poll(self, cursor: int) -> PollAnswer:
        """Samples from ``cursor`` on, the phase, and the final account once it is over."""
        with self._lock:
            samples = self._samples[cursor:]
            return {
                "samples": samples,
                "cursor": cursor + len(samples),
                "phase": self._phase,
                "ramp_over": self._ramp_over,
                "final": self._final,
            }

    def stop(self, cursor: int = 0, reason: str = "stop", timeout: float = 20.0) -> PollAnswer:
        """Stop measuring (held connections are closed), wait for the thread, and return the
        samples from ``cursor`` on with the final account."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        out = self.poll(cursor)
        if out.get("final") is None:
            out["final"] = {"held": 0, "ceiling": {"reached": False}, "stop_reason": reason}
        return out


def step2_sources(
    run: RunSpec, share: int, port_range: tuple[int, int]
) -> tuple[tuple[str, ...] | None, str | None]:
    """Step 2's source addresses on this node, and a note when step 2 cannot run. A loopback
    target: None (the run counts 127.0.0.1, .2, ... up itself). Otherwise this node's own
    addresses that reach the target (``--source-ip auto``), at most ``source_ips``; with one
    only, step 2 would add no new 4-tuple: none."""
    import ipaddress

    from conncap.engine import Target
    from conncap.engine.plan import auto_sources
    from conncap.errors import UsageError

    if not run["escalate"]:
        return None, None
    host = run["host"]
    if ipaddress.ip_address(host).is_loopback:
        return None, None
    try:
        found = auto_sources(
            [Target(host, run["port"], run["port"])], share, port_range[1] - port_range[0] + 1
        )
    except UsageError as exc:
        return (), f"step 2 not run on this node: {exc}"
    cap = run["source_ips"]
    found = found[:cap] if cap is not None else found
    if len(found) < 2:
        return (), (
            f"step 2 not run on this node: {len(found)} local address(es) reach {host}, "
            "and step 2 needs a second one for a new 4-tuple"
        )
    return tuple(found), None


def run_config(spec: AgentSpec, sources: tuple[str, ...] | None) -> RunConfig:
    """The node's ``RunConfig``: the run's flags, its share as the count, the target, and
    step 2's sources as found on this node (``()``: no step 2)."""
    from conncap.run import RunConfig

    run = spec["run"]
    workers = str(spec.get("workers", "auto"))
    return RunConfig(
        count=int(spec["share"]),
        max_duration=float(spec.get("max_duration_s") or 600.0),
        memory_guard=run["memory_guard"],
        escalate=run["escalate"] and sources != (),
        source_ips=run["source_ips"] if sources is None else None,
        client_workers=None if workers == "auto" else int(workers),
        rate=spec.get("rate"),
        timeout_s=float(spec.get("timeout", 3.0)),
        host=run["host"],
        plateau_s=run["plateau_s"],
        client_nofile=spec.get("nofile"),
        target_port=run["port"],
        sources=sources or None,
    )


def plan_targets(plan: Any) -> list[str]:
    return [str(t) for t in plan.targets]


def _count_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _json_object(part: object) -> dict[str, JsonValue]:
    """A part of the result model as the JSON the agent sends to the driver."""
    value = part_to_json(part)
    assert isinstance(value, dict)
    return value
