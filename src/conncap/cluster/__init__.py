"""conncap agents on a Ray cluster: one coordinated ``open`` run, one verdict per node.

``coordinate`` is pure (clock offsets, barrier, polling, merged timeline, verdicts);
``agent`` is what runs on each node (no Ray in it); ``driver`` is the Ray edge and the only
module that imports Ray (inside functions). Importing this package never imports Ray.
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
    cluster_result,
    estimate_offset,
    merge_timeline,
    split_count,
    total_series,
)

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
