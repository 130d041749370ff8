"""The messages between the driver and each node's agent in ``open --cluster``.

The driver sends each agent its :class:`AgentSpec`; the agent answers ``info`` with a
:class:`NodeInfo`, ``clock`` with its wall clock (a float), ``start`` with a bool, and
``poll``/``stop`` with a :class:`PollAnswer` (new :data:`SampleRow` s and, once it is over, its
:class:`Final` account). They cross Ray as plain dicts, so the driver reads each answer
defensively (an agent of another version may lack a key): most are ``total=False``.
:class:`RayNode` is what ``ray.nodes()`` says of a node (the keys conncap reads).
"""

from __future__ import annotations

from typing import NotRequired, Required, TypedDict

from conncap.result import JsonValue

__all__ = [
    "AgentSpec",
    "Final",
    "NodeInfo",
    "NodeLimits",
    "PollAnswer",
    "RayCost",
    "RayNode",
    "RunSpec",
    "SampleRow",
]

#: One sample as the agent sends it (a ``Sample``'s JSON, ``step`` left out, with ``t_wall``:
#: the agent's wall clock) or as the driver keeps it on the run's time line (``t`` since the
#: common start on the driver's clock, ``node``: the node's id).
SampleRow = dict[str, JsonValue]


class RunSpec(TypedDict):
    """``run --target --cluster``: what makes an agent run ``conncap run``'s steps against
    the target instead of one ``open`` (``driver.run_specs``). Step 1 is one source IP to
    ``host:port``; step 2 (``escalate``) fans out over this node's own addresses that reach
    the target (at most ``source_ips`` of them, None: as many as the share needs)."""

    host: str
    port: int
    escalate: bool
    source_ips: int | None
    plateau_s: float
    memory_guard: float


class AgentSpec(TypedDict):
    """One node's part of the ``open`` command (``driver.node_specs``), or of ``run``
    (``driver.run_specs``: ``run`` is set, ``targets`` is the one target)."""

    targets: list[str]
    #: Its share of ``--count``.
    share: int
    source_ip: list[str] | None
    workers: str
    rate: float | None
    timeout: float
    bind_mode: str
    nofile: int | None
    max_duration_s: float
    #: The node's object store capacity, from Ray (subtracted from MemAvailable).
    object_store_bytes: int
    run: NotRequired[RunSpec]


class NodeLimits(TypedDict, total=False):
    """The limits of a node that the terminal's table shows."""

    port_range: list[int]
    nofile: int | None
    mem_available: int | None
    files_open: int | None
    files_max: int | None


class RayCost(TypedDict, total=False):
    """Ray's footprint on a node, measured there (see ``cluster.agent``)."""

    listeners_in_range: int
    ports: list[int]
    object_store_bytes: int
    agent_fds: int | None


class NodeInfo(TypedDict, total=False):
    """The agent's answer to ``info``: its node, plan, limits, Ray's cost and prediction."""

    hostname: str
    os: str
    ip: str | None
    pid: int
    share: int
    workers: int
    plan: dict[str, JsonValue]
    notes: list[str]
    limits: NodeLimits
    ray_cost: RayCost
    #: The model's prediction for its share (``count``, ``cause``, ``side``, ``bounds``,
    #: ``reason`` of a ``result.Prediction``'s JSON); with ``run``: step 1's.
    prediction: dict[str, JsonValue]
    #: With ``run``: step 2's source addresses on this node (empty: step 2 is not run).
    sources: list[str]


class Final(TypedDict, total=False):
    """An agent's final account: what it held, its ceiling (a ``result.Ceiling``'s JSON),
    why it stopped, and its totals; ``error`` when the measurement failed, ``cleanup`` what
    could not be cleaned up."""

    held: Required[int]
    ceiling: Required[dict[str, JsonValue]]
    stop_reason: str
    established: int
    attempts: int
    failures: dict[str, int]
    failures_by_cause: dict[str, int]
    peak: int
    error: str
    cleanup: list[str]
    #: With ``run``: the node's own ``run`` document (``conncap.result/2``, its timeline
    #: left out: the samples came through ``poll``).
    run: dict[str, JsonValue]


class PollAnswer(TypedDict, total=False):
    """The agent's answer to ``poll`` and ``stop``: samples from the driver's cursor on."""

    samples: list[SampleRow]
    cursor: int
    phase: str
    ramp_over: bool
    final: Final | None


class RayNode(TypedDict, total=False):
    """A node as ``ray.nodes()`` lists it (the keys conncap reads)."""

    NodeID: str
    NodeManagerAddress: str
    Alive: bool
    Resources: dict[str, float]
