"""In a namespace of our own with a narrow port range, the measured ceiling equals the
model's prediction exactly: 1,000 ports (40000-40999) -> 1,000 connections, EADDRNOTAVAIL."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator

import pytest

from conncap.engine import ClientPool, OpenPlan, ServerPool, Target
from conncap.engine.results import predict

pytestmark = pytest.mark.netns

#: In a fresh namespace nothing listens anywhere, so fixed ports are free (not a guess);
#: they sit outside 40000-40999 so that every port of the range is the client's.
SERVER_PORT = 1000
RANGE_PORTS = (2000, 2002)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def narrow_ns() -> Iterator[str]:
    name = f"conncap-test-engine-{os.getpid()}"
    ip("netns", "add", name)
    try:
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        ip("netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40999")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


@pytest.mark.parametrize("bind_mode", ["kernel", "explicit"])
def test_port_ceiling_matches_the_model_exactly(narrow_ns: str, bind_mode: str) -> None:
    with ServerPool(ports=(SERVER_PORT,), netns=narrow_ns) as srv:
        plan = OpenPlan(
            targets=(Target("127.0.0.1", SERVER_PORT, SERVER_PORT),),
            count=1500,
            workers=2,
            source_ips=("127.0.0.1",) if bind_mode == "explicit" else (),
            bind_mode=bind_mode,
        )
        with ClientPool(plan, netns=narrow_ns) as pool:
            assert pool.wait(60)
            st = pool.stats()
        assert srv.stats().accepted == 1000
    assert st.established == 1000 and st.held == 1000
    assert st.ceiling is not None
    assert st.ceiling.count == 1000
    assert st.ceiling.errno == "EADDRNOTAVAIL"
    assert st.ceiling.cause == "ephemeral-ports"

    from conncap.limits import Fact, read_limits

    limits = dataclasses.replace(
        read_limits(), port_range=Fact.of((40000, 40999), "the test namespace")
    )
    pred = predict(plan, limits=limits)
    if pred.count is None:
        pytest.skip(f"the model gave no prediction: {pred.reason}")
    assert pred.count == st.ceiling.count
    assert pred.cause == st.ceiling.cause


def test_a_port_range_target_multiplies_the_ceiling(narrow_ns: str) -> None:
    lo, hi = RANGE_PORTS
    with ServerPool(ports=tuple(range(lo, hi + 1)), workers=2, netns=narrow_ns) as srv:
        plan = OpenPlan(targets=(Target("127.0.0.1", lo, hi),), count=2500, workers=2)
        with ClientPool(plan, netns=narrow_ns) as pool:
            assert pool.wait(60)
            st = pool.stats()
        server = srv.stats()
    assert st.established == 2500 and st.failures == {} and st.ceiling is None
    assert server.accepted == 2500
