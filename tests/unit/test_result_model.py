"""conncap.result: the typed model, its one codec and the bounded loader. The four real
fixtures round-trip (/1 upgraded to /2), damaged documents give one UsageError line naming the
key path, and hostile files (huge, endless, deeply nested, huge integers, NaN) are refused."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conncap.errors import UsageError
from conncap.exitcodes import ExitStatus
from conncap.result import (
    SCHEMA_V1,
    SCHEMA_V2,
    Ceiling,
    Node,
    Prediction,
    Result,
    Sample,
    Step,
    from_json,
    load,
    load_result,
    prediction_from_json,
    sample_from_json,
    side_of_cause,
    to_json,
    write_atomic,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "results"
REAL = ("open_minimal", "run_loopback", "scenario_article", "scenario_nat")


def raw(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc


def semantic(value: Any) -> Any:
    """JSON with the keys that hold null or an empty list/object dropped: readers take an
    absent key, null and empty alike."""
    if isinstance(value, dict):
        return {k: semantic(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [semantic(v) for v in value]
    return value


# --- the four real documents ---------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL)
def test_fixture_round_trips(name: str) -> None:
    r = load_result(FIXTURES / f"{name}.json")
    assert from_json(to_json(r), source="again") == r
    assert to_json(from_json(to_json(r), source="again")) == to_json(r)


def _upgraded(name: str) -> dict[str, Any]:
    """What /2 adds to each /1 fixture, written out by hand."""
    doc = raw(name)
    doc["schema"] = SCHEMA_V2
    if name == "run_loopback":  # written before ceilings said their side
        doc["ceiling"]["side"] = "client"
        doc["steps"][0]["ceiling"]["side"] = "client"
        # file-descriptors with the client's ETIMEDOUT: the server's accept() errors said so
        doc["steps"][1]["ceiling"]["side"] = "server"
    return doc


@pytest.mark.parametrize("name", REAL)
def test_fixture_reads_as_the_v1_document_upgraded(name: str) -> None:
    assert raw(name)["schema"] == SCHEMA_V1
    assert semantic(load(FIXTURES / f"{name}.json")) == semantic(_upgraded(name))


def test_what_the_model_holds() -> None:
    run = load_result(FIXTURES / "run_loopback.json")
    assert run.command == "run" and run.schema == SCHEMA_V2
    assert run.ceiling.reached and run.ceiling.count == 28232 and run.ceiling.side == "client"
    assert [s.name for s in run.steps] == ["ports", "server-fds"]
    assert run.steps[1].ceiling.side == "server"
    assert run.prediction.bounds[0].count == 28232
    assert run.memory is not None and run.memory.kernel_source == "slabinfo"
    assert run.server is not None and run.server.errors == {"file-descriptors": 9000}
    assert run.limits is not None  # the conncap.limits/1 document, as JSON
    assert run.timeline[-1].listen_overflows == 10024 and run.timeline[-1].step == "server-fds"
    assert run.series("held")[-1] == (25.6, 24087)
    assert run.step("ports") is run.steps[0] and run.step("nope") is None

    nat = load_result(FIXTURES / "scenario_nat.json")
    assert nat.scenario is not None and nat.scenario.passed is True
    assert nat.prediction == Prediction()  # written as {}: no model for a NAT
    assert nat.steps[0].attribution is not None and nat.steps[0].attribution.side == "network"
    assert nat.steps[0].counters["conntrack_insert_failed"] is not None
    assert len(nat.checks) == nat.scenario.checks

    opened = load_result(FIXTURES / "open_minimal.json")
    assert opened.ceiling == Ceiling.none()
    (whole,) = opened.steps_or_self()
    assert whole.established_peak == 1000 and whole.ceiling == Ceiling.none()
    assert run.steps_or_self() == run.steps


def test_unknown_sample_keys_are_kept() -> None:
    doc = raw("open_minimal")
    doc["timeline"][0]["gc_pauses"] = 3
    doc["timeline"][0]["probe"] = {"name": "x"}
    r = from_json(doc, source="t.json")
    assert r.timeline[0].extra == {"gc_pauses": 3, "probe": {"name": "x"}}
    assert r.timeline[0].figure("gc_pauses") == 3 and r.timeline[0].figure("probe") is None
    assert to_json(r)["timeline"][0]["gc_pauses"] == 3  # type: ignore[index,call-overload]


# --- /1 documents without side -------------------------------------------------------------------


def _v1_ceiling(**kw: Any) -> dict[str, Any]:
    doc = raw("open_minimal")
    doc["ceiling"] = {"reached": True, "count": 28232, **kw}
    return doc


@pytest.mark.parametrize(
    ("ceiling", "side"),
    [
        ({"cause": "ephemeral-ports", "errno": "EADDRNOTAVAIL"}, "client"),
        ({"cause": "ephemeral-ports"}, "client"),
        ({"cause": "file-descriptors", "errno": "EMFILE", "op": "connect"}, "client"),
        ({"cause": "file-descriptors", "errno": "EMFILE", "op": "accept"}, "server"),
        ({"cause": "file-descriptors", "errno": "ETIMEDOUT"}, "server"),
        ({"cause": "server-refused", "errno": "ECONNREFUSED"}, "server"),
        ({"cause": "timeout", "errno": "ETIMEDOUT"}, "network"),
        ({"cause": "server-backlog", "errno": "ETIMEDOUT"}, "server"),
        ({"cause": "conntrack"}, "network"),
        ({"cause": "something-new"}, "unknown"),
    ],
)
def test_v1_ceiling_gets_its_side_from_the_catalogue(ceiling: dict[str, Any], side: str) -> None:
    r = from_json(_v1_ceiling(**ceiling), source="old.json")
    assert r.ceiling.side == side


def test_v1_ceiling_without_advice_gets_the_catalogues_for_the_documents_os() -> None:
    doc = _v1_ceiling(cause="ephemeral-ports", errno="EADDRNOTAVAIL")
    doc["host"]["os"] = "win32"
    c = from_json(doc, source="old.json").ceiling
    assert c.knob is not None and "netsh" in c.knob  # the Windows knob, not this host's
    assert c.advice[0].startswith("netsh int ipv4 set dynamicport")
    assert c.op is None and c.evidence is None


def test_side_of_cause_literals() -> None:
    assert side_of_cause("ephemeral-ports") == "client"
    assert side_of_cause("memory", "ENOBUFS", "accept") == "server"
    assert side_of_cause("server-closed", "ECONNRESET") == "server"


def test_v2_requires_what_v1_could_omit() -> None:
    doc = to_json(load_result(FIXTURES / "open_minimal.json"))
    del doc["ceiling"]["side"]  # type: ignore[union-attr,arg-type]
    with pytest.raises(UsageError, match=r"ceiling\.side: missing"):
        from_json(doc, source="new.json")
    doc = to_json(load_result(FIXTURES / "open_minimal.json"))
    del doc["command"]
    with pytest.raises(UsageError, match=r"new\.json: damaged conncap result \(command: missing\)"):
        from_json(doc, source="new.json")


# --- damaged documents ----------------------------------------------------------------------------


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _delete(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


DAMAGED: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    (
        "run_loopback",
        "top int",
        _set(("requested",), "x"),
        'requested: expected an integer, got "x"',
    ),
    (
        "run_loopback",
        "bool is no int",
        _set(("held_at_end",), True),
        "held_at_end: expected an integer, got true",
    ),
    (
        "run_loopback",
        "step ceiling",
        _set(("steps", 1, "ceiling", "count"), "x"),
        'steps[1].ceiling.count: expected an integer, got "x"',
    ),
    (
        "run_loopback",
        "sample",
        _set(("timeline", 3, "rate"), [1]),
        "timeline[3].rate: expected a number, got a list",
    ),
    (
        "run_loopback",
        "sample map",
        _set(("timeline", 2, "failures_by_cause", "timeout"), 1.5),
        "timeline[2].failures_by_cause.timeout: expected an integer, got 1.5",
    ),
    (
        "run_loopback",
        "bound",
        _set(("prediction", "bounds", 1, "detail"), None),
        "prediction.bounds[1].detail: expected a string, got null",
    ),
    (
        "run_loopback",
        "memory",
        _set(("memory", "kernel_r2"), "high"),
        'memory.kernel_r2: expected a number, got "high"',
    ),
    (
        "run_loopback",
        "advice",
        _set(("ceiling", "advice", 0), 7),
        "ceiling.advice[0]: expected a string, got 7",
    ),
    (
        "run_loopback",
        "timeline type",
        _set(("timeline",), {}),
        "timeline: expected a list, got an object",
    ),
    (
        "run_loopback",
        "failures type",
        _set(("failures",), []),
        "failures: expected an object, got a list",
    ),
    (
        "run_loopback",
        "missing in sample",
        _delete(("timeline", 0, "held")),
        "timeline[0].held: missing",
    ),
    (
        "run_loopback",
        "missing in step",
        _delete(("steps", 0, "ceiling")),
        "steps[0].ceiling: missing",
    ),
    (
        "run_loopback",
        "reached missing",
        _delete(("ceiling", "reached")),
        "ceiling.reached: missing",
    ),
    (
        "run_loopback",
        "limits not an object",
        _set(("limits",), "linux"),
        'limits: expected an object, got "linux"',
    ),
    (
        "scenario_nat",
        "side",
        _set(("ceiling", "side"), "moon"),
        'ceiling.side: expected one of client, server, network, host, unknown, got "moon"',
    ),
    (
        "scenario_nat",
        "expectation",
        _set(("expectations", 2, "kind"), "maybe"),
        'expectations[2].kind: expected one of check, note, got "maybe"',
    ),
    (
        "scenario_nat",
        "observed deep",
        _set(("steps", 0, "observed", "snat", "gateway_ports"), float("nan")),
        "steps[0].observed.snat.gateway_ports: expected a finite number, got nan",
    ),
    (
        "scenario_nat",
        "counters",
        _set(("steps", 1, "counters", "listen_drops"), "0"),
        'steps[1].counters.listen_drops: expected an integer, got "0"',
    ),
    (
        "scenario_article",
        "server",
        _set(("server", "ports", 0), "80"),
        'server.ports[0]: expected an integer, got "80"',
    ),
    (
        "open_minimal",
        "command",
        _set(("command",), "serve"),
        'command: expected one of open, run, scenario, got "serve"',
    ),
    (
        "open_minimal",
        "duration NaN",
        _set(("duration_s",), float("inf")),
        "duration_s: expected a number, got inf",
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "where"), [(n, e, w) for n, _, e, w in DAMAGED], ids=[d[1] for d in DAMAGED]
)
def test_damaged_document_names_the_key_path(
    name: str, edit: Callable[[dict[str, Any]], None], where: str
) -> None:
    doc = raw(name)
    edit(doc)
    with pytest.raises(UsageError) as err:
        from_json(doc, source="run.json")
    assert str(err.value) == f"run.json: damaged conncap result ({where})"
    assert err.value.exit_status == ExitStatus.USAGE


def test_missing_top_level_keys_of_a_v1_document() -> None:
    doc = raw("open_minimal")
    del doc["timeline"], doc["ceiling"]
    with pytest.raises(
        UsageError, match=r"^x\.json: damaged conncap result \(missing ceiling, timeline\)$"
    ):
        from_json(doc, source="x.json")


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([1, 2], "not a conncap result (a JSON list, not an object)"),
        ({"schema": "other.tool/3"}, "not a conncap result (schema is 'other.tool/3'"),
        (
            {"schema": "conncap.result/3"},
            "a conncap.result/3 document, which this conncap cannot read",
        ),
    ],
)
def test_not_a_result(doc: object, words: str) -> None:
    with pytest.raises(UsageError, match=r"^f\.json: ") as err:
        from_json(doc, source="f.json")
    assert words in str(err.value)


# --- hostile files --------------------------------------------------------------------------------


def _load_error(path: Path | str, **kw: Any) -> str:
    with pytest.raises(UsageError) as err:
        load(path, **kw)
    assert err.value.exit_status == ExitStatus.USAGE
    text = str(err.value)
    assert "\n" not in text
    return text


def test_file_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    p = tmp_path / "big.json"
    p.write_text(json.dumps(raw("open_minimal")))
    assert "larger than a conncap result can be (100 bytes at most)" in _load_error(
        p, max_bytes=100
    )


def test_endless_device_is_read_only_up_to_the_limit() -> None:
    assert "larger than a conncap result can be (4,096 bytes at most)" in _load_error(
        "/dev/zero", max_bytes=4096
    )


def test_empty_device_and_directory(tmp_path: Path) -> None:
    assert "invalid JSON" in _load_error("/dev/null")
    assert "is a directory" in _load_error(tmp_path)
    assert "no such file" in _load_error(tmp_path / "nope.json")


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in _load_error(p)
    q = tmp_path / "deep-in-plan.json"
    doc = raw("open_minimal")
    doc["plan"] = {"targets": "PLACEHOLDER"}
    q.write_text(json.dumps(doc).replace('"PLACEHOLDER"', "[" * 200 + "]" * 200))
    assert "plan.targets" in _load_error(q) and "nested more than 64 levels" in _load_error(q)


def test_huge_integer_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "huge.json"
    p.write_text(
        json.dumps(raw("open_minimal")).replace('"requested": 1000', '"requested": ' + "9" * 5000)
    )
    assert "invalid JSON" in _load_error(p) and "digits" in _load_error(p)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(tmp_path: Path, constant: str) -> None:
    p = tmp_path / "nan.json"
    p.write_text(
        json.dumps(raw("open_minimal")).replace('"duration_s": 1.2', f'"duration_s": {constant}')
    )
    assert "not a conncap result (invalid JSON: " in _load_error(p)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin.json"
    p.write_bytes(b'{"schema": "\xff"}')
    assert "not UTF-8" in _load_error(p)


# --- writing --------------------------------------------------------------------------------------


def test_write_atomic_takes_a_result_and_writes_v2(tmp_path: Path) -> None:
    r = load_result(FIXTURES / "run_loopback.json")
    path = write_atomic(tmp_path / "r.json", r)
    assert json.loads(path.read_text())["schema"] == SCHEMA_V2
    assert load_result(path) == r


def test_write_atomic_refuses_non_finite_numbers(tmp_path: Path) -> None:
    r = load_result(FIXTURES / "open_minimal.json")
    bad = dataclasses.replace(r, duration_s=float("nan"))
    with pytest.raises(ValueError, match=r"non-finite number \(at duration_s\)"):
        write_atomic(tmp_path / "r.json", bad)
    doc = copy.deepcopy(raw("open_minimal"))
    doc["timeline"][1]["rate"] = float("inf")
    with pytest.raises(ValueError, match=r"at timeline\[1\]\.rate"):
        write_atomic(tmp_path / "r.json", doc)
    assert list(tmp_path.iterdir()) == []


# --- building one ---------------------------------------------------------------------------------


def test_ceiling_factories() -> None:
    none = Ceiling.none()
    assert not none.reached and none.side is None and none.advice == ()
    c = Ceiling.reached_at(
        count=3977, cause="ephemeral-ports", side="client", errno="EADDRNOTAVAIL", os_name="linux"
    )
    assert c.reached and c.knob and "ip_local_port_range" in c.knob
    assert c.advice and c.windows and "netsh" in c.windows
    assert c.at_step("ports").step == "ports"
    odd = Ceiling.reached_at(count=1, cause="not-a-cause", side="unknown")
    assert (odd.knob, odd.advice, odd.windows) == (None, (), None)


def test_a_result_built_in_code_round_trips() -> None:
    step = Step(
        name="ports", title="one pool", t_start=0.0, established_peak=10, ceiling=Ceiling.none()
    )
    r = Result(
        command="run",
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat(),
        duration_s=1.5,
        requested=10,
        established_peak=10,
        held_at_end=10,
        failures={},
        ceiling=Ceiling.none(),
        prediction=Prediction.unknown("no step ran"),
        timeline=(Sample(t=0.0, held=0, failures=0, rate=0.0, failures_by_cause={}),),
        steps=(step,),
        notes=("a note",),
    )
    doc = to_json(r)
    assert doc["schema"] == SCHEMA_V2 and next(iter(doc)) == "schema"
    assert doc["prediction"] == {"reason": "no step ran"}
    assert set(doc["ceiling"]) == {  # type: ignore[arg-type]
        "reached", "count", "cause", "side", "errno", "op", "knob", "advice", "windows", "evidence",
    }  # fmt: skip
    assert from_json(json.loads(json.dumps(doc)), source="mem") == r


def test_parts_for_the_writers() -> None:
    doc = raw("run_loopback")
    assert prediction_from_json(doc["prediction"]).bounds[0].count == 28232
    assert sample_from_json(doc["timeline"][-1]).listen_overflows == 10024
    with pytest.raises(
        UsageError, match=r"^sampler: damaged conncap result \(sample\.held: missing\)$"
    ):
        sample_from_json({"t": 0.0}, source="sampler")


#: The churn object of an ``open --lifetime`` result (docs/result-schema.md), trimmed.
CHURN: dict[str, Any] = {
    "rate": 2000.0,
    "lifetime": 0.05,
    "close": "fin",
    "closer": "client",
    "duration": 3.0,
    "opened": 5890,
    "closed": 5890,
    "closed_by_peer": 0,
    "failed": 12,
    "achieved_rate": 1963.3,
    "time_wait_peak": 5870,
    "time_wait_at_end": 5801,
    "first_failure_s": 2.94,
    "first_failure_errno": "EADDRNOTAVAIL",
    "stopped_by": "time-wait",
    "sustainable_rate_predicted": 471.9,
    "predicted_unbounded": False,
    "exhausts_predicted": True,
    "time_to_exhaustion_predicted_s": 2.95,
    "sustainable_rate_measured": 98.2,
    "sustainable_rate_measured_basis": "5,890 connections opened before the ports ran out",
    "prediction": {
        "holder": "client",
        "time_wait": {"seconds": 60, "detail": "Linux: TCP_TIMEWAIT_LEN", "estimate": False},
        "ports": 5900,
        "sustainable_rate": 471.9,
        "notes": ["a note"],
        "line": "at 2,000/s the client's 5,900 ports run out after 2.9 s",
    },
}


def test_a_churn_result_round_trips_with_its_churn_object() -> None:
    doc = raw("open_minimal")
    doc["churn"] = copy.deepcopy(CHURN)
    result = from_json(doc, source="churn.json")
    assert result.churn == CHURN
    again = to_json(result)
    assert again["churn"] == CHURN
    assert from_json(json.loads(json.dumps(again)), source="mem") == result
    without = from_json(raw("open_minimal"), source="open.json")
    assert without.churn is None and "churn" not in to_json(without)


@pytest.mark.parametrize(("churn", "words"), [(3, "churn: expected an object, got 3")])
def test_a_damaged_churn_object_is_one_line(churn: object, words: str) -> None:
    doc = raw("open_minimal")
    doc["churn"] = churn
    with pytest.raises(UsageError, match=words):
        from_json(doc, source="churn.json")


def _cluster_result() -> Result:
    """An ``open --cluster`` result: two nodes, each with its own timeline."""

    def sample(t: float, held: int) -> Sample:
        return Sample(t=t, held=held, failures=0, rate=100.0, failures_by_cause={})

    def node(nid: str, held: int, at: float) -> Node:
        return Node(
            node_id=nid,
            address=f"10.0.0.{nid}",
            hostname=f"host{nid}",
            share=held + 40,
            held=held,
            attempts=held + 2,
            prediction=Prediction(count=held, cause="ephemeral-ports", side="client"),
            ceiling=Ceiling.reached_at(
                count=held, cause="ephemeral-ports", side="client", errno="EADDRNOTAVAIL"
            ),
            matches_prediction=True,
            failures={"EADDRNOTAVAIL": 2},
            failures_by_cause={"ephemeral-ports": 2},
            limits={"port_range": [40000, 40000 + held - 1], "nofile": 1024},
            ray_cost={"listeners_in_range": 0, "ports": [], "object_store_bytes": 80_000_000},
            clock_offset_s=0.00003,
            clock_rtt_s=0.0008,
            stopped_at_s=at,
            timeline=(sample(0.0, 0), sample(at, held)),
        )

    nodes = (node("1", 50, 0.5), node("2", 80, 0.8))
    return Result(
        command="open",
        duration_s=2.0,
        plan={"cluster": "10.0.0.1:20379", "nodes": 2, "count": 240},
        requested=240,
        established_peak=130,
        held_at_end=130,
        failures={"EADDRNOTAVAIL": 4},
        ceiling=dataclasses.replace(nodes[0].ceiling, count=130),
        prediction=Prediction(count=130, cause="ephemeral-ports"),
        timeline=(sample(0.0, 0), sample(0.5, 110), sample(0.8, 130)),
        nodes=nodes,
    )


def test_a_cluster_result_round_trips_with_its_nodes() -> None:
    r = _cluster_result()
    doc = to_json(r)
    nodes = doc["nodes"]
    assert isinstance(nodes, list) and len(nodes) == 2
    assert "lost" not in nodes[0]  # a default is left out; it reads back as False
    again = from_json(json.loads(json.dumps(doc)), source="cluster.json")
    assert again == r
    assert again.nodes[1].timeline[-1].held == 80
    assert again.first_stop is not None and again.first_stop.node_id == "1"
    assert from_json(raw("open_minimal"), source="open.json").first_stop is None


CLUSTER_DAMAGED: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_delete(("nodes", 0, "address")), "nodes[0].address: missing"),
    (_set(("nodes", 1, "held"), "80"), 'nodes[1].held: expected an integer, got "80"'),
    (_delete(("nodes", 0, "ceiling", "side")), "nodes[0].ceiling.side: missing"),
    (_set(("nodes", 0, "lost"), "no"), 'nodes[0].lost: expected true or false, got "no"'),
    (
        _set(("nodes", 1, "timeline", 1, "t"), None),
        "nodes[1].timeline[1].t: expected a number, got null",
    ),
    (_set(("nodes", 0, "limits"), [1]), "nodes[0].limits: expected an object, got a list"),
    (_set(("nodes",), {}), "nodes: expected a list, got an object"),
]


@pytest.mark.parametrize(("edit", "where"), CLUSTER_DAMAGED)
def test_a_damaged_node_names_its_key_path(
    edit: Callable[[dict[str, Any]], None], where: str
) -> None:
    doc = json.loads(json.dumps(to_json(_cluster_result())))
    edit(doc)
    with pytest.raises(UsageError) as err:
        from_json(doc, source="cluster.json")
    assert str(err.value) == f"cluster.json: damaged conncap result ({where})"
