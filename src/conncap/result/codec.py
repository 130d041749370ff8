"""``conncap.result/2`` JSON to :class:`~conncap.result.model.Result`: the one place a result
document is checked.

:func:`from_json` reads /2 and /1 (upgraded by ``upgrade.upgrade_v1``); every problem is one
:class:`UsageError` line naming the file and the key path, e.g. ``run.json: damaged conncap
result (steps[1].ceiling.count: expected an integer, got "x")``. Each object of the model has
one reader here, built on the checked reader of :mod:`conncap.result.checked`; the writer is
:mod:`conncap.result.encode`, and ``from_json(to_json(r)) == r``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from conncap.errors import UsageError
from conncap.result import model as m
from conncap.result import server as srv
from conncap.result.checked import Damaged, Obj, is_num, show
from conncap.result.upgrade import upgrade_v1

#: Top-level keys every document has (a /1 document without them cannot be read).
REQUIRED_KEYS: tuple[str, ...] = (
    "schema",
    "requested",
    "established_peak",
    "held_at_end",
    "failures",
    "ceiling",
    "prediction",
    "timeline",
    "duration_s",
)

T = TypeVar("T")


# --- JSON -> model ------------------------------------------------------------------------------


def _host(o: Obj) -> m.Host:
    return m.Host(
        hostname=o.str_or_none("hostname"),
        os=o.str_or_none("os"),
        kernel=o.str_or_none("kernel"),
        cpu_count=o.int_or_none("cpu_count"),
    )


def _ceiling(o: Obj) -> m.Ceiling:
    return m.Ceiling(
        reached=o.bool_("reached"),
        count=o.int_or_none("count", required=True),
        cause=o.str_or_none("cause", required=True),
        side=o.choice("side", m.SIDES, null=True),
        errno=o.str_or_none("errno", required=True),
        op=o.str_or_none("op", required=True),
        knob=o.str_or_none("knob", required=True),
        advice=o.strs("advice", required=True),
        windows=o.str_or_none("windows", required=True),
        evidence=o.str_or_none("evidence", required=True),
        server_held=o.int_or_none("server_held"),
        step=o.str_or_none("step"),
        certainty=o.choice("certainty", m.CERTAINTIES, null=True, required=False),
    )


def _server_message(o: Obj) -> srv.ServerMessage:
    return srv.ServerMessage(text=o.str_("text"), seen=o.int_("seen"), closed=o.int_("closed"))


def _closes(o: Obj) -> srv.ServerCloses:
    return srv.ServerCloses(
        fin=o.int_or_none("fin") or 0,
        rst=o.int_or_none("rst") or 0,
        lifetimes=o.ints("lifetimes"),
        messages=o.objs("messages", _server_message),
        icmp=o.counts("icmp"),
        unacked=o.int_or_none("unacked") or 0,
    )


def _server_process(o: Obj) -> srv.ServerProcess:
    return srv.ServerProcess(
        pid=o.int_("pid"),
        name=o.str_("name"),
        fds=o.int_or_none("fds"),
        nofile=o.int_or_none("nofile"),
    )


def _target(o: Obj) -> srv.TargetSide:
    return srv.TargetSide(
        host=o.str_("host"),
        port=o.int_("port"),
        listening=o.bool_or_none("listening"),
        processes=o.objs("processes", _server_process),
        accept_queue=o.int_or_none("accept_queue"),
        backlog=o.int_or_none("backlog"),
        established=o.int_or_none("established"),
        syn_recv=o.int_or_none("syn_recv"),
        rules=o.strs("rules"),
        sources=o.strs("sources"),
        problems=o.strs("problems"),
    )


def _bound(o: Obj) -> m.Bound:
    return m.Bound(
        cause=o.str_("cause"),
        count=o.int_or_none("count", required=True),
        detail=o.str_("detail"),
        estimate=o.bool_or_none("estimate") or False,
        knob=o.str_or_none("knob"),
    )


def _prediction_side(o: Obj) -> m.PredictionSide:
    return m.PredictionSide(
        side=o.str_("side"),
        count=o.int_or_none("count", required=True),
        cause=o.str_or_none("cause", required=True),
        estimate=o.bool_or_none("estimate"),
        bounds=o.objs("bounds", _bound),
    )


def _single_process(o: Obj) -> m.SingleProcess:
    return m.SingleProcess(
        count=o.int_("count"),
        cause=o.str_("cause"),
        detail=o.str_("detail"),
        binds_first=o.bool_("binds_first"),
    )


def _optional(o: Obj, key: str, read: Callable[[Obj], T]) -> T | None:
    sub = o.obj_or_none(key)
    return None if sub is None else read(sub)


def _prediction(o: Obj) -> m.Prediction:
    return m.Prediction(
        count=o.int_or_none("count"),
        cause=o.str_or_none("cause"),
        side=o.str_or_none("side"),
        estimate=o.bool_or_none("estimate"),
        bounds=o.objs("bounds", _bound),
        client=_optional(o, "client", _prediction_side),
        server=_optional(o, "server", _prediction_side),
        notes=o.strs("notes"),
        line=o.str_or_none("line"),
        single_process=_optional(o, "single_process", _single_process),
        reason=o.str_or_none("reason"),
    )


def _sample(o: Obj) -> m.Sample:
    i = o.int_or_none
    return m.Sample(
        t=o.num("t"),
        held=o.int_("held"),
        failures=o.int_("failures"),
        rate=o.num("rate"),
        failures_by_cause=o.counts("failures_by_cause", required=True),
        step=o.str_or_none("step"),
        phase=o.str_or_none("phase"),
        server_errors=o.counts_or_none("server_errors"),
        established=i("established"),
        server_held=i("server_held"),
        server_accepted=i("server_accepted"),
        server_curr_estab=i("server_curr_estab"),
        kernel_bytes=i("kernel_bytes"),
        slab_bytes=i("slab_bytes"),
        sock_inuse=i("sock_inuse"),
        sock_tw=i("sock_tw"),
        sock_mem_bytes=i("sock_mem_bytes"),
        user_bytes_client=i("user_bytes_client"),
        user_bytes_server=i("user_bytes_server"),
        mem_available=i("mem_available"),
        listen_overflows=i("listen_overflows"),
        listen_drops=i("listen_drops"),
        syn_retrans=i("syn_retrans"),
        tcp_abort_on_memory=i("tcp_abort_on_memory"),
        syncookies_sent=i("syncookies_sent"),
        syncookies_recv=i("syncookies_recv"),
        conntrack_count=i("conntrack_count"),
        conntrack_max=i("conntrack_max"),
        conntrack_drops=i("conntrack_drops"),
        conntrack_insert_failed=i("conntrack_insert_failed"),
        time_wait=i("time_wait"),
        closed=i("closed"),
        latency_p50_ms=o.num_or_none("latency_p50_ms"),
        latency_p99_ms=o.num_or_none("latency_p99_ms"),
        extra=o.rest(m.SAMPLE_KEYS),
    )


def _server(o: Obj) -> srv.ServerFigures:
    return srv.ServerFigures(
        held=o.int_or_none("held"),
        accepted=o.int_or_none("accepted"),
        closed=o.int_or_none("closed"),
        resets=o.int_or_none("resets"),
        errors=o.counts("errors"),
        errors_by_errno=o.counts("errors_by_errno"),
        per_source_ip=o.counts("per_source_ip"),
        workers=o.int_or_none("workers"),
        ports=o.ints("ports"),
        rss_bytes=o.int_or_none("rss_bytes"),
        backoffs=o.int_or_none("backoffs"),
        closed_first=o.int_or_none("closed_first"),
        errors_during_step=o.counts_or_none("errors_during_step"),
    )


def _client(o: Obj) -> m.ClientFigures:
    return m.ClientFigures(
        workers=o.int_or_none("workers"),
        rss_bytes=o.int_or_none("rss_bytes"),
        established=o.int_or_none("established"),
    )


def _memory(o: Obj) -> m.Memory:
    return m.Memory(
        kernel_bytes_per_conn=o.int_or_none("kernel_bytes_per_conn"),
        user_bytes_per_conn=o.int_or_none("user_bytes_per_conn"),
        user_bytes_per_conn_client=o.int_or_none("user_bytes_per_conn_client"),
        user_bytes_per_conn_server=o.int_or_none("user_bytes_per_conn_server"),
        method=o.str_or_none("method"),
        samples=o.int_or_none("samples"),
        kernel_r2=o.num_or_none("kernel_r2"),
        user_r2=o.num_or_none("user_r2"),
        mem_available=o.int_or_none("mem_available"),
        guard_bytes=o.int_or_none("guard_bytes"),
        extrapolated_ceiling=o.int_or_none("extrapolated_ceiling"),
        kernel_source=o.str_or_none("kernel_source"),
        guard_fraction=o.num_or_none("guard_fraction"),
        mem_available_start=o.int_or_none("mem_available_start"),
        guard_ceiling=o.int_or_none("guard_ceiling"),
        both_ends=o.bool_or_none("both_ends"),
        kernel_reason=o.str_or_none("kernel_reason"),
        user_reason=o.str_or_none("user_reason"),
    )


def _latency_histogram(o: Obj) -> m.LatencyHistogram:
    bounds: list[float] = []
    for item, path in o.list_("bounds_ms", required=True):
        if not is_num(item):
            raise Damaged(path, f"expected a number, got {show(item)}")
        assert isinstance(item, int | float)
        if bounds and not item > bounds[-1]:
            raise Damaged(path, "expected bounds in increasing order")
        bounds.append(float(item))
    counts = o.ints("counts")
    if "counts" not in o.keys:
        raise Damaged(o.at("counts"), "missing")
    if len(counts) not in (len(bounds), len(bounds) + 1):
        raise Damaged(
            o.at("counts"),
            f"expected {len(bounds)} or {len(bounds) + 1} counts for {len(bounds)} bounds, "
            f"got {len(counts)}",
        )
    if any(n < 0 for n in counts):
        raise Damaged(o.at("counts"), "expected counts of 0 or more")
    return m.LatencyHistogram(bounds_ms=tuple(bounds), counts=counts)


def _latency(o: Obj) -> m.Latency:
    return m.Latency(
        count=o.int_("count"),
        p50_ms=o.num_or_none("p50_ms"),
        p90_ms=o.num_or_none("p90_ms"),
        p99_ms=o.num_or_none("p99_ms"),
        p999_ms=o.num_or_none("p999_ms"),
        max_ms=o.num_or_none("max_ms"),
        mean_ms=o.num_or_none("mean_ms"),
        histogram=_optional(o, "histogram", _latency_histogram),
    )


def _comparison(o: Obj) -> m.Comparison:
    return m.Comparison(
        predicted=o.int_or_none("predicted", required=True),
        measured=o.int_or_none("measured", required=True),
        exact=o.bool_("exact"),
        matches=o.bool_("matches"),
        text=o.str_("text"),
        difference=o.int_or_none("difference"),
        reasons=o.strs("reasons"),
    )


def _attribution(o: Obj) -> m.Attribution:
    return m.Attribution(cause=o.str_("cause"), side=o.str_("side"), evidence=o.str_("evidence"))


def _step(o: Obj) -> m.Step:
    return m.Step(
        name=o.str_("name"),
        title=o.str_("title"),
        t_start=o.num("t_start"),
        established_peak=o.int_("established_peak"),
        ceiling=_ceiling(o.obj("ceiling")),
        t_end=o.num_or_none("t_end"),
        plan=o.json_obj("plan"),
        prediction=_optional(o, "prediction", _prediction),
        spec=o.json_obj("spec"),
        t_ramp_end=o.num_or_none("t_ramp_end"),
        held_before=o.int_or_none("held_before"),
        opened=o.int_or_none("opened"),
        server_held=o.int_or_none("server_held"),
        outcome=o.str_or_none("outcome"),
        comparison=_optional(o, "comparison", _comparison),
        requested=o.int_or_none("requested"),
        held=o.int_or_none("held"),
        attempts=o.int_or_none("attempts"),
        failures=o.counts("failures"),
        failures_by_cause=o.counts("failures_by_cause"),
        stop_reason=o.str_or_none("stop_reason"),
        attribution=_optional(o, "attribution", _attribution),
        server=_optional(o, "server", _server),
        counters=o.maybe_counts("counters"),
        observed=o.json_obj("observed"),
        latency=_optional(o, "latency", _latency),
    )


def _node(o: Obj) -> m.Node:
    return m.Node(
        node_id=o.str_("node_id"),
        address=o.str_("address"),
        held=o.int_("held"),
        prediction=_prediction(o.obj("prediction")),
        ceiling=_ceiling(o.obj("ceiling")),
        hostname=o.str_or_none("hostname"),
        share=o.int_or_none("share"),
        attempts=o.int_or_none("attempts"),
        matches_prediction=o.bool_or_none("matches_prediction"),
        failures=o.counts("failures"),
        failures_by_cause=o.counts("failures_by_cause"),
        limits=o.json_obj("limits"),
        ray_cost=o.json_obj("ray_cost"),
        clock_offset_s=o.num_or_none("clock_offset_s"),
        clock_rtt_s=o.num_or_none("clock_rtt_s"),
        stopped_at_s=o.num_or_none("stopped_at_s"),
        lost=o.bool_or_none("lost") or False,
        lost_reason=o.str_or_none("lost_reason"),
        error=o.str_or_none("error"),
        timeline=o.objs("timeline", _sample),
    )


def _expectation(o: Obj) -> m.Expectation:
    kind = o.choice("kind", m.EXPECTATION_KINDS)
    assert kind is not None
    return m.Expectation(
        name=o.str_("name"),
        kind=kind,
        ok=o.bool_or_none("ok", required=True),
        expected=o.str_("expected"),
        measured=o.str_("measured"),
        step=o.str_or_none("step") or "",  # absent in documents of older versions
        why=o.str_or_none("why") or "",
    )


def _scenario(o: Obj) -> m.Scenario:
    return m.Scenario(
        name=o.str_("name"),
        title=o.str_or_none("title"),
        shows=o.str_or_none("shows"),
        scale=o.str_or_none("scale"),
        passed=o.bool_or_none("passed"),
        checks_passed=o.int_or_none("checks_passed"),
        checks=o.int_or_none("checks"),
    )


def _result(o: Obj) -> m.Result:
    command = o.choice("command", m.COMMANDS)
    assert command is not None
    return m.Result(
        schema=o.str_("schema"),
        command=command,
        duration_s=o.num("duration_s"),
        requested=o.int_("requested"),
        established_peak=o.int_("established_peak"),
        held_at_end=o.int_("held_at_end"),
        failures=o.counts("failures", required=True),
        ceiling=_ceiling(o.obj("ceiling")),
        prediction=_prediction(o.obj("prediction")),
        timeline=o.objs("timeline", _sample, required=True),
        conncap_version=o.str_or_none("conncap_version"),
        argv=o.strs("argv"),
        started_at=o.str_or_none("started_at"),
        host=_optional(o, "host", _host),
        plan=o.json_obj("plan"),
        attempts=o.int_or_none("attempts"),
        failures_by_cause=o.counts("failures_by_cause"),
        dropped=o.counts("dropped"),
        stop_reason=o.str_or_none("stop_reason"),
        server=_optional(o, "server", _server),
        client=_optional(o, "client", _client),
        steps=o.objs("steps", _step),
        nodes=o.objs("nodes", _node),
        memory=_optional(o, "memory", _memory),
        latency=_optional(o, "latency", _latency),
        churn=o.json_obj("churn"),
        closes=_optional(o, "closes", _closes),
        target=_optional(o, "target", _target),
        limits=o.json_obj("limits"),
        server_limits=o.json_obj("server_limits"),
        topology=o.json_obj("topology"),
        config=o.json_obj("config"),
        scenario=_optional(o, "scenario", _scenario),
        expectations=o.objs("expectations", _expectation),
        notes=o.strs("notes"),
        summary=o.strs("summary"),
        probe_problems=o.texts("probe_problems"),
        error=o.str_or_none("error"),
    )


def from_json(obj: object, *, source: str) -> m.Result:
    """A parsed result document (``json.loads``'s value) as a :class:`Result`.

    Reads ``conncap.result/2`` and ``/1`` (upgraded). ``source`` names the file in the one-line
    :class:`UsageError` every problem raises."""
    if not isinstance(obj, Mapping):
        what = "list" if isinstance(obj, list) else type(obj).__name__
        raise UsageError(f"{source}: not a conncap result (a JSON {what}, not an object)")
    schema = obj.get("schema")
    if schema == m.SCHEMA_V1:
        missing = [k for k in REQUIRED_KEYS if k not in obj]
        if missing:
            raise UsageError(f"{source}: damaged conncap result (missing {', '.join(missing)})")
        obj = upgrade_v1(obj)
    elif schema != m.SCHEMA_V2:
        if isinstance(schema, str) and schema.startswith("conncap.result/"):
            raise UsageError(
                f"{source}: a {schema} document, which this conncap cannot read (it reads "
                f"{m.SCHEMA_V2} and {m.SCHEMA_V1}): use a newer conncap"
            )
        raise UsageError(
            f"{source}: not a conncap result (schema is {schema!r}, expected {m.SCHEMA_V2!r})"
        )
    try:
        return _result(Obj(obj, ""))
    except Damaged as exc:
        raise UsageError(f"{source}: damaged conncap result ({exc})") from None
    except RecursionError:
        raise UsageError(f"{source}: damaged conncap result (nested too deeply)") from None


def _part(read: Callable[[Obj], T], obj: object, source: str, what: str) -> T:
    try:
        return read(Obj(obj, what))
    except Damaged as exc:
        raise UsageError(f"{source}: damaged conncap result ({exc})") from None


def prediction_from_json(obj: object, *, source: str = "prediction") -> m.Prediction:
    """``conncap.model.to_json``'s dict (what writers hold today) as a :class:`Prediction`."""
    return _part(_prediction, obj, source, "prediction")


def sample_from_json(obj: object, *, source: str = "timeline") -> m.Sample:
    """One sampler dict as a :class:`Sample` (the writers' timelines, during the transition)."""
    return _part(_sample, obj, source, "sample")
