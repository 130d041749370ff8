"""conncap agents on a Ray cluster: one coordinated ``open`` run, one verdict per node.

``coordinate`` (clock offsets, barrier, polling), ``timeline`` (the merged timeline) and
``verdict`` (per-node verdicts, the result, the terminal's words) are pure; ``messages``
types what the driver and the agents send each other; ``agent`` is what runs on each node
(no Ray in it); ``driver`` is the Ray edge and the only module that imports Ray (inside
functions). Importing this package never imports Ray.
"""

from conncap.cluster.coordinate import (
    AgentLost,
    AgentSet,
    ClockSample,
    ClusterRun,
    Coordinator,
    NodeRef,
    NodeRun,
    Offset,
    estimate_offset,
    split_count,
)
from conncap.cluster.timeline import merge_timeline, total_series
from conncap.cluster.verdict import cluster_result

__all__ = [
    "AgentLost",
    "AgentSet",
    "ClockSample",
    "ClusterRun",
    "Coordinator",
    "NodeRef",
    "NodeRun",
    "Offset",
    "cluster_result",
    "estimate_offset",
    "merge_timeline",
    "split_count",
    "total_series",
]
