"""ServerPool and `conncap serve` as processes, on loopback, small counts, with timeouts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conncap.engine import ServerPool


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def connect_many(port: int, n: int, src: str = "127.0.0.1") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((src, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def wait_for(pred, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spread: Linux")
def test_workers_share_a_port_and_count_per_source_ip() -> None:
    before = open_fds()
    pool = ServerPool(workers=2)
    pool.start()
    try:
        port = pool.ports[0]
        assert port > 0 and len(pool.pids()) == 2
        a = connect_many(port, 30, "127.0.0.2")
        b = connect_many(port, 20, "127.0.0.3")
        wait_for(lambda: pool.stats().held == 50)
        st = pool.stats()
        assert st.per_source_ip == {"127.0.0.2": 30, "127.0.0.3": 20}
        assert st.accepted == 50 and st.errors == {}
        for s in a[:10]:
            s.close()
        wait_for(lambda: pool.stats().held == 40)
        assert pool.stats().per_source_ip == {"127.0.0.2": 20, "127.0.0.3": 20}
        for s in a[10:] + b:
            s.close()
    finally:
        pids = pool.pids()
        final = pool.stop()
    assert final.accepted == 50
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    assert open_fds() == before, "the pool leaked descriptors"


def test_many_ports_are_all_served() -> None:
    with ServerPool(ports=(0, 0, 0), workers=2) as pool:
        assert len(set(pool.ports)) == 3
        socks = [s for p in pool.ports for s in connect_many(p, 4)]
        wait_for(lambda: pool.stats().held == 12)
        for s in socks:
            s.close()


def test_server_survives_descriptor_exhaustion_without_spinning() -> None:
    pool = ServerPool(nofile=64, backlog=512)
    pool.start()
    socks: list[socket.socket] = []
    try:
        port = pool.ports[0]
        for _ in range(200):  # the kernel completes handshakes into the backlog
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        wait_for(lambda: pool.stats().errors.get("EMFILE", 0) > 0)
        held = pool.stats().held
        assert 30 < held < 64
        (pid,) = pool.pids()
        proc = psutil.Process(pid)
        t0 = sum(proc.cpu_times()[:2])
        time.sleep(1.0)
        cpu = sum(proc.cpu_times()[:2]) - t0
        assert cpu < 0.5, f"a saturated server must back off, not spin ({cpu:.2f} s CPU in 1 s)"
        assert pool.stats().errors_by_cause.get("file-descriptors", 0) > 0
        for s in socks[:100]:  # free descriptors: the server resumes accepting
            s.close()
        wait_for(lambda: pool.stats().accepted >= held + 50)
        assert pool.pids() == [pid]
    finally:
        for s in socks:
            s.close()
        pool.stop()


def test_bad_bind_is_one_line_not_a_traceback() -> None:
    from conncap.errors import RunFailed

    with pytest.raises(RunFailed) as info:
        ServerPool(bind="192.0.2.1").start()  # TEST-NET-1: not a local address, nothing is sent
    assert "Cannot assign requested address" in str(info.value) or "99" in str(info.value)


def test_cli_serve_stops_on_sigint_within_two_seconds(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "conncap", "serve", "--workers", "2", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 15
        kids: list[psutil.Process] = []
        while time.monotonic() < end:
            kids = psutil.Process(proc.pid).children()
            if len(kids) == 2 and all(k.net_connections(kind="tcp") for k in kids):
                break
            time.sleep(0.1)
        port = kids[0].net_connections(kind="tcp")[0].laddr.port
        socks = connect_many(port, 5)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(5)
        took = time.monotonic() - t0
        for s in socks:
            s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 2.5, f"serve took {took:.2f} s to stop"
    assert code == 130
    assert not any(k.is_running() and k.status() != "zombie" for k in kids)
    doc = json.loads(out.read_text())
    assert doc["server"]["held"] == 5 and doc["server"]["accepted"] == 5
    assert doc["server"]["per_source_ip"] == {"127.0.0.1": 5}


def test_cli_serve_rejects_bad_flags() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "conncap", "serve", "--port", "9-3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "--port" in r.stderr
