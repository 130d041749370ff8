"""The cluster run's edges: no Ray without --cluster, the agent on loopback (no Ray), and the
``cluster`` scenario (Ray nodes in namespaces; skips with the reason without Ray or root)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conncap.cluster.agent import Agent
from conncap.engine import ServerPool
from conncap.result import load_result

RAY_MISSING = (
    None
    if importlib.util.find_spec("ray") is not None
    else "Ray is not installed: pip install 'conncap[ray]' (or CONNCAP_TEST_RAY=1 "
    "scripts/install-test-deps)"
)


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_without_cluster_ray_is_never_imported() -> None:
    got = _python(
        """
        import contextlib, io, sys
        import conncap, conncap.cluster
        from conncap.cli import main
        from conncap.engine import ServerPool
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--help"])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["open", "--help"])
        with ServerPool(bind="127.0.0.1", ports=[0]) as srv:
            code = main(["open", f"127.0.0.1:{srv.ports[0]}", "--count", "5", "--timeout", "2"])
        assert code == 0, code
        print("RAY" if "ray" in sys.modules else "NO-RAY")
        """
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().splitlines()[-1] == "NO-RAY"


def test_cluster_without_ray_says_how_to_get_it() -> None:
    got = _python(
        """
        import sys
        sys.modules["ray"] = None  # as if it were not installed
        from conncap.cli import main
        sys.exit(main(["open", "127.0.0.1:9", "--cluster", "auto"]))
        """
    )
    assert got.returncode == 2
    assert "pip install 'conncap[ray]'" in got.stderr


def test_nodes_needs_cluster() -> None:
    from conncap.cli import main

    assert main(["open", "127.0.0.1:9", "--nodes", "2"]) == 2


def test_the_agent_measures_its_share_on_loopback() -> None:
    with ServerPool(bind="127.0.0.1", ports=[0]) as srv:
        agent = Agent(
            {
                "targets": [f"127.0.0.1:{srv.ports[0]}"],
                "share": 30,
                "timeout": 2.0,
                "max_duration_s": 20.0,
                "object_store_bytes": 80_000_000,
            }
        )
        info = agent.info()
        assert info["share"] == 30 and info["prediction"]["count"] is not None
        # the server's listener is inside this host's ephemeral range: counted, subtracted
        assert srv.ports[0] in info["ray_cost"]["ports"]
        assert info["ray_cost"]["object_store_bytes"] == 80_000_000
        t_go = agent.clock() + 0.2
        assert agent.start(t_go)
        end = time.monotonic() + 15
        polled = agent.poll(0)
        while not polled["ramp_over"] and time.monotonic() < end:
            time.sleep(0.1)
            polled = agent.poll(0)
        assert polled["ramp_over"]
        assert srv.stats().held == 30
        out = agent.stop(polled["cursor"])
    final = out["final"]
    assert final["held"] == 30 and final["stop_reason"] == "count"
    assert all(s["t_wall"] >= t_go for s in polled["samples"])


@pytest.mark.netns
@pytest.mark.skipif(RAY_MISSING is not None, reason=RAY_MISSING or "")
def test_scenario_cluster_three_nodes(tmp_path: Path) -> None:
    from conncap.scenarios import run_scenario

    before = set(os.listdir("/tmp"))
    outcome = run_scenario(
        "cluster", scale="small", options={"nodes": 3}, json_path=tmp_path / "c.json", out=print
    )
    failed = [e for e in outcome.result.expectations if e.ok is False]
    assert outcome.passed, failed
    step = outcome.result.steps[0]
    assert step.held == 250 and step.server is not None and step.server.held == 250
    # the cluster's nodes, each with its own timeline, reach the scenario's result
    nodes = outcome.result.nodes
    assert sorted(n.held for n in nodes) == [50, 80, 120]
    assert all(n.timeline and n.timeline[-1].held == n.held for n in nodes)
    assert load_result(tmp_path / "c.json").nodes == nodes
    # no Ray process anywhere in this session's namespaces, no temp dir left
    left = subprocess.run(["pgrep", "-f", "conncap-.*-cli"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
    assert not [d for d in set(os.listdir("/tmp")) - before if d.startswith("cc-ray-")]


@pytest.mark.netns
@pytest.mark.skipif(RAY_MISSING is not None, reason=RAY_MISSING or "")
def test_run_target_cluster_three_nodes(tmp_path: Path) -> None:
    """``conncap run --target SERVER:PORT --cluster``: every node's step 1 stops at its range,
    step 2 (its two addresses) at twice that, each as predicted; one run result with steps
    and nodes that ``conncap report`` renders."""
    from conncap import report
    from conncap.scenarios import run_scenario

    before = set(os.listdir("/tmp"))
    outcome = run_scenario(
        "cluster",
        scale="small",
        options={"nodes": 3, "command": "run"},
        json_path=tmp_path / "c.json",
        out=print,
    )
    failed = [e for e in outcome.result.expectations if e.ok is False]
    assert outcome.passed, failed
    nodes = outcome.result.nodes
    assert sorted(n.held for n in nodes) == [100, 160, 240]
    assert sorted(n.prediction.count or 0 for n in nodes) == [100, 160, 240]
    assert all(n.ceiling.cause == "ephemeral-ports" for n in nodes)
    step = outcome.result.steps[0]
    assert step.held == 500 and step.server is not None and step.server.held == 500
    assert "<html" in report.render(outcome.result).lower()
    left = subprocess.run(["pgrep", "-f", "conncap-.*-cli"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
    assert not [d for d in set(os.listdir("/tmp")) - before if d.startswith("cc-ray-")]
