"""Engine bounds (issue 12): pairs built lazily and bounded, the server's per-source-IP table
bounded, a port another process listens on never shared, RSS readable out of descriptors."""

from __future__ import annotations

import errno
import itertools
import socket
from pathlib import Path
from typing import Any

import pytest

from conncap.engine import acceptor as acc_mod
from conncap.engine.acceptor import MAX_TRACKED_IPS, OTHER_IPS, Acceptor, open_listeners
from conncap.engine.plan import MAX_PAIRS, OpenPlan, Target, check_pair_count, parse_target
from conncap.engine.server import listen_counts
from conncap.errors import UsageError


def test_pairs_are_lazy_and_counted_without_building() -> None:
    sources = tuple(f"10.0.{i // 256}.{i % 256}" for i in range(65_534))
    plan = OpenPlan(targets=(Target("127.0.0.1", 1, 65_535),), count=10, source_ips=sources)
    assert plan.pair_count == 65_534 * 65_535  # 4.3 billion, nothing built
    first = list(itertools.islice(plan.pairs(), 3))
    assert first == [
        (sources[0], "127.0.0.1", 1),
        (sources[1], "127.0.0.1", 1),
        (sources[2], "127.0.0.1", 1),
    ]
    with pytest.raises(UsageError, match=r"4,294,770,690 \(source IP, destination\) pairs"):
        check_pair_count(plan)
    small = OpenPlan(targets=(Target("127.0.0.1", 1, MAX_PAIRS),), count=10)
    check_pair_count(small)  # exactly the bound is fine


def test_unbracketed_ipv6_target_is_ambiguous() -> None:
    with pytest.raises(UsageError, match=r"\[::1\]:80"):
        parse_target("::1:80")
    assert parse_target("[::1]:80") == Target("::1", 80, 80)


class FakeListener:
    """accept() hands out real descriptors (of /dev/null) from ever new source addresses."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.i = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _accept(self) -> tuple[int, Any]:
        if not self.left:
            raise BlockingIOError(errno.EAGAIN, "again")
        self.left -= 1
        self.i += 1
        fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
        return fd, (f"10.{self.i >> 16 & 255}.{self.i >> 8 & 255}.{self.i & 255}", 1000)

    def close(self) -> None:
        self._sock.close()


def test_per_source_ip_table_is_bounded() -> None:
    n = MAX_TRACKED_IPS + 500
    listener = FakeListener(n)
    acc = Acceptor([listener], max_fd=n + 4096)
    try:
        for _ in range(200):
            acc._on_listener(listener.fileno())
            if not listener.left:
                break
        assert acc.held == n
        assert len(acc.ips) == MAX_TRACKED_IPS + 1  # the rest share one entry
        per_ip = acc.stats()["per_ip"]
        assert per_ip[OTHER_IPS] == 500 and sum(per_ip.values()) == n
    finally:
        acc.close_all()


def test_listen_counts_reads_the_workers_namespace(tmp_path: Path) -> None:
    net = tmp_path / "42" / "net"
    net.mkdir(parents=True)
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    rows = [
        "   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n",
        "   1: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n",
        "   2: 0200007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n",
        "   3: 0100007F:1388 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0\n",
        "   4: 00000000:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n",
    ]
    (net / "tcp").write_text(head + "".join(rows))
    assert listen_counts(42, "127.0.0.1", root=str(tmp_path)) == {5000: 2, 5001: 1}


def test_a_port_someone_else_listens_on_is_refused_by_name() -> None:
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # would let us join it
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    port = other.getsockname()[1]
    try:
        with pytest.raises(OSError) as info:
            open_listeners("127.0.0.1", [port], 8, exclusive=True)
        assert info.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1 port {port} is already in use" in str(info.value)
        joined = open_listeners("127.0.0.1", [port], 8)  # a pool's later workers do join
        for s in joined:
            s.close()
    finally:
        other.close()


def test_rss_is_read_even_out_of_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert acc_mod.rss_bytes() > 0

    def no_fds(*_a: object, **_k: object) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr("builtins.open", no_fds)
    assert acc_mod.rss_bytes() > 0
