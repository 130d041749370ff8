"""The named scenarios and how one is run: topology up, steps, document, topology down.

Each scenario lives in its own module with a ``run(sr: ScenarioRun) -> None``; this module
knows their names, one-line titles and what each shows, and imports a module only to run it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conncap.errors import RunFailed, UsageError
from conncap.result import Result, Sample


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    module: str
    title: str
    shows: str
    nat: bool = False
    """Needs nftables or iptables (a masquerading gateway)."""

    def load(self) -> Callable[[Any], None]:
        mod = importlib.import_module(f"conncap.scenarios.{self.module}")
        fn: Callable[[Any], None] = mod.run
        return fn


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "article",
            "article",
            "the founding article on Linux: a client's port range is its ceiling",
            "ports 1024-5000 stop one client at 3,976 connections (EADDRNOTAVAIL; the article's "
            "3,977 with every port bound); raising the range as MaxUserPort did gives 8,976, "
            "then 1024-65535 runs into the next limit, the process's descriptors; the server "
            "uses one port and tells every connection apart by its source port",
        ),
        Scenario(
            "four-tuple",
            "four_tuple",
            "more source IPs, then more destination ports: the counts multiply",
            "one port range per (source IP, destination): N source IPs give N times the "
            "ports, M destination ports M times that, as the model predicts",
        ),
        Scenario(
            "many-clients",
            "many_clients",
            "many client hosts against one server port: the server's own limit binds",
            "the server holds the sum of several clients, told apart by source IP, until its "
            "descriptors run out (accept() EMFILE; the clients only see time-outs)",
        ),
        Scenario(
            "nat",
            "nat",
            "clients behind a NAT gateway: the gateway's source ports run out (SNAT)",
            "every client shares the gateway's masquerade ports towards one destination; "
            "once they are taken, new connections are dropped at the gateway (conntrack "
            "insert_failed) and the clients time out; a second destination port gives as "
            "many again",
            nat=True,
        ),
        Scenario(
            "server-fds",
            "server_fds",
            "a server with a small ulimit -n: handshakes complete into the backlog, then stall",
            "the server stops accepting at its descriptor limit; the client's connects still "
            "complete into the accept queue, then time out; conncap names the server's "
            "descriptors from the server's own evidence (accept() EMFILE, full descriptor "
            "table, ListenOverflows), not from the client's errno",
        ),
        Scenario(
            "cluster",
            "cluster",
            "a Ray cluster of client hosts: one coordinated open, one verdict per node",
            "K client hosts, each a Ray node with its own narrow port range, open against one "
            "server in one coordinated run (conncap open --cluster): every node stops at its "
            "own predicted ceiling (ephemeral-ports), the server holds the sum; needs "
            "pip install 'conncap[ray]'",
        ),
        Scenario(
            "churn",
            "churn",
            "opening and closing at a rate: TIME_WAIT and the sustainable rate",
            "with a narrow port range and tcp_tw_reuse 0, FIN closes by the client run out of "
            "ports at ports ÷ rate seconds, every port in TIME_WAIT (cause time-wait), as the "
            "churn model predicts; RST closes, the server closing first (TIME_WAIT on its "
            "side) and tcp_tw_reuse 2 on loopback keep going; and what the founding "
            "article's Windows range would sustain",
        ),
        Scenario(
            "backlog",
            "backlog",
            "a server that stops accepting, with a small backlog: SYNs dropped and retried",
            "while the server does not accept, only backlog + 1 handshakes complete; the "
            "rest overflow the accept queue (ListenOverflows), the clients retry their SYNs "
            "and time out; once the server accepts again, the same burst goes through: the "
            "backlog limits bursts, not how many connections a server holds",
        ),
    )
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(
            f"no scenario {name!r}; choose one of {', '.join(SCENARIOS)} "
            "(`conncap scenario --list` says what each shows)"
        ) from None


@dataclass(frozen=True)
class Outcome:
    result: Result
    passed: bool


def run_scenario(
    name: str,
    *,
    scale: str = "full",
    out: Callable[[str], None] | None = None,
    json_path: str | Path | None = None,
    options: Mapping[str, int | str] | None = None,
    on_sample: Callable[[Sample, Any], None] | None = None,
    on_event: Callable[[str, Mapping[str, object]], None] | None = None,
) -> Outcome:
    """Build the scenario's namespaces, run it, remove everything, and return (and write,
    with ``json_path``) its conncap.result/1 document. On Ctrl-C the document of what was
    measured is still written, then KeyboardInterrupt goes on."""
    from conncap.engine.results import host_info
    from conncap.netns import Topology, check_support
    from conncap.result import Scenario, write_atomic
    from conncap.scenarios.document import build_result
    from conncap.scenarios.framework import ScenarioRun

    scenario = get(name)
    check_support().require(nat=scenario.nat)
    body = scenario.load()
    say = out if out is not None else (lambda _line: None)
    say(f"scenario {scenario.name}: {scenario.title}")
    result: Result | None = None
    written = json_path is None
    with Topology() as topo:
        sr = ScenarioRun(
            topo, scale=scale, out=say, options=options, on_sample=on_sample, on_event=on_event
        )
        try:
            body(sr)
        except KeyboardInterrupt:
            sr.interrupted = True
            raise
        except Exception as exc:
            sr.error = str(exc)
            raise
        finally:
            sr.close()
            result = build_result(
                scenario=Scenario(
                    name=scenario.name, title=scenario.title, shows=scenario.shows, scale=scale
                ),
                steps=[s.result() for s in sr.steps],
                timeline=sr.timeline,
                expectations=sr.expectations,
                started_at=sr.started_at,
                duration_s=sr.now(),
                host=host_info(),
                layout=sr.layout,
                settings=sr.settings,
                notes=sr.notes,
                headline=sr.headline,
                story=sr.story,
                interrupted=sr.interrupted,
                error=sr.error,
                nodes=sr.nodes,
            )
            if json_path is not None and (sr.steps or sr.interrupted):
                try:
                    write_atomic(json_path, result)
                except OSError as exc:
                    # one line; an exception already on its way out keeps its place
                    sys.stderr.write(f"conncap: cannot write {json_path}: {exc}\n")
                    written = False
                else:
                    written = True
    assert result is not None and result.scenario is not None
    if not written:
        raise RunFailed(f"the result could not be written to {json_path}")
    return Outcome(result, bool(result.scenario.passed))
