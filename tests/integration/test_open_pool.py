"""ClientPool and `conncap open` against a ServerPool on loopback: exact counts, sharding,
source IPs, the result document, Ctrl-C, no leaks."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conncap.engine import ClientPool, OpenPlan, ServerPool, Target
from conncap.result import load


def test_count_is_exact_across_workers_ports_and_sources() -> None:
    before = set(os.listdir("/proc/self/fd"))
    with ServerPool(ports=(0, 0), workers=2) as srv:
        p1, p2 = srv.ports
        plan = OpenPlan(
            targets=(Target("127.0.0.1", p1, p1), Target("127.0.0.1", p2, p2)),
            count=301,
            workers=3,
            source_ips=("127.0.0.2", "127.0.0.3", "127.0.0.4"),
        )
        pool = ClientPool(plan)
        pool.start()
        try:
            assert pool.wait(20)
            end = time.monotonic() + 10
            while srv.stats().held < 301 and time.monotonic() < end:
                time.sleep(0.05)
            st = pool.stats()
            server = srv.stats()
            assert st.established == st.held == 301 == st.requested
            assert st.attempts == 301 and st.failures == {}
            assert st.ceiling is None and st.phases == {"done": 3}
            assert server.held == 301
            assert set(server.per_source_ip) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
            assert sum(server.per_source_ip.values()) == 301
            assert max(server.per_source_ip.values()) - min(server.per_source_ip.values()) <= 3
            pids = pool.pids()
            assert len(pids) == 3
        finally:
            final = pool.stop()
        assert final.held == 301 and final.established_peak == 301
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
        )
        assert pool.timeline(), "the pool samples a timeline"
    assert set(os.listdir("/proc/self/fd")) == before
    assert psutil.Process().children() == []


def test_refused_target_is_a_ceiling_with_its_cause() -> None:
    srv = ServerPool()
    srv.start()
    port = srv.ports[0]
    srv.stop()  # nothing listens there now: every connect is refused
    plan = OpenPlan(targets=(Target("127.0.0.1", port, port),), count=50, streak=8)
    with ClientPool(plan) as pool:
        assert pool.wait(20)
        st = pool.stats()
    assert st.ceiling is not None
    assert st.ceiling.cause == "server-refused" and st.ceiling.errno == "ECONNREFUSED"
    assert st.held == 0 and st.failures["ECONNREFUSED"] >= 8


def test_worker_descriptor_limit_is_a_file_descriptor_ceiling() -> None:
    with ServerPool(workers=1) as srv:
        port = srv.ports[0]
        plan = OpenPlan(targets=(Target("127.0.0.1", port, port),), count=200, streak=8)
        with ClientPool(plan, nofile=64) as pool:
            assert pool.wait(20)
            st = pool.stats()
    assert st.ceiling is not None and st.ceiling.cause == "file-descriptors"
    assert st.ceiling.errno == "EMFILE"
    assert 30 < st.ceiling.count < 64


def test_cli_open_writes_the_result_document(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with ServerPool(workers=1) as srv:
        port = srv.ports[0]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "conncap",
                "open",
                f"127.0.0.1:{port}",
                "--count",
                "500",
                "--source-ip",
                "127.0.0.0/29",
                "--workers",
                "2",
                "--hold",
                "1.2",
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    doc = load(out)
    assert doc["requested"] == 500 and doc["established_peak"] == 500
    assert doc["held_at_end"] == 500 and doc["failures"] == {}
    assert doc["stop_reason"] == "hold" and doc["ceiling"]["reached"] is False
    assert doc["plan"]["source_ips"] == [f"127.0.0.{i}" for i in range(1, 7)]
    assert doc["plan"]["workers"] == 2
    assert "count" in doc["prediction"] and "cause" in doc["prediction"]
    ts = [s["t"] for s in doc["timeline"]]
    assert ts and all(b - a <= 1.0 for a, b in itertools.pairwise(ts))
    assert {"t", "held", "failures", "rate", "failures_by_cause"} <= set(doc["timeline"][0])


def test_cli_open_ctrl_c_stops_fast_and_still_writes(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with ServerPool() as srv:
        port = srv.ports[0]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conncap",
                "open",
                f"127.0.0.1:{port}",
                "--count",
                "100000",
                "--rate",
                "100",
                "--workers",
                "2",
                "--json",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            end = time.monotonic() + 20
            while srv.stats().held < 20 and time.monotonic() < end:
                time.sleep(0.05)
            kids = psutil.Process(proc.pid).children()
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(10)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 130 and took < 2.5
    assert not any(k.is_running() and k.status() != "zombie" for k in kids)
    doc = json.loads(out.read_text())
    assert doc["stop_reason"] == "interrupted"
    assert 0 < doc["held_at_end"] < 100000


def test_cli_open_bad_target_is_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "conncap", "open", "127.0.0.1", "--count", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "host:port" in r.stderr
