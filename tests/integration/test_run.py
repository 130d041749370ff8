"""``conncap run`` for real, small and bounded: over loopback (reaches a small count, cleans up
on Ctrl-C, leaves nothing behind) and inside a network namespace made by the test with a
500-port range (step 1 stops at exactly 500 on ephemeral ports, as predicted; step 2 lifts it).
"""

from __future__ import annotations

import itertools
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

RUN = [sys.executable, "-m", "conncap", "run"]
#: Seconds any one conncap run in these tests may take (they take a few).
LIMIT = 90


def run_conncap(
    args: list[str], prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *RUN, *args],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def test_small_run_reaches_the_count_and_writes_json_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_conncap(
        [
            "--count",
            "300",
            "--plateau",
            "0.3",
            "--json",
            str(tmp_path / "r.json"),
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    doc = load(tmp_path / "r.json")
    assert doc == load(out / "result.json")
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert doc["command"] == "run" and doc["stop_reason"] == "count"
    assert doc["requested"] == 300 and doc["established_peak"] == 300
    assert not doc["ceiling"]["reached"]
    (step,) = doc["steps"]  # the count is reached in step 1: no step 2
    assert step["name"] == "ports" and step["established_peak"] == 300
    pred = step["prediction"]
    assert isinstance(pred["count"], int) and pred["count"] >= 300
    assert pred["line"].startswith("with 1 source IP and 1 destination port")
    assert step["comparison"]["text"].startswith("reached the requested 300, below the predicted")
    # the server listened outside the ephemeral range, on loopback
    lo, hi = doc["limits"]["facts"]["port_range"]["value"]
    for target in doc["plan"]["targets"]:
        host, port = target.rsplit(":", 1)
        assert host == "127.0.0.1" and not lo <= int(port) <= hi
    # a timeline of at least 1 Hz with the memory and server-side keys
    tl = doc["timeline"]
    assert len(tl) >= 3
    assert all(b["t"] - a["t"] <= 1.0 for a, b in itertools.pairwise(tl))
    for key in (
        "held",
        "rate",
        "kernel_bytes",
        "user_bytes_client",
        "user_bytes_server",
        "mem_available",
        "listen_overflows",
        "syn_retrans",
        "step",
    ):
        assert key in tl[-1], key
    assert tl[-1]["held"] == 300
    # /2 leaves out what was not measured (a 300-connection ramp may be too quick to fit)
    assert doc["memory"]["method"].startswith("least-squares slope")
    # the summary is printed and is the one stored
    assert "Summary" in proc.stdout
    for line in doc["summary"]:
        assert line in proc.stdout


def test_in_process_run_leaves_no_descriptor_or_process() -> None:
    from conncap.result import to_json
    from conncap.run import Experiment, RunConfig

    me = psutil.Process()
    fds_before = me.num_fds()
    doc = to_json(Experiment(RunConfig(count=200, plateau_s=0.1, max_duration=60)).run())
    assert doc["stop_reason"] == "count", doc.get("error")
    assert doc["held_at_end"] == 200
    assert me.children(recursive=True) == []
    assert me.num_fds() == fds_before


def _client_holding(pid: int, fds: int) -> list[psutil.Process]:
    """The run's workers once one client worker holds ``fds`` descriptors (else [])."""
    try:
        workers = psutil.Process(pid).children(recursive=True)
        for w in workers:
            if '"role": "client"' in " ".join(w.cmdline()) and w.num_fds() >= fds:
                return workers
    except psutil.NoSuchProcess:
        pass
    return []


def test_ctrl_c_stops_cleans_up_and_writes_what_was_measured(tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            *RUN,
            "--count",
            "100000",
            "--rate",
            "2000",
            "--server-workers",
            "1",
            "--client-workers",
            "1",
            "--json",
            str(result),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not workers:  # until connections are held
            time.sleep(0.1)
            workers = _client_holding(proc.pid, 100)
        assert workers, "the run did not start holding connections"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    doc = load(result)
    assert doc["stop_reason"] == "interrupted"
    assert doc["established_peak"] < 100000  # stopped long before the count
    assert doc["established_peak"] == max(s["held"] for s in doc["timeline"])
    assert "Traceback" not in err
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []


# ---- inside a network namespace ----------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def narrow_namespace() -> Iterator[str]:
    """A namespace made here, loopback up, ip_local_port_range 40000-40499 inside it only."""
    name = f"conncap-t-{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                "net.ipv4.ip_local_port_range=40000 40499",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        yield name
    finally:
        subprocess.run(
            ["ip", "netns", "delete", name], check=False, capture_output=True, timeout=30
        )


@pytest.mark.netns
def test_step1_stops_at_exactly_the_port_range_and_step2_lifts_it(
    narrow_namespace: str, tmp_path: Path
) -> None:
    result = tmp_path / "r.json"
    proc = run_conncap(
        ["--count", "1500", "--plateau", "0.3", "--json", str(result)],
        prefix=["ip", "netns", "exec", narrow_namespace],
    )
    assert proc.returncode == 0, proc.stderr
    doc = load(result)
    one, two = doc["steps"]
    assert one["ceiling"]["reached"] is True
    assert one["ceiling"]["count"] == 500
    assert one["ceiling"]["cause"] == "ephemeral-ports"
    assert one["ceiling"]["errno"] == "EADDRNOTAVAIL"
    assert one["prediction"]["count"] == 500
    assert one["prediction"]["cause"] == "ephemeral-ports"
    assert one["comparison"]["text"] == "predicted 500, measured 500 ✓"
    assert "predicted 500, measured 500 ✓" in proc.stdout
    # step 2 keeps step 1's 500 open and lifts past them to the count
    assert two["held_before"] == 500
    assert two["established_peak"] == 1500 > 500
    assert doc["stop_reason"] == "count" and doc["established_peak"] == 1500
    assert doc["ceiling"]["cause"] == "ephemeral-ports"  # the ceiling found, with its advice
    assert any("ip_local_port_range" in a for a in doc["ceiling"]["advice"])
    assert doc["ceiling"]["windows"]
    # it read the namespace's range, not the host's
    assert doc["limits"]["facts"]["port_range"]["value"] == [40000, 40499]


def test_a_client_worker_keeps_worker_fds_besides_its_connections() -> None:
    """The model's descriptor bound for run's steps counts CLIENT_WORKER_FDS per client worker."""
    from conncap.engine import ClientPool, OpenPlan, ServerPool, Target
    from conncap.engine.protocol import CLIENT_WORKER_FDS as WORKER_FDS

    with ServerPool(ports=(0,)) as server:
        port = server.ports[0]
        plan = OpenPlan(targets=(Target("127.0.0.1", port, port),), count=5, timeout_s=3.0)
        with ClientPool(plan) as pool:
            assert pool.wait(30)
            assert pool.stats().held == 5
            (pid,) = pool.pids()
            assert psutil.Process(pid).num_fds() == WORKER_FDS + 5
