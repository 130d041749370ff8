"""``run --target --cluster``'s result: the cluster's ``open``-shaped result
(:func:`~conncap.cluster.verdict.cluster_result`: nodes, merged timeline, first to stop) made
a ``run`` result: one step per step the nodes ran (step 1 "ports": every node one source IP
to the target; step 2 "four-tuple": every node its own source IPs), each the nodes' sum,
predicted against measured node by node. Pure: each node's own ``run`` document came in its
final account (``Final["run"]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from conncap.cluster.coordinate import ClusterRun, NodeRun
from conncap.cluster.verdict import (
    cluster_ceiling,
    cluster_prediction,
    cluster_result,
    verdict_lines,
)
from conncap.errors import UsageError
from conncap.result import (
    Comparison,
    Host,
    JsonValue,
    Node,
    Result,
    Step,
    from_json,
    json_object,
)

#: The cluster's steps, by the name every node's run gives them.
STEP_TITLES = {
    "ports": "every node: one source IP to the target",
    "four-tuple": "every node: its own source IPs to the target, a new 4-tuple for each",
}


@dataclasses.dataclass(frozen=True, slots=True)
class NodeDoc:
    """One node's own ``run`` document and the seconds to add to its times to put them on
    the cluster's time line (its run started at the common start, give or take)."""

    node: Node
    doc: Result
    shift: float


def node_doc(nr: NodeRun, node: Node, start_at: float) -> NodeDoc | None:
    """The node's run document (None when it sent none, or one the codec refuses)."""
    raw = nr.final.get("run") if nr.final else None
    if not isinstance(raw, Mapping):
        return None
    try:
        doc = from_json(dict(raw), source=f"node {nr.node.node_id}'s run")
    except UsageError:
        return None
    return NodeDoc(node, doc, _shift(nr, start_at))


def _shift(nr: NodeRun, start_at: float) -> float:
    """Cluster time less the node run's own time, from its first sample that has both."""
    off = nr.offset.offset if nr.offset is not None else 0.0
    for s in nr.samples:
        t_wall, t = s.get("t_wall"), s.get("t")
        if isinstance(t_wall, int | float) and isinstance(t, int | float):
            return round(float(t_wall) - off - start_at - float(t), 3)
    return 0.0


def _measured(step: Step) -> int:
    if step.comparison is not None and step.comparison.measured is not None:
        return step.comparison.measured
    return step.ceiling.count if step.ceiling.count is not None else step.established_peak


def cluster_step(name: str, docs: Sequence[NodeDoc]) -> Step | None:
    """Step ``name`` over the nodes that ran it: times on the cluster's time line, counts
    summed, the ceiling the verdict most nodes reached, the prediction the nodes' sum, and
    the comparison node by node (it matches when every node's does)."""
    ran = [(d, s) for d in docs for s in d.doc.steps if s.name == name]
    if not ran:
        return None
    # each node as it stood at the end of this step: the shared verdict builders then apply
    as_nodes = [
        dataclasses.replace(
            d.node,
            held=_measured(s),
            ceiling=s.ceiling,
            prediction=s.prediction or d.node.prediction,
            stopped_at_s=None if s.t_ramp_end is None else round(s.t_ramp_end + d.shift, 3),
        )
        for d, s in ran
    ]
    measured = sum(n.held for n in as_nodes)
    prediction = cluster_prediction(as_nodes)
    comps = [(d.node.address, s.comparison) for d, s in ran]
    known = [c for _, c in comps if c is not None]
    all_match = len(known) == len(comps) and all(c.matches for c in known)
    per_node = tuple(f"{addr}: {c.text if c else 'no comparison'}" for addr, c in comps)
    diff = None if prediction.count is None else measured - prediction.count
    comparison = Comparison(
        predicted=prediction.count,
        measured=measured,
        difference=diff,
        exact=len(known) == len(comps) and all(c.exact for c in known),
        matches=all_match,
        text=(
            f"predicted {_n(prediction.count)} over {len(ran)} node(s), measured "
            f"{measured:,} {'✓' if all_match else '✗'}"
            + ("" if all_match else f" ({sum(1 for c in known if not c.matches)} node(s) off)")
        ),
        reasons=per_node,
    )
    outcomes = {s.outcome for _, s in ran}
    return Step(
        name=name,
        title=STEP_TITLES.get(name, ran[0][1].title),
        spec=json_object(
            {d.node.address: dict(s.spec or {}) for d, s in ran}, f"step {name}'s spec"
        ),
        t_start=min(s.t_start + d.shift for d, s in ran),
        t_end=_latest([None if s.t_end is None else s.t_end + d.shift for d, s in ran]),
        t_ramp_end=_latest(
            [None if s.t_ramp_end is None else s.t_ramp_end + d.shift for d, s in ran]
        ),
        held_before=sum(s.held_before or 0 for _, s in ran),
        opened=sum(s.opened or 0 for _, s in ran),
        held=measured,
        established_peak=sum(s.established_peak for _, s in ran),
        outcome=outcomes.pop() if len(outcomes) == 1 else "mixed",
        ceiling=cluster_ceiling(as_nodes, measured),
        prediction=prediction,
        comparison=comparison,
    )


def _latest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(max(known), 3) if known else None


def _n(v: int | None) -> str:
    return "?" if v is None else f"{v:,}"


def step_lines(steps: Sequence[Step]) -> list[str]:
    """Each step in words: the sum, then every node's own comparison."""
    lines: list[str] = []
    for i, s in enumerate(steps, 1):
        c = s.comparison
        lines.append(f"step {i} ({s.name}, {s.title}): {c.text if c else '?'}")
        lines.extend(f"  {r}" for r in (c.reasons if c else ()))
    return lines


def run_cluster_result(
    run: ClusterRun,
    *,
    requested: int,
    address: str,
    plan: Mapping[str, JsonValue],
    config: Mapping[str, JsonValue],
    host: Host | None = None,
) -> Result:
    """The one ``run --target --cluster`` result: ``cluster_result``'s nodes, merged timeline
    and ceiling, with ``command`` "run", the cluster's ``steps``, each node's prediction and
    verdict those of its own run (its last step's), and the summary: per node, per step,
    which node stopped first."""
    base = cluster_result(run, requested=requested, address=address, plan=plan, host=host)
    start = run.start_at if run.start_at is not None else 0.0
    docs: list[NodeDoc] = []
    nodes: list[Node] = []
    notes: list[str] = list(base.notes)
    for nr, node in zip(run.nodes, base.nodes, strict=True):
        d = node_doc(nr, node, start)
        if d is None:
            nodes.append(node)
            continue
        last = d.doc.steps[-1] if d.doc.steps else None
        node = dataclasses.replace(
            node,
            prediction=d.doc.prediction,
            matches_prediction=(
                last.comparison.matches
                if last is not None and last.comparison is not None and node.ceiling.reached
                else node.matches_prediction
            ),
        )
        nodes.append(node)
        docs.append(dataclasses.replace(d, node=node))
        notes.extend(f"{node.address}: {n}" for n in d.doc.notes)
    steps = tuple(s for name in _step_names(docs) if (s := cluster_step(name, docs)) is not None)
    result = dataclasses.replace(
        base,
        command="run",
        config=json_object(dict(config), "config"),
        nodes=tuple(nodes),
        steps=steps,
        prediction=(steps[-1].prediction or base.prediction) if steps else base.prediction,
        notes=tuple(notes),
    )
    return dataclasses.replace(result, summary=(*step_lines(steps), *verdict_lines(result)))


def _step_names(docs: Sequence[NodeDoc]) -> list[str]:
    """Every step name the nodes ran, in the order they ran them."""
    names: list[str] = []
    for d in docs:
        for s in d.doc.steps:
            if s.name not in names:
                names.append(s.name)
    return names
