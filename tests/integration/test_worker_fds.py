"""The descriptors a worker keeps besides its connections, counted on real workers: the one
figure (``conncap.engine.protocol.CLIENT_WORKER_FDS``) that ``conncap limits``, every prediction
and the workers' own capacity use."""

from __future__ import annotations

import os

import pytest

from conncap.engine import ClientPool, OpenPlan, ServerPool, Target
from conncap.engine.protocol import CLIENT_WORKER_FDS, server_worker_fds

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_ready_client_worker_keeps_exactly_client_worker_fds() -> None:
    with ServerPool(ports=(0,), workers=1) as srv:
        (port,) = srv.ports
        pool = ClientPool(OpenPlan(targets=(Target("127.0.0.1", port, port),), count=3, workers=2))
        at_ready: dict[int, int] = {}
        broadcast = pool._set.broadcast

        def count_then_broadcast(line: str) -> None:
            if line == "go":  # every worker said "ready" and none has connected yet
                at_ready.update({pid: fds(pid) for pid in pool.pids()})
            broadcast(line)

        pool._set.broadcast = count_then_broadcast  # type: ignore[method-assign]
        pool.start()
        try:
            assert pool.wait(20)
            held = {pid: fds(pid) for pid in pool.pids()}
        finally:
            pool.stop()
    assert len(at_ready) == 2
    assert set(at_ready.values()) == {CLIENT_WORKER_FDS}
    assert sum(held.values()) == 2 * CLIENT_WORKER_FDS + 3  # plus one per connection


def test_an_idle_server_worker_keeps_its_own_and_one_per_listener() -> None:
    with ServerPool(ports=(0, 0), workers=1) as srv:
        (pid,) = srv.pids()
        assert fds(pid) == server_worker_fds(2)
