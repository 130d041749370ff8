"""The churn model, case by case: TIME_WAIT per OS, Linux tcp_tw_reuse 0/1/2 and its delay,
tcp_max_tw_buckets, who closes first, RST closes, pools, time to exhaustion. Every expected
figure is hand arithmetic written as a literal."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.limits._common import Fact, HostLimits
from conncap.model import Plan
from conncap.model.churn import (
    Churn,
    describe,
    predict_churn,
    sustainable_rate,
    time_wait_dominates,
    time_wait_length,
    tw_reuse,
)


def _f(v: Any) -> Fact[Any]:
    return Fact.of(v, "test")


def linux(
    lo: int = 40000,
    hi: int = 40799,
    reuse: int | None = 0,
    delay_ms: int | None = 1000,
    buckets: int | None = 262144,
    timestamps: int = 1,
) -> HostLimits:
    """A Linux host (default: 800 ports, tcp_tw_reuse 0)."""
    extra: dict[str, Fact[Any]] = {"tcp_timestamps": _f(timestamps)}
    if delay_ms is not None:
        extra["tcp_tw_reuse_delay_ms"] = _f(delay_ms)
    else:
        extra["tcp_tw_reuse_delay_ms"] = Fact.unknown("sysctl", "no such sysctl")
    return HostLimits(
        os="linux",
        port_range=_f((lo, hi)),
        reserved_ports=_f(()),
        tcp_tw_reuse=_f(reuse) if reuse is not None else Fact.unknown("sysctl", "gone"),
        tcp_max_tw_buckets=_f(buckets) if buckets is not None else Fact.unknown("s", "x"),
        extra=extra,
    )


def windows(version: str = "10.0.19045", delay: int | None = None) -> HostLimits:
    return HostLimits(
        os="windows",
        # before Vista the reader has no netsh range: MaxUserPort (not set here) decides
        port_range=(
            _f((49152, 65535))
            if not version.startswith("5.")
            else Fact.unknown("registry MaxUserPort", "not set: the default applies")
        ),
        port_range_v6=_f((49152, 65535)),
        windows_version=_f(version),
        max_user_port=Fact.unknown("registry MaxUserPort", "not set: the default applies"),
        tcp_timed_wait_delay=(
            _f(delay)
            if delay is not None
            else Fact.unknown("registry TcpTimedWaitDelay", "not set: the default applies")
        ),
    )


def macos(msl: int | None = 15000) -> HostLimits:
    extra = {"tcp_msl_ms": _f(msl) if msl is not None else Fact.unknown("sysctl", "denied")}
    return HostLimits(os="darwin", port_range=_f((49152, 65535)), extra=extra)


REMOTE = Plan(loopback=False)
LOOP = Plan(loopback=True)

# --- the acceptance case: 800 ports, tw_reuse 0, 150/s FIN closes -------------------------------


def test_800_ports_reuse_0_fin_at_150_per_s_exhausts_after_800() -> None:
    p = predict_churn(linux(), LOOP, Churn(rate=150, lifetime=0, close="fin", duration=30))
    assert p.holder == "client"
    assert p.ports == 800
    assert p.time_wait.seconds == 60.0
    assert p.port_hold_s == 60.0
    assert p.sustainable_rate == pytest.approx(13.333, abs=0.001)  # 800 / 60
    assert p.exhausts is True
    assert p.time_to_exhaustion_s == pytest.approx(5.333, abs=0.001)  # 800 / 150
    assert p.exhausts_within_run is True
    assert p.cause is Cause.TIME_WAIT
    assert p.time_wait_peak == 9000  # 150 × 60, below 262,144 buckets
    assert "13.3" in describe(p) and "5.3 s" in describe(p)


def test_rst_closes_never_exhaust() -> None:
    p = predict_churn(linux(), LOOP, Churn(rate=150, close="rst"))
    assert p.holder == "none"
    assert p.unbounded and p.sustainable_rate is None
    assert p.exhausts is False and p.time_to_exhaustion_s is None
    assert p.time_wait_peak == 0


def test_rst_with_a_lifetime_is_bounded_by_holding_only() -> None:
    # 800 ports ÷ 2 s lifetime = 400/s
    p = predict_churn(linux(), LOOP, Churn(rate=150, lifetime=2, close="rst"))
    assert p.sustainable_rate == 400.0
    assert p.exhausts is False
    assert p.cause is Cause.EPHEMERAL_PORTS


def test_server_closing_first_moves_time_wait_to_the_server() -> None:
    p = predict_churn(linux(), LOOP, Churn(rate=150, lifetime=1, closer="server"))
    assert p.holder == "server"
    assert p.sustainable_rate == 800.0  # 800 ports ÷ 1 s lifetime
    assert p.exhausts is False
    # on the server: 150 × 60 = 9,000, but at most one per client port: 800
    assert p.time_wait_peak == 800
    assert any("server" in n for n in p.notes)


# --- Linux tcp_tw_reuse ---------------------------------------------------------------------------


def test_reuse_2_loopback_reuses_after_the_delay() -> None:
    p = predict_churn(linux(reuse=2), LOOP, Churn(rate=150))
    assert p.reuse.reuses and p.reuse.delay_s == 1.0
    assert p.port_hold_s == 1.0
    assert p.sustainable_rate == 800.0  # 800 ÷ 1 s
    assert p.exhausts is False


def test_reuse_2_towards_a_remote_host_does_not_reuse() -> None:
    p = predict_churn(linux(reuse=2), REMOTE, Churn(rate=150))
    assert not p.reuse.reuses
    assert p.sustainable_rate == pytest.approx(13.333, abs=0.001)
    assert p.exhausts is True


def test_reuse_1_reuses_towards_any_destination() -> None:
    p = predict_churn(linux(reuse=1), REMOTE, Churn(rate=150))
    assert p.reuse.reuses
    assert p.sustainable_rate == 800.0


def test_reuse_delay_sysctl_is_used() -> None:
    # tcp_tw_reuse_delay 4000 ms: 800 ports ÷ 4 s = 200/s
    p = predict_churn(linux(reuse=1, delay_ms=4000), REMOTE, Churn(rate=150))
    assert p.reuse.delay_s == 4.0
    assert p.sustainable_rate == 200.0
    assert p.exhausts is False
    # 250/s does exhaust: 800 ports ÷ 250/s = 3.2 s
    q = predict_churn(linux(reuse=1, delay_ms=4000), REMOTE, Churn(rate=250))
    assert q.exhausts is True and q.time_to_exhaustion_s == 3.2


def test_kernel_without_the_delay_sysctl_uses_a_fixed_second() -> None:
    p = predict_churn(linux(reuse=1, delay_ms=None), REMOTE, Churn(rate=150))
    assert p.reuse.delay_s == 1.0
    assert "before 6.14" in p.reuse.detail


def test_reuse_needs_timestamps() -> None:
    r = tw_reuse(linux(reuse=1, timestamps=0), REMOTE)
    assert not r.reuses and "timestamps" in r.detail


def test_unknown_reuse_assumes_the_default_2_and_says_so() -> None:
    p = predict_churn(linux(reuse=None), LOOP, Churn(rate=150))
    assert p.reuse.reuses and p.reuse.estimate and p.estimate


def test_lifetime_adds_to_the_port_hold() -> None:
    # 800 ÷ (20 s + 60 s) = 10/s; lifetime 100 s ≥ 60 s: holding, not TIME_WAIT, dominates
    p = predict_churn(linux(), REMOTE, Churn(rate=150, lifetime=20))
    assert p.sustainable_rate == 10.0
    assert p.cause is Cause.TIME_WAIT
    q = predict_churn(linux(), REMOTE, Churn(rate=150, lifetime=100))
    assert q.sustainable_rate == 5.0  # 800 ÷ 160
    assert q.cause is Cause.EPHEMERAL_PORTS


# --- tcp_max_tw_buckets -------------------------------------------------------------------


def test_tw_buckets_below_the_ports_means_no_exhaustion_at_lifetime_0() -> None:
    # at most 500 sockets in TIME_WAIT; 800 ports: 300 always free
    p = predict_churn(linux(buckets=500), REMOTE, Churn(rate=150))
    assert p.unbounded and p.exhausts is False
    assert p.time_wait_peak == 500
    assert any("tcp_max_tw_buckets" in n for n in p.notes)


def test_tw_buckets_with_a_lifetime() -> None:
    # (800 − 500) ports ÷ 2 s lifetime = 150/s
    p = predict_churn(linux(buckets=500), REMOTE, Churn(rate=100, lifetime=2))
    assert p.sustainable_rate == 150.0
    assert p.exhausts is False


def test_tw_buckets_above_the_ports_change_nothing() -> None:
    p = predict_churn(linux(buckets=1000), REMOTE, Churn(rate=150))
    assert p.sustainable_rate == pytest.approx(13.333, abs=0.001)


# --- pools ---------------------------------------------------------------------------------------


def test_pools_multiply_the_rate_on_linux() -> None:
    # 4 destination ports without bind: 4 pools × 800 = 3,200 ports ÷ 60 s = 53.3/s
    p = predict_churn(linux(), Plan(destinations=4, loopback=False), Churn(rate=50))
    assert p.pools == 4 and p.ports == 3200
    assert p.sustainable_rate == pytest.approx(53.333, abs=0.001)
    assert p.exhausts is False
    # 3 source IPs (IP_BIND_ADDRESS_NO_PORT) × 2 destinations = 6 pools: 4,800 ÷ 60 = 80/s
    q = predict_churn(
        linux(),
        Plan(source_ips=3, destinations=2, bind="bind-no-port", loopback=False),
        Churn(rate=100),
    )
    assert q.ports == 4800 and q.sustainable_rate == 80.0
    assert q.time_to_exhaustion_s == 48.0  # 4,800 ÷ 100


def test_ports_in_use_are_subtracted() -> None:
    # (800 − 200) ÷ 60 = 10/s
    p = predict_churn(linux(), Plan(loopback=False, ports_in_use=200), Churn(rate=5))
    assert p.sustainable_rate == 10.0 and p.exhausts is False


# --- Windows and macOS -------------------------------------------------------------------------


def test_windows_default_time_wait_is_120_s() -> None:
    # 16,384 ports (49152-65535) ÷ 120 s = 136.5/s
    p = predict_churn(windows(), REMOTE, Churn(rate=200))
    assert p.time_wait.seconds == 120.0
    assert not p.reuse.reuses
    assert p.sustainable_rate == pytest.approx(136.533, abs=0.001)
    assert p.time_to_exhaustion_s == 81.92  # 16,384 ÷ 200


def test_windows_tcp_timed_wait_delay_and_its_range() -> None:
    assert time_wait_length(windows(delay=30)).seconds == 30.0
    assert time_wait_length(windows(delay=10)).seconds == 30.0  # below 30: 30
    assert time_wait_length(windows(delay=900)).seconds == 300.0  # above 300: 300
    # 16,384 ÷ 30 = 546.1/s
    p = predict_churn(windows(delay=30), REMOTE, Churn(rate=200))
    assert p.sustainable_rate == pytest.approx(546.133, abs=0.001)


def test_old_windows_240_s_and_max_user_port() -> None:
    # XP: TcpTimedWaitDelay default 240 s, ports 1025-5000 = 3,976: 3,976 ÷ 240 = 16.57/s
    p = predict_churn(windows(version="5.1.2600"), REMOTE, Churn(rate=100))
    assert p.time_wait.seconds == 240.0
    assert p.ports == 3976
    assert p.sustainable_rate == pytest.approx(16.567, abs=0.001)
    assert p.time_to_exhaustion_s == 39.76
    # Server 2003 (5.2) already has 120 s
    assert time_wait_length(windows(version="5.2.3790")).seconds == 120.0


def test_macos_two_msl() -> None:
    # 2 × 15,000 ms = 30 s; 16,384 ports ÷ 30 s = 546.1/s (one pool for all destinations)
    p = predict_churn(macos(), Plan(destinations=4, loopback=False), Churn(rate=100))
    assert p.time_wait.seconds == 30.0
    assert p.pools == 1
    assert p.sustainable_rate == pytest.approx(546.133, abs=0.001)
    assert time_wait_length(macos(msl=5000)).seconds == 10.0


def test_unknown_msl_is_unknown_not_guessed() -> None:
    p = predict_churn(macos(msl=None), REMOTE, Churn(rate=100))
    assert p.sustainable_rate is None and not p.unbounded and p.exhausts is None
    assert "unknown" in p.detail


def test_modelling_another_os_uses_its_defaults_as_estimates() -> None:
    p = predict_churn(linux(), Plan(os="windows", loopback=False), Churn(rate=100))
    assert p.time_wait.seconds == 120.0 and p.time_wait.estimate and p.estimate
    q = predict_churn(linux(), Plan(os="darwin", loopback=False), Churn(rate=100))
    assert q.time_wait.seconds == 30.0


# --- values, JSON, evidence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": math.nan},
        {"rate": math.inf},
        {"rate": 10, "lifetime": -1},
        {"rate": 10, "lifetime": math.nan},
        {"rate": 10, "lifetime": math.inf},
        {"rate": 10, "duration": 0},
        {"rate": 10, "duration": math.inf},
        {"rate": 10, "close": "slam"},
    ],
)
def test_bad_values_are_usage_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Churn(**kw)


def test_json_is_plain() -> None:
    p = predict_churn(linux(), LOOP, Churn(rate=150, duration=30))
    doc = json.loads(json.dumps(p.to_json(), allow_nan=False))
    assert doc["sustainable_rate"] == 13.333
    assert doc["cause"] == "time-wait"
    assert doc["time_wait_s"] == 60.0
    assert doc["churn"]["rate"] == 150


def test_not_exhausting_within_the_run() -> None:
    # 4,800 ports at 100/s run out after 48 s: not within a 30 s run
    p = predict_churn(
        linux(),
        Plan(source_ips=3, destinations=2, bind="bind-no-port", loopback=False),
        Churn(rate=100, duration=30),
    )
    assert p.exhausts is True and p.exhausts_within_run is False


def test_sustainable_rate_helper_for_limits() -> None:
    assert sustainable_rate(linux(lo=32768, hi=60999), REMOTE).sustainable_rate == pytest.approx(
        470.533, abs=0.001
    )  # 28,232 ÷ 60


def test_time_wait_evidence() -> None:
    assert time_wait_dominates(790, 0)
    assert time_wait_dominates(600, 200)
    assert not time_wait_dominates(3, 1000)
    assert not time_wait_dominates(None, 0)
    assert not time_wait_dominates(0, 0)
