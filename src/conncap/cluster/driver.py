"""``conncap open TARGET… --cluster ADDRESS``: the Ray edge of a cluster run. Connects to the
Ray cluster, puts one :class:`~conncap.cluster.agent.Agent` on each node (node affinity, not
soft: an agent never lands on another node), and hands them to the pure
:class:`~conncap.cluster.coordinate.Coordinator`.

Ray is imported here only, inside functions: ``conncap`` without ``--cluster`` never imports
it (a test checks ``sys.modules``). Ray's own output stays out of conncap's: the driver logs
at ERROR, the workers' output is not forwarded (``log_to_driver=False``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from conncap.cluster.coordinate import AgentLost, ClusterRun, Coordinator, NodeRef, split_count
from conncap.cluster.messages import AgentSpec, RayNode
from conncap.cluster.verdict import cluster_result, node_table
from conncap.errors import RunFailed, UsageError
from conncap.result import JsonValue, Result
from conncap.stopping import SignalStop

#: Seconds to wait for the agents' actors to be placed and answer ``info``.
PLACE_TIMEOUT_S = 60.0
#: Seconds to wait for ``--nodes N`` alive nodes (nodes still joining).
JOIN_TIMEOUT_S = 30.0


def import_ray() -> Any:
    """Ray, or a one-line UsageError saying how to get it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--cluster needs Ray: pip install 'conncap[ray]' (on every node of the cluster)"
        ) from None
    return ray


def connect(ray: Any, address: str) -> None:
    """``ray.init`` on an existing cluster, quietly (ADDRESS as ``ray start`` prints it, or
    ``auto``)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        ray.init(
            address=address,
            namespace="conncap",
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunFailed(f"cannot reach the Ray cluster at {address}: {first}") from exc


def wait_nodes(ray: Any, wanted: int | None, timeout: float = JOIN_TIMEOUT_S) -> list[RayNode]:
    """``ray.nodes()`` once ``wanted`` nodes are alive (nodes may still be joining), at most
    ``timeout`` seconds; without ``wanted``, at once."""
    end = time.monotonic() + timeout
    while True:
        nodes: list[RayNode] = list(ray.nodes())
        alive = sum(1 for n in nodes if n.get("Alive"))
        if wanted is None or alive >= wanted or time.monotonic() >= end:
            return nodes
        time.sleep(0.5)


def choose_nodes(nodes: Sequence[RayNode], wanted: int | None) -> list[RayNode]:
    """The alive nodes the run uses, by address (then id); ``wanted``: the first so many."""
    alive = sorted(
        (RayNode(**n) for n in nodes if n.get("Alive")),
        key=lambda n: (str(n.get("NodeManagerAddress")), str(n.get("NodeID"))),
    )
    if not alive:
        raise RunFailed("the Ray cluster has no alive node")
    if wanted is not None:
        if wanted < 1:
            raise UsageError("--nodes must be at least 1")
        if wanted > len(alive):
            raise UsageError(f"--nodes {wanted}: the cluster has {len(alive)} alive node(s)")
        alive = alive[:wanted]
    return alive


class RayAgents:
    """The :class:`~conncap.cluster.coordinate.AgentSet` over Ray actors: one per node."""

    def __init__(self, ray: Any, nodes: Sequence[RayNode], specs: Sequence[AgentSpec]):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from conncap.cluster.agent import Agent

        self.ray = ray
        self.nodes = [NodeRef(str(n["NodeID"]), str(n["NodeManagerAddress"])) for n in nodes]
        remote = ray.remote(num_cpus=0, max_concurrency=4, max_restarts=0, max_task_retries=0)(
            Agent
        )
        #: Ray actor handles (``ActorHandle``, untyped), by node id.
        self.actors: dict[str, object] = {}
        for ref, spec in zip(self.nodes, specs, strict=True):
            self.actors[ref.node_id] = remote.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(ref.node_id, soft=False),
            ).remote(spec)

    def call(
        self, method: str, args: Mapping[str, tuple[object, ...]], timeout: float
    ) -> dict[str, object]:
        from ray import exceptions as rex

        refs = {nid: getattr(self.actors[nid], method).remote(*a) for nid, a in args.items()}
        if not refs:
            return {}
        ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        done = set(ready)
        out: dict[str, object] = {}
        for nid, ref in refs.items():
            if ref not in done:
                out[nid] = AgentLost(f"no answer to {method} within {timeout:.0f} s")
                self.ray.cancel(ref, force=False)
                continue
            try:
                out[nid] = self.ray.get(ref)
            except (rex.RayActorError, rex.NodeDiedError, rex.ActorUnavailableError) as exc:
                out[nid] = AgentLost(_one_line(exc))
            except rex.RayTaskError as exc:
                out[nid] = AgentLost(f"{method} failed: {_one_line(exc)}")
        return out

    def kill(self) -> None:
        for actor in self.actors.values():
            with suppress(Exception):  # already dead with its node: nothing left to end
                self.ray.kill(actor, no_restart=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = getattr(exc, "cause", None)
    if cause is not None:
        text = f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def node_specs(args: argparse.Namespace, nodes: Sequence[RayNode]) -> list[AgentSpec]:
    """Each node's part of the command: its share of ``--count`` and the rest as given."""
    shares = split_count(args.count, len(nodes))
    if min(shares) < 1:
        raise UsageError(f"--count {args.count} is less than the {len(nodes)} nodes used")
    return [
        {
            "targets": list(args.targets),
            "share": share,
            "source_ip": args.source_ip,
            "workers": "auto" if args.workers is None else str(args.workers),
            "rate": None if args.rate is None else args.rate / len(nodes),
            "timeout": args.timeout,
            "bind_mode": args.bind_mode,
            "nofile": args.nofile,
            "max_duration_s": args.max_duration + 5.0,
            "object_store_bytes": int((n.get("Resources") or {}).get("object_store_memory", 0)),
        }
        for n, share in zip(nodes, shares, strict=True)
    ]


def run_specs(args: argparse.Namespace, nodes: Sequence[RayNode]) -> list[AgentSpec]:
    """``run --target --cluster``: each node's part, its share of ``--count`` and the run's
    steps (``RunSpec``): step 1 one source IP to the target, step 2 the node's own addresses
    (found on the node)."""
    from conncap.engine.plan import parse_target

    t = parse_target(args.target)
    shares = split_count(args.count, len(nodes))
    if min(shares) < 1:
        raise UsageError(f"--count {args.count} is less than the {len(nodes)} nodes used")
    workers = args.client_workers
    return [
        {
            "targets": [args.target],
            "share": share,
            "source_ip": None,
            "workers": "auto" if workers is None else str(min(workers, share)),
            "rate": None if args.rate is None else args.rate / len(nodes),
            "timeout": args.timeout,
            "bind_mode": "kernel",
            "nofile": args.client_nofile,
            "max_duration_s": args.max_duration + 5.0,
            "object_store_bytes": int((n.get("Resources") or {}).get("object_store_memory", 0)),
            "run": {
                "host": t.host,
                "port": t.lo,
                "escalate": bool(args.escalate),
                "source_ips": args.source_ips,
                "plateau_s": args.plateau,
                "memory_guard": args.memory_guard,
            },
        }
        for n, share in zip(nodes, shares, strict=True)
    ]


def coordinate(
    address: str,
    wanted: int | None,
    count: int,
    specs: Callable[[Sequence[RayNode]], list[AgentSpec]],
    *,
    max_duration: float,
    hold_s: float,
    say: Callable[[str], None],
) -> ClusterRun:
    """Connect, place one agent per node with its spec, and run them through the
    :class:`Coordinator` (Ctrl-C and SIGTERM stop every agent); the actors are killed and
    Ray is left at the end."""
    ray = import_ray()
    sig = SignalStop()
    stop = sig.event

    connect(ray, address)
    agents: RayAgents | None = None
    sig.install()
    try:
        nodes = choose_nodes(wait_nodes(ray, wanted), wanted)
        agents = RayAgents(ray, nodes, specs(nodes))
        say(
            f"cluster {address}: {len(nodes)} node(s), {count:,} connections "
            f"split {', '.join(str(s) for s in split_count(count, len(nodes)))}"
        )
        coord = Coordinator(
            agents,
            stop=stop,
            deadline_s=max_duration,
            hold_s=hold_s,
            call_timeout=PLACE_TIMEOUT_S,
            on_ready=lambda run: _print_table(run, say),
            on_poll=_progress(say, count),
        )
        return coord()
    finally:
        sig.restore()
        if agents is not None:
            agents.kill()
        ray.shutdown()


def _exit_code(run: ClusterRun, result: Result) -> int:
    from conncap.exitcodes import ExitStatus

    code = ExitStatus.INTERRUPTED if run.stop_reason == "interrupted" else ExitStatus.SUCCESS
    if result.error is not None:
        code = ExitStatus.FAILURE
    return int(code)


def run_open(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[Result, int]:
    """One coordinated ``open`` over the cluster: its result (``conncap.result/2`` with
    ``nodes``, written with ``--json``) and the exit status."""
    from conncap.engine.results import host_info
    from conncap.result import write_atomic

    if args.max_duration <= 0:
        raise UsageError("--max-duration must be positive")
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    run = coordinate(
        args.cluster,
        args.nodes,
        args.count,
        lambda nodes: node_specs(args, nodes),
        max_duration=args.max_duration,
        hold_s=args.hold,
        say=say,
    )
    result = cluster_result(
        run,
        requested=args.count,
        address=args.cluster,
        plan=open_plan(args),
        host=host_info(),
    )
    for line in result.summary:
        say(line)
    if args.json:
        write_atomic(args.json, result)
    return result, _exit_code(run, result)


def run_run(
    args: argparse.Namespace, config: Mapping[str, JsonValue], say: Callable[[str], None]
) -> tuple[Result, int]:
    """``conncap run --target HOST:PORT --cluster ADDRESS``: run's steps on every node
    against the target, each node its share of ``--count``; one ``run`` result with
    ``steps`` and ``nodes`` (docs/cluster.md) and the exit status. The caller writes it."""
    from conncap.cluster.runresult import run_cluster_result
    from conncap.engine.results import host_info

    run = coordinate(
        args.cluster,
        args.nodes,
        args.count,
        lambda nodes: run_specs(args, nodes),
        max_duration=args.max_duration,
        hold_s=args.plateau,
        say=say,
    )
    result = run_cluster_result(
        run,
        requested=args.count,
        address=args.cluster,
        plan={
            "target": args.target,
            "escalate": bool(args.escalate),
            "source_ips": args.source_ips,
            "rate": args.rate,
            "timeout_s": args.timeout,
            "plateau_s": args.plateau,
            "nofile": args.client_nofile,
        },
        config=config,
        host=host_info(),
    )
    return result, _exit_code(run, result)


def open_plan(args: argparse.Namespace) -> dict[str, JsonValue]:
    """What ``open --cluster`` was asked (the result's ``plan``; each node's own plan is its
    share of it)."""
    return {
        "targets": [str(t) for t in args.targets],
        "count": args.count,
        "rate": args.rate,
        "hold_s": args.hold,
        "timeout_s": args.timeout,
        "bind_mode": args.bind_mode,
        "workers": "auto" if args.workers is None else str(args.workers),
        "source_ips": [str(s) for s in args.source_ip or []],
        "nofile": args.nofile,
    }


def _print_table(run: ClusterRun, say: Callable[[str], None]) -> None:
    rows = node_table(run)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        say("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _progress(say: Callable[[str], None], requested: int) -> Callable[[ClusterRun], None]:
    last = [0.0]

    def show(run: ClusterRun) -> None:
        now = time.monotonic()
        if now - last[0] < 2.0:
            return
        last[0] = now
        parts = []
        total = 0
        for nr in run.nodes:
            figure = nr.samples[-1].get("held") if nr.samples else None
            held = figure if isinstance(figure, int) else 0
            total += 0 if nr.lost else held
            parts.append(f"{nr.node.address} {'lost' if nr.lost else f'{held:,}'}")
        say(f"held {total:,}/{requested:,} · " + " · ".join(parts))

    return show
