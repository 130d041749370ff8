"""Shared by the report tests: the result fixtures and the hostile strings."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from conncap.result import Result, from_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"
RUN = FIXTURES / "run_loopback.json"
OPEN = FIXTURES / "open_minimal.json"
#: Real `conncap scenario` results, trimmed (scenario_fixture.py): expectations, attribution,
#: observed.
SCENARIO = FIXTURES / "scenario_article.json"
NAT = FIXTURES / "scenario_nat.json"


def generator() -> ModuleType:
    """tests/fixtures/results/generate.py: the inputs RUN was built from (slopes, limits), so
    tests derive expected figures from them rather than copying the code's output."""
    spec = importlib.util.spec_from_file_location("results_generate", FIXTURES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Strings that would act if they reached the page unescaped.
PAYLOADS = (
    '<script>document.body.setAttribute("data-pwned","1")</script>',
    "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">",
    "--><svg onload=\"document.body.setAttribute('data-pwned','3')\">",
    "$\\alpha$ {0} %s &amp; </style></title>",
)
#: Maps whose keys come from the outside (errno names, causes, fact names, source IPs).
_KEYED = {
    "failures",
    "failures_by_cause",
    "facts",
    "errors",
    "per_source_ip",
    "implied",
    # a scenario's: the observed tables, the kernel counters and the server's errors
    "observed",
    "counters",
    "per_peer_ip",
    "per_local_port",
    "errors_during_step",
    "errors_by_errno",
}


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def typed(doc: dict[str, Any]) -> Result:
    """A result document (as a test changed it) as the :class:`Result` the report reads."""
    return from_json(doc, source="result.json")


#: Keys whose strings are one of a few words in the schema: a payload there makes the document
#: invalid (the loader refuses it), so they are left as they are.
_VOCABULARY = ("schema", "command", "side", "kind")


def poison(value: Any, key: str = "", counter: list[int] | None = None) -> Any:
    """Append a payload to every string (and to every key of the outside-keyed maps)."""
    counter = counter if counter is not None else [0]

    def payload() -> str:
        counter[0] += 1
        return PAYLOADS[counter[0] % len(PAYLOADS)]

    if isinstance(value, str):
        if key == "step":  # one payload per step name, as a document has one name per step
            return value + PAYLOADS[len(value) % len(PAYLOADS)]
        return value if key in _VOCABULARY else value + payload()
    if isinstance(value, list):
        return [poison(v, key, counter) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            new_key = k + payload() if key in _KEYED else k
            out[new_key] = poison(v, k, counter)
        return out
    return value


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, re.S)


def cluster() -> Result:
    """An ``open --cluster`` result as ``cluster_result`` builds it (no Ray): three nodes
    ramping 100 connections/s to 50, 80 and 120 ports, the third lost after 1 s."""
    from conncap.cluster.coordinate import ClusterRun, NodeRef, NodeRun, Offset
    from conncap.cluster.verdict import cluster_result

    runs = []
    for i, (ports, lost) in enumerate(((50, False), (80, False), (120, True))):
        nr = NodeRun(NodeRef(f"node{i}-0123456789", f"10.0.0.{i + 1}"), offset=Offset(0.0, 0.001))
        nr.info = {
            "hostname": f"cli{i}",
            "share": 160,
            "os": "linux",
            "limits": {"port_range": [40000, 40000 + ports - 1], "nofile": 1024},
            "ray_cost": {"listeners_in_range": 0, "ports": [], "object_store_bytes": 8 << 20},
            "prediction": {"count": ports, "cause": "ephemeral-ports", "side": "client"},
        }
        end = 1.0 if lost else 2.0
        nr.samples = [
            {
                "t_wall": 100.0 + t / 4,
                "held": min(ports, 25 * t),
                "failures": 3 if 25 * t > ports else 0,
                "rate": 100.0,
                "failures_by_cause": {"ephemeral-ports": 3} if 25 * t > ports else {},
            }
            for t in range(int(end * 4) + 1)
        ]
        if lost:
            nr.lost, nr.lost_why = True, "The actor died unexpectedly (node died)"
        else:
            nr.final = {
                "held": ports,
                "attempts": ports + 3,
                "failures": {"EADDRNOTAVAIL": 3},
                "failures_by_cause": {"ephemeral-ports": 3},
                "ceiling": {
                    "reached": True,
                    "count": ports,
                    "cause": "ephemeral-ports",
                    "side": "client",
                    "errno": "EADDRNOTAVAIL",
                    "op": "connect",
                },
            }
        runs.append(nr)
    run = ClusterRun(runs, start_at=100.0, stop_reason="ramp-over", ended_at=102.5)
    return cluster_result(
        run, requested=480, address="10.0.0.1:20379", plan={"targets": ["10.0.9.1:8080"]}
    )


#: What a hostile server says: the report must show it as text.
HOSTILE_WORDS = "<script>document.body.setAttribute('data-pwned','0')</script>\\r\\n"


def against_a_server() -> Result:
    """An ``open`` against a server conncap does not own (issue 9): it answered with hostile
    words and closed, FIN and RST, one ICMP filter, its side read on this host with a rule."""
    import dataclasses

    from conncap.result import Ceiling, ServerCloses, ServerMessage, ServerProcess, TargetSide

    base = typed(load(OPEN))
    closes = ServerCloses(
        fin=120,
        rst=2,
        lifetimes=(40, 0, 2, 80),
        messages=(
            ServerMessage(HOSTILE_WORDS, 122, 120),
            ServerMessage("", 3, 0),
        ),
        icmp={"icmp 3/13": 4},
        unacked=5,
    )
    target = TargetSide(
        host="127.0.0.1",
        port=6379,
        listening=True,
        processes=(ServerProcess(4242, "redis-<b>server</b>", 29, 32),),
        accept_queue=0,
        backlog=511,
        established=20,
        syn_recv=0,
        rules=("-A INPUT -p tcp --dport 6379 -j REJECT <i>x</i>",),
        sources=("/proc/net/tcp", "ss -ltn", "/proc/PID/fd and limits"),
    )
    ceiling = Ceiling.reached_at(
        count=20,
        cause="server-closed",
        side="server",
        errno="EOF",
        evidence="the server answered and closed",
        certainty="certain",
    )
    return dataclasses.replace(base, closes=closes, target=target, ceiling=ceiling, summary=())
