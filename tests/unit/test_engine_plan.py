"""Plans, targets, source IPs, worker sharding and the worker protocol: pure logic."""

from __future__ import annotations

import pytest

from conncap.engine import protocol
from conncap.engine.plan import (
    OpenPlan,
    Target,
    auto_sources,
    auto_workers,
    check_plan,
    parse_sources,
    parse_target,
    per_worker_capacity,
)
from conncap.engine.portrange import port_slice
from conncap.errors import UsageError


def test_parse_target_single_port_range_and_v6() -> None:
    assert parse_target("127.0.0.1:5000") == Target("127.0.0.1", 5000, 5000)
    t = parse_target("127.0.0.1:5000-5009")
    assert (t.lo, t.hi, len(t.ports)) == (5000, 5009, 10)
    assert str(t) == "127.0.0.1:5000-5009"
    assert parse_target("[::1]:80") == Target("::1", 80, 80)


@pytest.mark.parametrize(
    "bad", ["127.0.0.1", "127.0.0.1:", ":80", "h:0", "h:9-3", "h:x", "h:70000"]
)
def test_parse_target_rejects_bad_input_with_usage_error(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_target(bad)


def test_parse_sources_ip_cidr_range_list_and_auto() -> None:
    ips, auto = parse_sources(["127.0.0.2", "127.0.0.8/30", "127.0.1.1-127.0.1.3,127.0.0.2"])
    assert ips == [
        "127.0.0.2",
        "127.0.0.9",
        "127.0.0.10",
        "127.0.1.1",
        "127.0.1.2",
        "127.0.1.3",
    ]
    assert auto is False
    assert parse_sources(["auto"]) == ([], True)
    assert parse_sources(["127.0.0.5/32"])[0] == ["127.0.0.5"]


@pytest.mark.parametrize("bad", ["300.1.1.1", "127.0.0.9-127.0.0.2", "10.0.0.0/8", "nope"])
def test_parse_sources_rejects_bad_input(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_sources([bad])


def test_auto_sources_on_loopback_give_enough_addresses() -> None:
    t = (Target("127.0.0.1", 5000, 5000),)
    one = auto_sources(t, 100, 28232)
    assert one[0] == "127.0.0.1"
    many = auto_sources(t, 1_000_000, 64512)
    assert len(set(many)) == len(many)
    # each address gets at most the half of the range that connect() searches first (Linux)
    assert len(many) * 64512 >= 1_000_000


def test_count_is_split_exactly() -> None:
    plan = OpenPlan(targets=(Target("127.0.0.1", 1, 1),), count=1_000_003, workers=7)
    shares = plan.split(7)
    assert sum(shares) == 1_000_003
    assert max(shares) - min(shares) <= 1


def test_auto_workers_follow_the_descriptor_limit() -> None:
    assert auto_workers(1_000_000, nofile=20_000) >= 50
    assert auto_workers(1_000_000, nofile=20_000) * per_worker_capacity(20_000) >= 1_000_000
    assert auto_workers(10, nofile=20_000) == 1


def test_pairs_cross_sources_and_destination_ports() -> None:
    plan = OpenPlan(
        targets=(Target("127.0.0.1", 7000, 7001),),
        count=4,
        source_ips=("127.0.0.2", "127.0.0.3"),
    )
    assert plan.pair_count == len(list(plan.pairs())) == 4
    assert {(s, p) for s, _h, p in plan.pairs()} == {
        ("127.0.0.2", 7000),
        ("127.0.0.3", 7000),
        ("127.0.0.2", 7001),
        ("127.0.0.3", 7001),
    }


def test_check_plan_refuses_nonsense() -> None:
    t = (Target("127.0.0.1", 1, 1),)
    for plan in (
        OpenPlan(targets=t, count=0),
        OpenPlan(targets=t, count=5, workers=6),
        OpenPlan(targets=t, count=5, rate=0),
        OpenPlan(targets=t, count=5, bind_mode="other"),
    ):
        with pytest.raises(UsageError):
            check_plan(plan)


def test_port_slices_cover_the_range_once() -> None:
    seen: list[int] = []
    for i in range(7):
        lo, hi = port_slice(1024, 65535, i, 7)
        seen.extend(range(lo, hi + 1))
    assert seen == list(range(1024, 65536))


def test_protocol_lines_round_trip_and_control_buffer() -> None:
    line = protocol.encode("s", {"held": 3, "failures": {"99": 2}})
    assert protocol.decode(line) == {"k": "s", "held": 3, "failures": {"99": 2}}
    assert protocol.decode(b"not json") is None
    assert protocol.decode(b"[1]") is None
    buf = protocol.ControlBuffer()
    assert buf.feed(b"go\ncap 1") == [("go", None)]
    assert buf.feed(b"0\nstop\n") == [("cap", 10), ("stop", None)]
