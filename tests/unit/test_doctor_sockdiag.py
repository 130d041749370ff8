"""conncap.doctor.sockdiag: the request bytes, the parser on bytes built with the kernel's
struct layout (a million rows included), and the reader against ``ss`` on this host."""

from __future__ import annotations

import errno
import shutil
import socket
import struct
import sys

import pytest
from doctor_bytes import (
    AF4,
    AF6,
    CLOSE_WAIT,
    DONE,
    ESTABLISHED,
    LISTEN,
    SHUTDOWN_ATTR,
    TIME_WAIT,
    msg,
)

from conncap.doctor import sockdiag
from conncap.doctor.pools import port_usage
from conncap.doctor.sockdiag import NLMSG_ERROR, Aggregator, SockDiagError, ephemeral_map


def test_the_request_is_an_inet_diag_req_v2_dump() -> None:
    req = sockdiag.dump_request(AF6, sockdiag.ALL_BUT_LISTEN, seq=7)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, kind, seq, pid) == (len(req), 20, 7, 0) and len(req) == 72
    assert flags == 0x1 | 0x300  # NLM_F_REQUEST | NLM_F_DUMP
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext) == (AF6, socket.IPPROTO_TCP, 0)
    assert states & (1 << LISTEN) == 0 and states & (1 << TIME_WAIT)
    assert sockdiag.ONLY_LISTEN == 1 << LISTEN


def _parse(listen: bytes, rest: bytes, family: int = AF4, rng: tuple[int, int] = (40000, 40099),
           reserved: tuple[tuple[int, int], ...] = ()) -> Aggregator:  # fmt: skip
    agg = Aggregator(ephemeral_map(rng, reserved))
    assert agg.feed_listeners(listen + DONE, family)
    assert agg.feed(rest, family)
    return agg


def test_sockets_are_grouped_by_pool_and_listeners_ports_are_server_side() -> None:
    listen = msg(AF4, LISTEN, "0.0.0.0", 5000, "0.0.0.0", 0, rqueue=3, wqueue=128, inode=77)
    rest = b"".join(
        [
            *(
                msg(AF4, ESTABLISHED, "10.0.0.7", 40000 + i, "10.0.5.1", 443, attrs=SHUTDOWN_ATTR)
                for i in range(30)
            ),
            *(msg(AF4, TIME_WAIT, "10.0.0.7", 40030 + i, "10.0.5.1", 443) for i in range(20)),
            msg(AF4, ESTABLISHED, "10.0.0.7", 40000, "10.0.5.2", 443),  # same port, other pool
            msg(AF4, ESTABLISHED, "10.0.0.1", 5000, "10.0.0.9", 51000),  # accepted by :5000
            msg(AF4, CLOSE_WAIT, "10.0.0.7", 33000, "10.0.5.1", 443),  # outside the range
        ]
    )
    agg = _parse(listen, rest + DONE)
    c = agg.counts
    assert c.total == 54 and c.by_state[ESTABLISHED] == 32 and c.by_state[TIME_WAIT] == 20
    assert c.listeners[0].port == 5000 and c.listeners[0].accept_queue == 3
    assert c.listeners[0].backlog == 128 and c.listeners[0].inode == 77
    assert c.server_side == {5000: 1} and c.outside_range == 1
    usage = port_usage(c, (40000, 40099))
    first, second = usage.pools
    assert (first.src, first.dst, first.dport) == ("10.0.0.7", "10.0.5.1", 443)
    assert (first.in_use, first.time_wait, first.usable) == (50, 20, 100)
    assert (second.dst, second.in_use) == ("10.0.5.2", 1)
    (source,) = usage.sources
    assert (source.src, source.ports, source.pools) == ("10.0.0.7", 50, 2)  # port 40000 twice


def test_reserved_ports_and_listeners_inside_the_range_count() -> None:
    listen = msg(AF4, LISTEN, "127.0.0.1", 40050, "0.0.0.0", 0, wqueue=8)
    rest = b"".join(msg(AF4, ESTABLISHED, "127.0.0.1", p, "127.0.0.1", 80) for p in (40001, 40011))
    agg = _parse(listen, rest + DONE, reserved=((40010, 40019), (1, 10)))
    usage = port_usage(agg.counts, (40000, 40099), ((40010, 40019), (1, 10)))
    assert usage.usable == 90 and usage.listener_ports_in_range == 1
    assert agg.counts.outside_range == 1  # 40011 is reserved: not ephemeral
    (pool,) = usage.pools
    assert (pool.sockets, pool.held_by_listeners, pool.in_use, pool.usable) == (1, 1, 2, 90)


def test_ipv6_and_ipv4_mapped_sockets() -> None:
    rest = b"".join(
        [
            msg(AF6, ESTABLISHED, "2001:db8::1", 40001, "2001:db8::2", 443),
            msg(AF6, ESTABLISHED, "::ffff:10.0.0.7", 40002, "::ffff:10.0.5.1", 443),
        ]
    )
    v4 = msg(AF4, ESTABLISHED, "10.0.0.7", 40003, "10.0.5.1", 443)
    agg = Aggregator(ephemeral_map((40000, 40099)))
    assert agg.feed(v4 + DONE, AF4)
    assert agg.feed(rest + DONE, AF6)
    usage = port_usage(agg.counts, (40000, 40099))
    labels = {p.label: p.in_use for p in usage.pools}
    assert labels == {"10.0.0.7 → 10.0.5.1:443": 2, "2001:db8::1 → [2001:db8::2]:443": 1}
    assert {s.src: s.ports for s in usage.sources} == {"10.0.0.7": 2, "2001:db8::1": 1}


def test_a_dump_split_over_several_replies() -> None:
    agg = Aggregator(ephemeral_map((40000, 40099)))
    msgs = [msg(AF4, ESTABLISHED, "10.0.0.7", 40000 + i, "10.0.5.1", 443) for i in range(10)]
    assert not agg.feed(b"".join(msgs[:4]), AF4)
    assert not agg.feed(b"".join(msgs[4:]), AF4)
    assert agg.feed(DONE, AF4)
    assert agg.counts.total == 10


def test_an_error_reply_raises_with_its_errno() -> None:
    err = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -errno.EPERM)
    err += b"\0" * 16
    with pytest.raises(SockDiagError) as caught:
        Aggregator(ephemeral_map((1, 2))).feed(err, AF4)
    assert caught.value.errno == errno.EPERM


def test_a_truncated_reply_raises() -> None:
    whole = msg(AF4, ESTABLISHED, "10.0.0.7", 40000, "10.0.5.1", 443)
    with pytest.raises(SockDiagError, match="truncated"):
        Aggregator(ephemeral_map((40000, 40099))).feed(whole[:60], AF4)


def _million(per_pool: int, pools: int) -> list[bytes]:
    """``pools`` × ``per_pool`` TIME_WAIT/ESTABLISHED rows (one in 3 TIME_WAIT), in 32 KiB
    replies, built as numpy columns over one template row."""
    np = pytest.importorskip("numpy")
    n = per_pool * pools
    template = msg(AF4, ESTABLISHED, "10.0.0.7", 0, "10.0.5.1", 0)
    rows = np.frombuffer(template * n, dtype=np.uint8).reshape(n, len(template)).copy()
    i = np.arange(n)
    sport = 1024 + i % per_pool
    dport = 443 + i // per_pool
    rows[:, 17] = np.where(i % 3 == 0, TIME_WAIT, ESTABLISHED)
    rows[:, 20], rows[:, 21] = sport >> 8, sport & 0xFF
    rows[:, 22], rows[:, 23] = dport >> 8, dport & 0xFF
    data = rows.tobytes()
    step = len(template) * 372
    return [data[o : o + step] for o in range(0, len(data), step)] + [DONE]


def test_a_million_sockets_fold_into_their_pools() -> None:
    per_pool, pools = 62_500, 16
    replies = _million(per_pool, pools)
    agg = Aggregator(ephemeral_map((1024, 65535)))
    for reply in replies:
        if agg.feed(reply, AF4):
            break
    c = agg.counts
    assert c.total == 1_000_000
    usage = port_usage(c, (1024, 65535))
    assert len(usage.pools) == pools and usage.client_sockets == 1_000_000
    first = usage.pools[0]
    assert (first.in_use, first.usable) == (62_500, 64_512)
    assert first.time_wait == sum(1 for i in range(per_pool) if i % 3 == 0)
    assert usage.sources[0].ports == 62_500


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink")


@linux_only
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs iproute2's ss")
def test_the_reader_sees_what_ss_sees_on_loopback() -> None:
    import subprocess

    srv = _listener_outside_the_ephemeral_range()
    srv.listen(16)
    port = srv.getsockname()[1]
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        counts = sockdiag.read_sockets((32768, 60999))
        mine = [x for x in counts.listeners if x.port == port]
        assert len(mine) == 1 and mine[0].accept_queue == 5 and mine[0].backlog == 16
        assert counts.server_side.get(port) == 5
        out = subprocess.run(
            ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        assert len(out.splitlines()) == 5
    finally:
        for s in held:
            s.close()
        srv.close()


def _listener_outside_the_ephemeral_range() -> socket.socket:
    """A socket bound below the ephemeral range: no other program's connect() on this host
    can take its port as a local port, so the counts by port are this test's alone."""
    for port in range(20000, 20500):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        return s
    raise AssertionError("no free port in 20000-20499")
