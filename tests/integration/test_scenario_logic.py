"""The scenarios' pure parts, without a socket or a namespace: the kernel's port arithmetic,
the parsers of ``ss`` and /proc output, expectations, the result document, the
``--isolated`` settings and the two-sided prediction."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from conncap.cli import main
from conncap.engine.protocol import CLIENT_WORKER_FDS
from conncap.errors import UsageError
from conncap.limits import Fact, HostLimits
from conncap.measure import Verdict
from conncap.model import predict_sides
from conncap.result import (
    Ceiling,
    Host,
    Prediction,
    Sample,
    Scenario,
    ServerFigures,
    Step,
    load,
    to_json,
    write_atomic,
)
from conncap.scenarios import SCENARIOS, expect
from conncap.scenarios.document import build_result
from conncap.scenarios.isolated import (
    IsolatedSettings,
    add_isolated_arguments,
    check_nofile,
    nofile_hard,
    parse_port_range_arg,
    settings_from_args,
)
from conncap.scenarios.observe import (
    parse_limits_nofile,
    parse_listen,
    parse_ss,
    peer_view,
)
from conncap.scenarios.step import side_line

# --- what connect() hands out -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (1024, 5000, (3976, 3977)),  # the article's range: 3,977 ports, odd
        (1024, 5001, (3978, 3978)),
        (1024, 10000, (8976, 8977)),
        (1024, 65535, (64512, 64512)),
        (32768, 60999, (28232, 28232)),  # Linux's default
        (1024, 1024, (1, 1)),
        (1024, 1026, (2, 2)),  # remaining 2: the search never reaches 1026
    ],
)
def test_connect_ports(lo: int, hi: int, expected: tuple[int, int]) -> None:
    assert expect.connect_ports(lo, hi) == expected


def test_connect_ports_skips_reserved_ports() -> None:
    assert expect.connect_ports(1024, 1999, reserved=[1500, 1501, 3000]) == (974, 974)


def test_odd_range_misses_one_end_at_most() -> None:
    assert expect.odd_range_misses(1024, 5000) == {1024, 5000}
    assert expect.odd_range_misses(1024, 5001) == frozenset()
    assert expect.odd_range_misses(1024, 1026) == {1026}


# --- expectations ------------------------------------------------------------------------------


def test_expectations_check_exactly_and_notes_never_fail() -> None:
    ok = expect.equal("ports", 3977, 3977, unit="connections")
    bad = expect.equal("ports", 3977, 3976)
    missing = expect.equal("ports", 3977, None)
    note = expect.note("model", "predicted 3,977")
    assert ok.ok is True and bad.ok is False and missing.ok is False
    assert ok.line() == "✓ ports: expected 3,977 connections, measured 3,977 connections"
    assert bad.line().startswith("✗ ports: expected 3,977, measured 3,976")
    assert note.ok is None and note.line().startswith("· model")
    assert expect.passed([ok, note]) and not expect.passed([ok, bad, note])
    assert expect.tally([ok, bad, note]) == (1, 2)
    assert expect.at_least("x", 1, 0).ok is False
    assert expect.greater("g", 5, 4, what="a", than_what="b").ok is True
    assert expect.same("s", {"a"}, {"a"}).expected == "{a}"


def test_model_note_says_the_difference() -> None:
    e = expect.model_note(19992, "file-descriptors", 19996)
    assert e.ok is None and "(+4)" in e.measured
    assert "as measured" in expect.model_note(976, "ephemeral-ports", 976).measured
    assert "no prediction" in expect.model_note(None, None, 5).measured


# --- ss and /proc -------------------------------------------------------------------------------

SS_ESTAB = """\
0      0      198.18.0.2:5555 198.18.0.1:43242
0      0      198.18.0.2:5555 198.18.0.1:43243
0      0      198.18.0.2:5556 198.19.0.1:43242
0      0      [::1]:5555 [::1]:40000
garbage
"""


def test_parse_ss_and_peer_view() -> None:
    conns = parse_ss(SS_ESTAB)
    assert len(conns) == 4
    assert conns[3].peer_ip == "::1" and conns[3].peer_port == 40000
    view = peer_view(conns[:3], [5555, 5556])
    assert view.connections == 3
    assert view.local_ports == {5555, 5556}
    assert view.per_peer_ip == {"198.18.0.1": 2, "198.19.0.1": 1}
    assert view.distinct_peer_ports == 2  # 43242 is reused by two source IPs
    assert view.distinct_peers == 3
    assert view.unused(43240, 43243) == [43240, 43241]
    assert peer_view(conns, [5556]).connections == 1


def test_parse_listen_and_the_kernels_full_test() -> None:
    text = (
        "LISTEN 65     64        198.18.0.2:37779      0.0.0.0:*\n"
        "LISTEN 0      4096      127.0.0.1:22      0.0.0.0:*\n"
    )
    q = parse_listen(text)
    assert [(x.port, x.queued, x.backlog, x.full) for x in q] == [
        (37779, 65, 64, True),
        (22, 0, 4096, False),
    ]


def test_parse_limits_nofile() -> None:
    text = (
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max open files            256                  20000                files\n"
    )
    assert parse_limits_nofile(text) == 256
    assert parse_limits_nofile("Max open files  unlimited unlimited files\n") is None


def test_side_line() -> None:
    side = {
        "client_held": 316,
        "server_accepted": 251,
        "accept_queue": 65,
        "backlog": 64,
        "half_open": 0,
        "server_established": 316,
    }
    assert side_line(side) == (
        "client holds 316: 251 accepted, 65 in the accept queue (backlog 64), none in SYN-RECV, "
        "none half-open"
    )
    assert "SYN cookies" in side_line({**side, "half_open": 3})


# --- the result document ------------------------------------------------------------------------


def _step(name: str, held: int, reached: bool) -> Step:
    ceiling = (
        Verdict(
            reached=True,
            count=held,
            cause="ephemeral-ports",
            side="client",
            errno="EADDRNOTAVAIL",
            op="connect",
            evidence="EADDRNOTAVAIL ×2; client: every pair failed",
        ).ceiling()
        if reached
        else Verdict.none().ceiling()
    )
    return Step(
        name=name,
        title=name,
        requested=held + 64,
        held=held,
        established_peak=held,
        attempts=held + 2,
        failures={"EADDRNOTAVAIL": 2},
        failures_by_cause={"ephemeral-ports": 2},
        stop_reason="ceiling" if reached else "count",
        ceiling=ceiling,
        prediction=Prediction(count=held, cause="ephemeral-ports"),
        server=ServerFigures(held=held),
        t_start=0.0,
        t_end=1.0,
    )


def _sample(t: float, held: int) -> Sample:
    return Sample(t=t, held=held, failures=0, rate=0.0, failures_by_cause={})


def test_document_loads_and_adds_up(tmp_path: Path) -> None:
    steps = [_step("a", 3977, True), _step("b", 8977, True)]
    timeline = [_sample(0.5, 3977), _sample(1.5, 8977)]
    checks = [expect.equal("x", 1, 1), expect.note("n", "y")]
    result = build_result(
        scenario=Scenario(name="article", scale="small"),
        steps=steps,
        timeline=timeline,
        expectations=checks,
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        duration_s=2.0,
        host=Host(os="linux"),
        layout={},
        settings={},
        headline="a",
    )
    doc = to_json(result)
    assert doc["command"] == "scenario"
    assert doc["scenario"]["passed"] is True and doc["scenario"]["checks"] == 1  # type: ignore[index,call-overload]
    assert doc["requested"] == 3977 + 64 + 8977 + 64
    assert doc["failures"] == {"EADDRNOTAVAIL": 4}
    assert doc["established_peak"] == 8977
    assert result.ceiling.count == 3977 and result.ceiling.cause == "ephemeral-ports"
    assert result.ceiling.errno == "EADDRNOTAVAIL"
    assert doc["stop_reason"] == "ceiling"
    assert (
        "a: client held 3,977 of 4,041, server 3,977; ceiling ephemeral-ports"
        in (result.summary[1])
    )
    path = write_atomic(tmp_path / "r.json", result)
    assert load(path)["expectations"][0]["ok"] is True


def test_document_of_a_failed_or_interrupted_scenario() -> None:
    kwargs: dict[str, object] = {
        "scenario": Scenario(name="nat"),
        "timeline": [],
        "started_at": dt.datetime.now(dt.UTC),
        "duration_s": 1.0,
        "host": Host(),
        "layout": {},
        "settings": {},
    }
    failed = build_result(
        steps=[_step("a", 10, True)], expectations=[expect.equal("x", 1, 2)], **kwargs
    )  # type: ignore[arg-type]
    assert failed.scenario is not None and failed.scenario.passed is False
    assert failed.summary[1] == "✗ x: expected 1, measured 2"
    stopped = build_result(steps=[], expectations=[], interrupted=True, **kwargs)  # type: ignore[arg-type]
    assert stopped.stop_reason == "interrupted"
    assert stopped.scenario is not None and stopped.scenario.passed is False
    assert stopped.ceiling == Ceiling.none()


def test_a_step_that_reached_no_ceiling_has_none_and_no_advice() -> None:
    c = Verdict.none(server_held=200).ceiling()
    assert c.reached is False and c.count is None and c.advice == ()


# --- --isolated settings ------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_isolated_arguments(p, nofile_flags=True)
    return p.parse_args(argv)


def test_settings_from_args() -> None:
    assert settings_from_args(_parse([])) is None
    s = settings_from_args(_parse(["--isolated", "--port-range", "1024-5000", "--somaxconn", "16"]))
    assert s == IsolatedSettings(port_range=(1024, 5000), somaxconn=16)
    assert s.to_json()["port_range"] == [1024, 5000]
    # a descriptor limit is a process setting: fine without --isolated (not the namespace's)
    assert settings_from_args(_parse(["--client-nofile", "1000"])) is None
    both = settings_from_args(_parse(["--isolated", "--server-nofile", "128"]))
    assert both is not None and both.server_nofile == 128


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--port-range", "1024-5000"], "add --isolated"),
        (["--isolated", "--port-range", "5000-1024"], "LO <= HI"),
        (["--isolated", "--port-range", "abc"], "write LO-HI"),
        (["--isolated", "--somaxconn", "0"], "at least 1"),
        (["--isolated", "--server-nofile", "10"], "too small"),
    ],
)
def test_bad_isolated_settings_are_one_line(argv: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        settings_from_args(_parse(argv))


def test_nofile_above_the_hard_limit_is_refused() -> None:
    hard = nofile_hard()
    assert check_nofile(min(hard, 1000), "--client-nofile") == min(hard, 1000)
    with pytest.raises(UsageError, match="CAP_SYS_RESOURCE"):
        check_nofile(hard + 1, "--client-nofile")
    assert parse_port_range_arg("1024-65535") == (1024, 65535)


# --- the model, one side per namespace ------------------------------------------------------------


def _limits(port_range: tuple[int, int], nofile: int, somaxconn: int = 4096) -> HostLimits:
    return HostLimits(
        os="linux",
        port_range=Fact.of(port_range, "test"),
        reserved_ports=Fact.of((), "test"),
        nofile_soft=Fact.of(nofile, "test"),
        nofile_hard=Fact.of(nofile, "test"),
        somaxconn=Fact.of(somaxconn, "test"),
        tcp_max_syn_backlog=Fact.of(2048, "test"),
        mem_available=Fact.of(16 << 30, "test"),
        files_max=Fact.of(1 << 20, "test"),
        files_open=Fact.of(1000, "test"),
    )


def test_predict_sides_takes_each_side_from_its_own_limits() -> None:
    from conncap import model

    client = _limits((1024, 1999), 20000)
    server = _limits((32768, 60999), 256, somaxconn=16)
    plan = model.Plan(loopback=False, raise_nofile=True, listen_backlog=16)
    p = predict_sides(client, server, plan)
    assert p.client is not None and p.client.count == 976
    assert p.server is not None and p.server.cause == "file-descriptors"
    assert p.server.count == 256 - CLIENT_WORKER_FDS
    assert p.count == 256 - CLIENT_WORKER_FDS and p.side == "server"
    backlog = [n for n in p.notes if n.startswith("backlog")]
    assert backlog and "somaxconn 16" in backlog[0]
    roomy = predict_sides(client, _limits((32768, 60999), 20000), plan)
    assert roomy.count == 976 and roomy.side == "client"


# --- the command, without namespaces -----------------------------------------------------


def test_scenario_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "--list"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert out.count(f"{name} ") >= 1
    assert "shows:" in out


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no scenario 'nope'" in err and "article" in err
    assert main(["scenario"]) == 2


def test_without_root_or_user_namespaces_one_line_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from conncap.commands import scenario as command
    from conncap.netns import support

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(support, "probe_userns", lambda: (False, "user.max_user_namespaces=0"))
    monkeypatch.delenv(command.USERNS_ENV, raising=False)
    assert main(["scenario", "backlog", "--scale", "small"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs root or unprivileged user namespaces (user.max_user_namespaces=0)" in err
