"""``conncap run --churn`` in a namespace of our own with 200 client ports (40000-40199) and
tcp_tw_reuse 0: step 1 holds the range, then the churn step (its connections reset first)
opens at a rate the model says runs the range out halfway through the step, and does: cause
``time-wait``, the result's ``churn`` object, the summary's predicted vs measured rate. The
run's headline ceiling stays step 1's. Bounded: --count 300, a few seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conncap.netns import Topology

pytestmark = pytest.mark.netns

PORTS = 200


def test_run_churn_runs_a_narrow_range_out_with_time_wait(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with Topology() as topo:
        host = topo.add_host("runchurn")
        topo.sysctls_set(
            host,
            {
                "net.ipv4.ip_local_port_range": f"40000 {40000 + PORTS - 1}",
                "net.ipv4.tcp_tw_reuse": 0,
            },
        )
        argv = [
            sys.executable, "-m", "conncap", "run", "--count", "300", "--no-escalate",
            "--churn", "--plateau", "0.5", "--max-duration", "60", "-q", "--json", str(out),
        ]  # fmt: skip
        proc = topo.run(host, argv, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [s["name"] for s in doc["steps"]] == ["ports", "churn"]
    assert doc["ceiling"]["cause"] == "ephemeral-ports" and doc["ceiling"]["count"] == PORTS
    churn = doc["churn"]
    assert churn["close"] == "fin" and churn["lifetime"] == 0
    assert churn["exhausts_predicted"] is True
    assert churn["opened"] == PORTS  # every port once, then all of them in TIME_WAIT
    assert churn["stopped_by"] == "time-wait"
    assert churn["sustainable_rate_predicted"] == 3.333
    assert churn["sustainable_rate_measured"] == 3.3
    assert any(s.get("time_wait") for s in doc["timeline"])
    assert any(line.startswith("Churn: ") and "predicted 3.3/s" in line for line in doc["summary"])


def test_run_without_churn_has_no_churn_step() -> None:
    """The default run is unchanged: no --churn, no churn step or object (checked on the
    parsed config, no run needed)."""
    from conncap.run import RunConfig

    assert RunConfig().churn is False
    assert "churn" in RunConfig().to_json() and RunConfig().to_json()["churn"] is False
