"""The ceiling model, case by case: ports per OS and bind mode, descriptors, memory,
conntrack, backlog notes, unknown facts."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conncap.catalogue import Cause
from conncap.engine.protocol import CLIENT_WORKER_FDS as WORKER_FDS
from conncap.errors import UsageError
from conncap.limits._common import Fact, HostLimits
from conncap.limits._facts import no_limit
from conncap.model import Bound, Plan, describe, port_pool_size, predict, to_json

GiB = 1 << 30
MiB = 1 << 20


def _f(v: Any) -> Fact[Any]:
    return Fact.of(v, "test")


def linux(**kw: Any) -> HostLimits:
    """A Linux host whose only close limits are the ones a test sets."""
    base: dict[str, Any] = {
        "port_range": _f((32768, 60999)),
        "reserved_ports": _f(()),
        "nofile_soft": _f(1_000_000),
        "nofile_hard": _f(1_000_000),
        "files_max": _f(10_000_000),
        "files_open": _f(1_000),
        "mem_available": _f(64 * GiB),
        "cgroup_mem_limit": no_limit("memory.max", "max"),
        "cgroup_mem_current": _f(0),
        "conntrack_max": Fact.unknown(
            "sysctl net.netfilter.nf_conntrack_max", "nf_conntrack not loaded"
        ),
        "conntrack_count": Fact.unknown(
            "sysctl net.netfilter.nf_conntrack_count", "nf_conntrack not loaded"
        ),
        "somaxconn": _f(4096),
        "tcp_max_syn_backlog": _f(2048),
    }
    base.update(kw)
    return HostLimits(os="linux", **base)


def windows(version: str = "10.0.19045", **kw: Any) -> HostLimits:
    base: dict[str, Any] = {
        "port_range": _f((49152, 65535)),
        "port_range_v6": _f((49152, 65535)),
        "windows_version": _f(version),
        "max_user_port": Fact.unknown("registry MaxUserPort", "not set (default)"),
        "mem_available": _f(64 * GiB),
    }
    base.update(kw)
    return HostLimits(os="windows", **base)


def macos(**kw: Any) -> HostLimits:
    base: dict[str, Any] = {
        "port_range": _f((49152, 65535)),
        "nofile_soft": _f(1_000_000),
        "nofile_hard": _f(1_000_000),
        "nofile_max": _f(1_000_000),
        "files_max": _f(10_000_000),
        "files_open": _f(1_000),
        "mem_available": _f(64 * GiB),
    }
    base.update(kw)
    return HostLimits(os="darwin", **base)


def bound(pred_bounds: tuple[Bound, ...], cause: Cause) -> Bound:
    found = [b for b in pred_bounds if b.cause is cause]
    assert len(found) == 1, f"expected one {cause} bound, got {found}"
    return found[0]


# --- ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rng", "count"),
    [((32768, 60999), 28_232), ((1024, 5000), 3_977), ((1024, 65535), 64_512), ((5000, 5000), 1)],
)
def test_linux_pool_is_the_range_size(rng: tuple[int, int], count: int) -> None:
    b = port_pool_size(linux(port_range=_f(rng)))
    assert b.count == count
    assert f"{rng[0]}-{rng[1]}" in b.detail
    assert not b.estimate
    assert predict(linux(port_range=_f(rng)), Plan()).client.count == count


@pytest.mark.parametrize(
    ("reserved", "count"),
    [
        ((), 28_232),
        (((40000, 40099),), 28_132),
        (((40000, 40099), (60990, 61010)), 28_122),  # only 60990-60999 is inside the range
        (((40000, 40099), (40050, 40149)), 28_082),  # overlapping reservations count once
        (((1000, 2000),), 28_232),  # outside the range
    ],
)
def test_linux_reserved_ports_inside_the_range_are_not_usable(
    reserved: tuple[tuple[int, int], ...], count: int
) -> None:
    assert port_pool_size(linux(reserved_ports=_f(reserved))).count == count


def test_unknown_reserved_ports_are_said_not_guessed() -> None:
    b = port_pool_size(linux(reserved_ports=Fact.unknown("sysctl", "unreadable")))
    assert b.count == 28_232
    assert "reserved ports unknown" in b.detail


@pytest.mark.parametrize(
    ("host", "bind", "pools"),
    [
        # Linux: connect() without bind: per (src, dst); bind(): per src; NO_PORT/explicit: 4-tuple
        ("linux", "none", 3),
        ("linux", "bind", 4),
        ("linux", "bind-no-port", 12),
        ("linux", "explicit", 12),
        # Windows: one pool per source IP for all destinations unless SO_REUSE_UNICASTPORT
        ("windows", "none", 1),
        ("windows", "bind", 4),
        ("windows", "bind-no-port", 12),
        ("windows", "explicit", 12),
        # macOS: one pool for all destinations; no IP_BIND_ADDRESS_NO_PORT
        ("darwin", "none", 1),
        ("darwin", "bind", 4),
        ("darwin", "bind-no-port", 4),
        ("darwin", "explicit", 12),
    ],
)
def test_pools_per_os_and_bind_mode(host: str, bind: str, pools: int) -> None:
    limits = {"linux": linux, "windows": windows, "darwin": macos}[host]()
    per_pool = {"linux": 28_232, "windows": 16_384, "darwin": 16_384}[host]
    plan = Plan(source_ips=4, destinations=3, dst_ips=1, bind=bind)  # type: ignore[arg-type]
    ports = bound(predict(limits, plan).client.bounds, Cause.EPHEMERAL_PORTS)
    assert ports.count == per_pool * pools
    assert f"{pools} pool" in ports.detail


def test_many_source_ips_times_many_ports_on_linux() -> None:
    plan = Plan(source_ips=16, destinations=10, dst_ips=2, bind="bind-no-port")
    p = predict(linux(), plan)
    assert bound(p.client.bounds, Cause.EPHEMERAL_PORTS).count == 28_232 * 160


def test_source_ips_without_bind_use_one_address_and_say_so() -> None:
    p = predict(linux(), Plan(source_ips=4, bind="none"))
    assert p.client.count == 28_232
    assert any("3 of the 4 source IPs go unused" in n for n in p.notes)


def test_ports_in_use_come_off_every_pool() -> None:
    plan = Plan(destinations=2, ports_in_use=232)
    ports = bound(predict(linux(), plan).client.bounds, Cause.EPHEMERAL_PORTS)
    assert ports.count == 2 * 28_000
    assert "232 already in use" in ports.detail


def test_linux_port_notes_mention_parity_and_time_wait() -> None:
    p = predict(linux(), Plan())
    assert p.client.cause is Cause.EPHEMERAL_PORTS
    assert any("even ports" in n and "does not change the count" in n for n in p.notes)
    assert any("TIME_WAIT" in n for n in p.notes)


@pytest.mark.parametrize(
    ("version", "rng", "mup", "count", "estimate"),
    [
        ("10.0.19045", _f((49152, 65535)), None, 16_384, False),  # Vista and later: netsh
        ("6.0.6002", _f((49152, 65535)), None, 16_384, False),
        ("6.1.7601", _f((10000, 65535)), 5000, 55_536, False),  # MaxUserPort ignored
        ("5.2.3790", Fact.unknown("netsh", "no dynamicport before Vista"), None, 3_976, True),
        ("5.1.2600", Fact.unknown("netsh", "no dynamicport"), 10000, 8_976, False),
        ("5.1.2600", Fact.unknown("netsh", "no dynamicport"), 65534, 64_510, False),
        ("5.2.3790", _f((1025, 50000)), 50000, 48_976, False),  # the reader already combined
    ],
)
def test_windows_old_and_new_ranges(
    version: str, rng: Fact[Any], mup: int | None, count: int, estimate: bool
) -> None:
    mup_fact = _f(mup) if mup is not None else Fact.unknown("registry MaxUserPort", "not set")
    b = port_pool_size(windows(version, port_range=rng, max_user_port=mup_fact))
    assert b.count == count
    assert b.estimate is estimate


def test_old_windows_notes_the_founding_articles_count() -> None:
    limits = windows("5.1.2600", port_range=Fact.unknown("netsh", "no dynamicport"))
    p = predict(limits, Plan())
    assert p.client.count == 3_976
    assert p.client.cause is Cause.EPHEMERAL_PORTS
    assert any("3,977" in n and "1025-5000" in n and "reboot" in n for n in p.notes)


def test_windows_ipv6_uses_its_own_range() -> None:
    limits = windows(port_range_v6=_f((50000, 50999)))
    assert port_pool_size(limits, family="ipv6").count == 1_000
    assert predict(limits, Plan(family="ipv6")).client.count == 1_000
    assert port_pool_size(limits).count == 16_384


def test_windows_has_no_descriptor_bounds() -> None:
    p = predict(windows(), Plan())
    assert all(b.cause is not Cause.FILE_DESCRIPTORS for b in p.client.bounds + p.server.bounds)
    assert any("no per-process descriptor limit" in n for n in p.notes)


def test_macos_bind_no_port_is_modelled_as_bind_with_a_note() -> None:
    p = predict(macos(), Plan(source_ips=2, destinations=3, bind="bind-no-port"))
    assert bound(p.client.bounds, Cause.EPHEMERAL_PORTS).count == 2 * 16_384
    assert any("IP_BIND_ADDRESS_NO_PORT" in n for n in p.notes)


def test_modelling_another_os_uses_its_default_range_as_an_estimate() -> None:
    b = port_pool_size(linux(), os_name="windows")
    assert (b.count, b.estimate) == (16_384, True)
    p = predict(linux(), Plan(os="windows", destinations=5))
    ports = bound(p.client.bounds, Cause.EPHEMERAL_PORTS)
    assert ports.count == 16_384 and ports.estimate
    assert predict(windows(), Plan(os="linux")).client.count == 28_232


def test_unknown_port_range_never_binds() -> None:
    limits = linux(
        port_range=Fact.unknown("sysctl net.ipv4.ip_local_port_range", "permission denied"),
        nofile_soft=_f(5000),
    )
    p = predict(limits, Plan())
    ports = bound(p.client.bounds, Cause.EPHEMERAL_PORTS)
    assert ports.count is None
    assert "permission denied" in ports.detail
    assert p.client.cause is Cause.FILE_DESCRIPTORS
    assert p.client.count == 5000 - WORKER_FDS


# --- descriptors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("soft", "hard", "procs", "in_use", "raise_nofile", "count"),
    [
        (1024, 4096, 1, 8, False, 1_016),
        (1024, 4096, 4, 8, False, 4_064),
        (1024, 4096, 4, 8, True, 16_352),
        (20_000, 20_000, 3, 32, False, 59_904),
    ],
)
def test_client_descriptors_per_process(
    soft: int, hard: int, procs: int, in_use: int, raise_nofile: bool, count: int
) -> None:
    limits = linux(nofile_soft=_f(soft), nofile_hard=_f(hard))
    plan = Plan(client_processes=procs, fds_in_use_per_process=in_use, raise_nofile=raise_nofile)
    fds = bound(predict(limits, plan).client.bounds, Cause.FILE_DESCRIPTORS)
    assert fds.count == count


def test_client_and_server_have_their_own_descriptor_bound() -> None:
    limits = linux(nofile_soft=_f(1024), nofile_hard=_f(1024))
    p = predict(limits, Plan(client_processes=4, server_processes=1))
    assert bound(p.client.bounds, Cause.FILE_DESCRIPTORS).count == 4 * (1024 - WORKER_FDS)
    assert bound(p.server.bounds, Cause.FILE_DESCRIPTORS).count == 1024 - WORKER_FDS
    assert p.overall.side == "server"
    assert p.overall.count == 1024 - WORKER_FDS


def test_server_descriptors_in_use_are_the_servers_own_figure() -> None:
    """conncap's workers: a client keeps 4 descriptors besides its connections, a server 4
    plus one per listening port; each side's bound subtracts its own figure."""
    limits = linux(nofile_soft=_f(20_000), nofile_hard=_f(20_000))
    plan = Plan(
        client_processes=2,
        server_processes=3,
        fds_in_use_per_process=4,
        server_fds_in_use_per_process=5,
        raise_nofile=True,
    )
    p = predict(limits, plan)
    client = bound(p.client.bounds, Cause.FILE_DESCRIPTORS)
    server = bound(p.server.bounds, Cause.FILE_DESCRIPTORS)
    assert client.count == 2 * (20_000 - 4)
    assert server.count == 3 * (20_000 - 5)
    assert "− 4 in use = 19,996 per process" in client.detail
    assert "− 5 in use = 19,995 per process" in server.detail
    assert plan.to_json()["server_fds_in_use_per_process"] == 5


def test_server_figure_defaults_to_the_client_figure() -> None:
    limits = linux(nofile_soft=_f(1024), nofile_hard=_f(1024))
    plan = Plan(fds_in_use_per_process=4)
    assert plan.server_fds_in_use == 4
    p = predict(limits, plan)
    assert bound(p.server.bounds, Cause.FILE_DESCRIPTORS).count == 1020
    assert plan.to_json()["server_fds_in_use_per_process"] == 4
    assert Plan().server_fds_in_use == Plan().fds_in_use_per_process == WORKER_FDS


def test_soft_below_hard_is_noted() -> None:
    p = predict(linux(nofile_soft=_f(1024), nofile_hard=_f(4096)), Plan())
    assert any("1,024" in n and "4,096" in n for n in p.notes)


@pytest.mark.parametrize(("loopback", "count"), [(True, 49_000), (False, 98_000)])
def test_file_table_counts_two_descriptors_per_loopback_connection(
    loopback: bool, count: int
) -> None:
    limits = linux(files_max=_f(100_000), files_open=_f(2_000))
    p = predict(limits, Plan(loopback=loopback, destinations=10))
    table = bound(p.client.bounds, Cause.SYSTEM_FILE_TABLE)
    assert table.count == count
    assert p.client.cause is Cause.SYSTEM_FILE_TABLE
    assert bound(p.server.bounds, Cause.SYSTEM_FILE_TABLE).count == count


def test_file_table_caps_many_processes() -> None:
    limits = linux(nofile_soft=_f(20_000), files_max=_f(60_000), files_open=_f(0))
    p = predict(limits, Plan(client_processes=8, server_processes=8, destinations=20))
    assert p.overall.cause is Cause.SYSTEM_FILE_TABLE
    assert p.overall.count == 30_000


def test_unlimited_nofile_is_no_bound_but_macos_caps_it_per_process() -> None:
    unlimited = no_limit("getrlimit(RLIMIT_NOFILE)", "soft limit is unlimited")
    p = predict(linux(nofile_soft=unlimited), Plan())
    fds = bound(p.client.bounds, Cause.FILE_DESCRIPTORS)
    assert fds.count is None and "unlimited" in fds.detail
    mac = predict(macos(nofile_soft=unlimited, nofile_max=_f(24_576)), Plan())
    assert bound(mac.client.bounds, Cause.FILE_DESCRIPTORS).count == 24_576 - WORKER_FDS
    assert "kern.maxfilesperproc" in bound(mac.client.bounds, Cause.FILE_DESCRIPTORS).detail


# --- memory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loopback", "measured", "count", "estimate"),
    [
        (True, None, 8 * GiB // 8192, True),
        (False, None, 8 * GiB // 4096, True),
        (True, 20_000.0, 8 * GiB // 20_000, False),
        (False, 3_000.0, 8 * GiB // 3_000, False),
    ],
)
def test_memory_measured_vs_estimate(
    loopback: bool, measured: float | None, count: int, estimate: bool
) -> None:
    limits = linux(mem_available=_f(8 * GiB))
    p = predict(limits, Plan(loopback=loopback, bytes_per_conn=measured))
    mem = bound(p.client.bounds, Cause.MEMORY)
    assert mem.count == count
    assert mem.estimate is estimate
    assert ("measured" in mem.detail) is (measured is not None)


@pytest.mark.parametrize(
    ("limit", "current", "count"),
    [
        (_f(1 * GiB), _f(256 * MiB), 768 * MiB // 8192),  # the cgroup's room is smaller
        (_f(1 * GiB), Fact.unknown("memory.current", "gone"), 1 * GiB // 8192),
        (_f(64 * GiB), _f(0), 8 * GiB // 8192),  # MemAvailable is smaller
        (no_limit("memory.max", "max"), _f(5 * GiB), 8 * GiB // 8192),
        (_f(256 * MiB), _f(512 * MiB), 0),  # over its limit already
    ],
)
def test_cgroup_limit(limit: Fact[Any], current: Fact[Any], count: int) -> None:
    limits = linux(mem_available=_f(8 * GiB), cgroup_mem_limit=limit, cgroup_mem_current=current)
    mem = bound(predict(limits, Plan()).client.bounds, Cause.MEMORY)
    assert mem.count == count


def test_memory_binds_when_it_is_smallest() -> None:
    limits = linux(mem_available=_f(64 * MiB))
    p = predict(limits, Plan(destinations=100))
    assert p.overall.cause is Cause.MEMORY
    assert p.overall.count == 64 * MiB // 8192
    assert p.overall.estimate


def test_unknown_memory_never_binds() -> None:
    limits = linux(mem_available=Fact.unknown("psutil", "no /proc/meminfo"))
    mem = bound(predict(limits, Plan()).client.bounds, Cause.MEMORY)
    assert mem.count is None
    assert "no /proc/meminfo" in mem.detail


# --- conntrack, backlog -------------------------------------------------------------------------


def test_conntrack_free_entries_bind() -> None:
    limits = linux(conntrack_max=_f(65_536), conntrack_count=_f(1_536))
    p = predict(limits, Plan(destinations=10))
    assert p.overall.cause is Cause.CONNTRACK
    assert p.overall.count == 64_000


def test_conntrack_not_loaded_is_unknown_and_never_binds() -> None:
    p = predict(linux(), Plan())
    ct = bound(p.client.bounds, Cause.CONNTRACK)
    assert ct.count is None and "not loaded" in ct.detail
    assert p.client.cause is Cause.EPHEMERAL_PORTS


def test_backlog_is_a_note_not_a_bound() -> None:
    p = predict(linux(somaxconn=_f(128)), Plan())
    assert all(b.cause is not Cause.SERVER_BACKLOG for b in p.client.bounds + p.server.bounds)
    assert any("burst" in n and "128" in n and "2,048" in n for n in p.notes)
    capped = predict(linux(somaxconn=_f(4096)), Plan(listen_backlog=511))
    assert any("about 511 connections" in n for n in capped.notes)


# --- overall, JSON, description, validation -------------------------------------------------


def test_everything_unknown_gives_no_count() -> None:
    p = predict(HostLimits(os="linux"), Plan())
    assert p.overall.count is None
    assert p.overall.cause is Cause.UNKNOWN
    assert "no known limit binds" in describe(p, Plan())


def test_describe_names_the_limit_and_the_next_one() -> None:
    plan = Plan()
    line = describe(predict(linux(nofile_soft=_f(40_000)), plan), plan)
    assert line.startswith(
        "with 1 source IP and 1 destination port the client will stop at 28,232: "
        "ephemeral port range 32768-60999"
    )
    assert f"next: file-descriptors at {40_000 - WORKER_FDS:,}" in line
    multi = Plan(source_ips=2, destinations=4, dst_ips=2, bind="bind-no-port")
    text = describe(predict(linux(), multi), multi)
    assert "2 source IPs and 4 destinations on 2 IPs" in text
    assert "225,856" in text


def test_to_json_is_the_result_schema_prediction() -> None:
    p = predict(linux(nofile_soft=_f(10_000)), Plan())
    doc = json.loads(json.dumps(to_json(p)))
    assert doc["count"] == 10_000 - WORKER_FDS
    assert doc["cause"] == "file-descriptors"
    assert doc["side"] == "client"
    assert {"cause", "count", "detail", "estimate"} <= set(doc["bounds"][0])
    assert doc["server"]["count"] == 10_000 - WORKER_FDS
    assert isinstance(doc["notes"], list)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source_ips": 0},
        {"destinations": 0},
        {"dst_ips": 3, "destinations": 2},
        {"client_processes": 0},
        {"server_processes": 0},
        {"bind": "sometimes"},
        {"bytes_per_conn": 0.0},
        {"ports_in_use": -1},
        {"fds_in_use_per_process": -1},
        {"server_fds_in_use_per_process": -1},
        {"os": "plan9"},
        {"family": "ipx"},
    ],
)
def test_bad_plans_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Plan(**kwargs)


def test_plan_is_frozen_and_serialisable() -> None:
    plan = Plan(source_ips=3, bind="explicit")
    assert replace(plan, source_ips=4).source_ips == 4
    assert json.loads(json.dumps(plan.to_json()))["bind"] == "explicit"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux host")
def test_this_host_port_pool_matches_procfs() -> None:
    """Check against the system's own numbers (STYLE.md 12): the range in /proc."""
    from conncap.limits import read_limits

    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    reserved_text = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text().strip()
    reserved: set[int] = set()
    for part in filter(None, reserved_text.split(",")):
        a, _, b = part.partition("-")
        reserved.update(range(int(a), int(b or a) + 1))
    expected = (hi - lo + 1) - len([p for p in reserved if lo <= p <= hi])
    assert port_pool_size(read_limits()).count == expected


def test_conntrack_tracking_nothing_does_not_bind() -> None:
    limits = linux(conntrack_max=_f(1_000), conntrack_count=_f(0))
    p = predict(
        limits, Plan(source_ips=4, destinations=4, client_processes=64, bind="bind-no-port")
    )
    bound = next(b for b in p.client.bounds if b.cause is Cause.CONNTRACK)
    assert bound.count is None
    assert "0 tracked" in bound.detail
    assert p.client.cause is not Cause.CONNTRACK
