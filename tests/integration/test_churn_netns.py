"""Churn on loopback in a namespace of our own (conncap.netns.Topology: removed however the
test ends), with 200 client ports (40000-40199) and tcp_tw_reuse set inside it:

* tcp_tw_reuse 0, FIN closes by the client at 100/s: the ports run out after 200 connections
  (every port waiting out TIME_WAIT), cause ``time-wait``, and the model predicted 200 ÷ 60 s;
* RST closes, or tcp_tw_reuse 2 (loopback): the same run opens everything it was asked to,
  as the model said beforehand.

``conncap open`` runs as a command inside the namespace, so its prediction reads that
namespace's sysctls. Assertions are about behaviour (counts, causes), never timing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conncap.engine import ServerPool
from conncap.netns import Topology
from conncap.netns.topology import Host

pytestmark = pytest.mark.netns

#: Outside 40000-40199, so every port of the range is the client's.
SERVER_PORT = 1000
PORTS = 200
RATE = 100


@pytest.fixture
def churn_ns() -> Iterator[tuple[Topology, Host]]:
    with Topology() as topo:
        host = topo.add_host("churn")
        topo.sysctls_set(host, {"net.ipv4.ip_local_port_range": f"40000 {40000 + PORTS - 1}"})
        yield topo, host


def _open(topo: Topology, host: Host, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "churn.json"
    argv = [
        sys.executable, "-m", "conncap", "open", f"127.0.0.1:{SERVER_PORT}",
        "--rate", str(RATE), "--lifetime", "0", "--duration", "4", "--max-duration", "30",
        "--json", str(out), *extra,
    ]  # fmt: skip
    proc = topo.run(host, argv, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def test_fin_closes_without_reuse_stop_at_the_port_count_with_cause_time_wait(
    churn_ns: tuple[Topology, Host], tmp_path: Path
) -> None:
    topo, host = churn_ns
    topo.sysctls_set(host, {"net.ipv4.tcp_tw_reuse": 0})
    with ServerPool(ports=(SERVER_PORT,), netns=host.name):
        doc = _open(topo, host, tmp_path)
    churn = doc["churn"]
    assert doc["stop_reason"] == "ceiling"
    assert doc["ceiling"]["cause"] == "time-wait"
    assert doc["ceiling"]["errno"] == "EADDRNOTAVAIL"
    assert "TIME_WAIT" in doc["ceiling"]["evidence"]
    assert churn["opened"] == PORTS  # each port once, then every one is in TIME_WAIT
    assert churn["first_failure_errno"] == "EADDRNOTAVAIL"
    assert churn["first_failure_s"] is not None
    assert churn["time_wait_peak"] >= PORTS // 2
    assert "time-wait" in doc["failures_by_cause"]
    # the model, before the run: 200 ports ÷ 60 s = 3.333/s; 100/s runs out after 2 s
    assert churn["sustainable_rate_predicted"] == 3.333
    assert churn["exhausts_predicted"] is True
    assert churn["time_to_exhaustion_predicted_s"] == 2.0
    assert churn["sustainable_rate_measured"] == 3.3  # 200 opened ÷ 60 s
    assert any("time_wait" in s for s in doc["timeline"])


@pytest.mark.parametrize(
    ("reuse", "close"), [(0, "rst"), (2, "fin")], ids=["rst-closes", "tw-reuse-2-loopback"]
)
def test_rst_or_loopback_reuse_keeps_going(
    churn_ns: tuple[Topology, Host], tmp_path: Path, reuse: int, close: str
) -> None:
    topo, host = churn_ns
    topo.sysctls_set(host, {"net.ipv4.tcp_tw_reuse": reuse})
    with ServerPool(ports=(SERVER_PORT,), netns=host.name):
        doc = _open(topo, host, tmp_path, "--close", close)
    churn = doc["churn"]
    assert doc["stop_reason"] == "count"
    assert not doc["ceiling"]["reached"]
    assert churn["opened"] == doc["requested"] == RATE * 4  # twice the port range
    assert churn["failed"] == 0 and churn["first_failure_s"] is None
    assert churn["exhausts_predicted"] is False  # the model said so beforehand
    if close == "rst":
        assert churn["predicted_unbounded"] is True
        assert churn["time_wait_peak"] == 0  # an RST leaves no TIME_WAIT
    else:
        assert churn["sustainable_rate_predicted"] == 200.0  # 200 ports ÷ 1 s reuse delay
        assert churn["time_wait_peak"] > 0  # TIME_WAIT sockets exist, connect() reuses them


def test_server_closing_first_holds_time_wait_on_its_side(
    churn_ns: tuple[Topology, Host], tmp_path: Path
) -> None:
    """serve --close-after: the server closes first, so the client's ports never wait out
    TIME_WAIT (the namespace's TIME_WAIT sockets are the server's) and the run keeps going."""
    topo, host = churn_ns
    topo.sysctls_set(host, {"net.ipv4.tcp_tw_reuse": 0})
    with ServerPool(ports=(SERVER_PORT,), netns=host.name, close_after=0.0) as srv:
        # the server closes at 0 s, before the client's 1 s (the model: 200 ports ÷ 1 s)
        doc = _open(topo, host, tmp_path, "--lifetime", "1", "--server-closes")
        server = srv.stats()
    churn = doc["churn"]
    assert doc["stop_reason"] == "count"
    assert churn["opened"] == RATE * 4 and churn["failed"] == 0
    # the server closed (nearly) all of them first; which side's deadline came first for a
    # few is timing, so only the majority is asserted
    assert churn["closed_by_peer"] + churn["closed"] == RATE * 4
    assert churn["closed_by_peer"] > churn["closed"]
    assert server.extra["closed_first"] > RATE * 2
    # the TIME_WAIT sockets are the server's, at most one per client port: a new SYN from a
    # port takes over the server's TIME_WAIT socket of that 4-tuple
    assert 0 < churn["time_wait_peak"] <= PORTS
    assert churn["closer"] == "server" and churn["exhausts_predicted"] is False
