"""Issue 12 over loopback: a run that held nothing fails, a port is never shared between
runs, and a config too long for argv reaches the workers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conncap.engine import ClientPool, OpenPlan, ServerPool, Target
from conncap.errors import RunFailed

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nobody listens: every connect is refused
    return port


def test_open_that_held_nothing_exits_1_with_the_verdict(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "conncap",
            "open",
            f"127.0.0.1:{_closed_port()}",
            "--count",
            "5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 1, r.stderr
    assert "ceiling:" in r.stderr and "server-refused" in r.stderr  # the verdict is printed
    assert r.stderr.strip().splitlines()[-1].startswith("conncap: no connection was established")
    assert "holding," not in r.stderr  # nothing held: nothing to hold
    assert json.loads(out.read_text())["established_peak"] == 0  # and the result is written


def test_two_server_pools_never_share_a_port() -> None:
    with ServerPool(ports=(0,), workers=2) as first:
        (port,) = first.ports
        second = ServerPool(ports=(port,), workers=2)
        with pytest.raises(RunFailed, match=f"127.0.0.1 port {port} is already in use"):
            second.start()
        assert second.pids() == []
        assert len(first.pids()) == 2


def test_a_config_too_long_for_argv_goes_on_stdin() -> None:
    """20,000 destination ports: about 600 KB of pairs, over Linux's 128 KiB per argument."""
    plan = OpenPlan(targets=(Target("127.0.0.1", 40_000, 59_999),), count=3, timeout_s=1.0)
    pool = ClientPool(plan)
    pool.start()
    try:
        assert pool.wait(30)
        st = pool.stats()
        assert st.attempts >= 3  # the worker read its config and tried
    finally:
        pool.stop()
