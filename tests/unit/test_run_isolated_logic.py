"""``conncap run --isolated`` without namespaces: the experiment with a fake pair, fake pools and
a fake sampler (which limits, source addresses and server ports it takes from the pair, the
two-sided prediction, a server-side ceiling, the odd-range rule), and the command's flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from conncap.cli import build_parser, main
from conncap.engine import OpenPlan, PoolCeiling
from conncap.engine.protocol import server_worker_fds
from conncap.limits import Fact, HostLimits
from conncap.result import Ceiling, ServerFigures, to_json
from conncap.run import Experiment, RunConfig
from conncap.run import steps as st
from conncap.run.ports import TCP_LISTEN, SocketRow

SERVER_IP = "198.18.0.2"
CLIENT_IP = "198.18.0.1"


def limits(lo: int = 40000, hi: int = 40499, nofile: int = 20000) -> HostLimits:
    return HostLimits(
        os="linux",
        port_range=Fact.of((lo, hi), "test"),
        reserved_ports=Fact.of((), "test"),
        nofile_soft=Fact.of(nofile, "test"),
        nofile_hard=Fact.of(nofile, "test"),
        mem_available=Fact.of(16 << 30, "test"),
    )


class FakePair:
    """What the experiment needs of IsolatedPair: the client's range is 40000-40499 (or as
    given), the server's descriptor limit ``server_nofile``."""

    def __init__(self, lo: int = 40000, hi: int = 40499, server_nofile: int = 20000) -> None:
        self.lo, self.hi, self.server_nofile = lo, hi, server_nofile
        self.asked: list[int] = []
        self.bases: list[HostLimits | None] = []

    def add_source_ips(self, n: int) -> tuple[str, ...]:
        self.asked.append(n)
        return (CLIENT_IP, *(f"198.19.0.{i}" for i in range(1, n)))

    def client_limits(self, base: HostLimits | None = None) -> HostLimits:
        self.bases.append(base)
        return limits(self.lo, self.hi)

    def server_limits(self, base: HostLimits | None = None) -> HostLimits:
        return limits(32768, 60999, self.server_nofile)

    def client_reader(self) -> Any:
        raise AssertionError("the test injects read_sockets")

    def server_reader(self) -> Any:
        raise AssertionError("the test injects the sampler")

    def describe(self) -> list[str]:
        return [f"client namespace cli ({CLIENT_IP}) -> server namespace srv ({SERVER_IP})"]

    def to_json(self) -> dict[str, Any]:
        return {"client_netns": "cli", "server_netns": "srv", "server_ip": SERVER_IP}


@dataclass
class ServerStats:
    held: int = 0
    errors_by_cause: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    accepted: int = 0

    def figures(self) -> ServerFigures:
        return ServerFigures(held=self.held)


class FakeServer:
    instances: ClassVar[list[FakeServer]] = []
    #: Connections the server can accept (the rest: EMFILE), None: all.
    capacity: ClassVar[int | None] = None
    #: Connections the server gets at most, without an error (the rest are half-open).
    reaches: ClassVar[int | None] = None

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.ports: list[int] = []
        self.stopped = False
        FakeServer.instances.append(self)

    def start(self) -> None:
        assert all(p > 0 for p in self.kw["ports"]), "isolated mode picks fixed ports"
        self.ports = list(self.kw["ports"])

    def pids(self) -> list[int]:
        return [] if self.stopped else [1]

    def stats(self) -> ServerStats:
        held = sum(c.held for c in FakeClient.instances if not c.stopped)
        if FakeServer.reaches is not None:
            return ServerStats(min(held, FakeServer.reaches))
        cap = FakeServer.capacity
        if cap is not None and held > cap:
            return ServerStats(cap, {"file-descriptors": held - cap}, {"EMFILE": held - cap})
        return ServerStats(held)

    def stop(self, timeout: float = 2.0) -> ServerStats:
        self.stopped = True
        return ServerStats()


@dataclass
class ClientStats:
    held: int
    established: int
    attempts: int
    failures: dict[str, int]
    failures_by_cause: dict[str, int]
    dropped: dict[str, int]
    ceiling: PoolCeiling | None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeClient:
    """Opens 200 connections per stats() call; a one-pair plan stops at ``port_pool``
    with EADDRNOTAVAIL."""

    instances: ClassVar[list[FakeClient]] = []
    port_pool = 500

    def __init__(self, plan: OpenPlan, *, netns: str | None = None, nofile: int | None = None):
        self.plan, self.netns, self.nofile = plan, netns, nofile
        self.held = 0
        self.stopped = False
        single = plan.pair_count == 1
        self.limit = min(plan.count, self.port_pool) if single else plan.count
        FakeClient.instances.append(self)

    def start(self) -> None:
        pass

    def pids(self) -> list[int]:
        return [] if self.stopped else [2]

    def stats(self) -> ClientStats:
        if not self.stopped:
            self.held = min(self.limit, self.held + 200)
        over = self.held >= self.limit and self.limit < self.plan.count
        ceiling = (
            PoolCeiling(
                self.held, "EADDRNOTAVAIL", "ephemeral-ports", "connect", "every pair failed"
            )
            if over
            else None
        )
        return ClientStats(
            self.held,
            self.held,
            self.held,
            {"EADDRNOTAVAIL": 1} if over else {},
            {"ephemeral-ports": 1} if over else {},
            {},
            ceiling,
        )

    def ramp_over(self) -> bool:
        return self.held >= self.limit

    def pause(self) -> None:
        pass

    def stop(self, timeout: float = 2.0) -> ClientStats:
        self.stopped = True
        return self.stats()


class FakeSampler:
    kernel_source = "slabinfo"
    user_method: ClassVar[dict[str, str]] = {}
    problems: ClassVar[dict[str, str]] = {}

    def set_pids(self, *, client: Any = None, server: Any = None) -> None:
        pass

    def sample(
        self,
        *,
        held: int,
        rate: float,
        failures: int = 0,
        failures_by_cause: Mapping[str, int] | None = None,
        step: str | None = None,
        t: float | None = None,
    ) -> dict[str, Any]:
        return {"t": t, "held": held, "rate": rate, "step": step, "mem_available": 8 << 30}


@pytest.fixture(autouse=True)
def _reset() -> None:
    FakeServer.instances = []
    FakeServer.capacity = None
    FakeServer.reaches = None
    FakeClient.instances = []
    FakeClient.port_pool = 500


def isolated_run(
    pair: FakePair, sockets: list[SocketRow] | None = None, **kw: Any
) -> dict[str, Any]:
    cfg = RunConfig(
        **{
            "plateau_s": 0.02,
            "ramp_hz": 500.0,
            "hold_hz": 500.0,
            "host": SERVER_IP,
            "server_netns": "srv",
            "client_netns": "cli",
            **kw,
        }
    )
    return to_json(
        Experiment(
            cfg,
            limits=limits(32768, 60999),  # the host's: the pair's must be used instead
            make_server=FakeServer,
            make_client=FakeClient,
            make_sampler=FakeSampler,
            mem_available=lambda: 8 << 30,
            read_sockets=lambda: list(sockets or []),
            pick_ports=lambda *a: pytest.fail("isolated mode must not pick ports on this host"),
            isolated=pair,
        ).run()
    )


def test_limits_sources_and_server_ports_come_from_the_pair() -> None:
    pair = FakePair()
    doc = isolated_run(pair, count=1500)
    assert doc["stop_reason"] == "count", doc.get("error")
    one, two = doc["steps"]
    # the client's range (40000-40499), not the host's (32768-60999)
    assert one["prediction"]["count"] == 500
    assert one["comparison"]["text"] == "predicted 500, measured 500 ✓"
    assert doc["limits"]["facts"]["port_range"]["value"] == [40000, 40499]
    assert doc["server_limits"]["facts"]["port_range"]["value"] == [32768, 60999]
    assert pair.bases and pair.bases[0] is not None  # the host's limits, read once, as base
    # fixed server ports, none counted against the client's range
    (server,) = FakeServer.instances
    assert server.kw["ports"] == [8000, 8001, 8002] and server.kw["netns"] == "srv"
    assert one["prediction"]["bounds"][0]["detail"].startswith("ephemeral port range 40000")
    assert "already in use" not in one["prediction"]["line"]
    # step 2's source addresses are the pair's, not 198.18.0.2 counted up
    assert pair.asked == [3]
    assert two["spec"]["source_ips"] == [CLIENT_IP, "198.19.0.1", "198.19.0.2"]
    assert all(c.netns == "cli" for c in FakeClient.instances)
    assert doc["topology"]["server_netns"] == "srv"
    assert doc["summary"][0].startswith("Ceiling: 500 connections — ephemeral ports (client)")
    assert doc["summary"][1].startswith("Isolated: client namespace cli")
    assert any("fixed port(s) 8000, 8001, 8002" in n for n in doc["notes"])
    # both namespaces share this machine: memory and the file table count both ends
    assert "different hosts" not in " ".join(one["prediction"]["notes"])


def test_the_server_side_is_predicted_from_the_server_limits_and_binds_first() -> None:
    FakeServer.capacity = 295  # 300 - stdio, epoll and one listener
    FakeClient.port_pool = 1000  # the client gets its 600 (half-open ones), no port ceiling
    doc = isolated_run(FakePair(40000, 40999, server_nofile=300), count=600, escalate=False)
    (one,) = doc["steps"]
    pred = one["prediction"]
    assert pred["side"] == "server" and pred["cause"] == "file-descriptors"
    assert pred["count"] == 300 - server_worker_fds(1) == 295
    assert pred["client"]["count"] == 1000  # the client's range would have bound next
    # the client reached its quota (half-open connections), the server did not
    c = one["ceiling"]
    assert c["reached"] and c["cause"] == "file-descriptors" and c["side"] == "server"
    assert c["errno"] == "EMFILE" and c["server_held"] == 295
    assert one["comparison"]["text"].startswith("predicted 295, the server accepted 295 ✓")
    assert doc["stop_reason"] == "ceiling"


def test_half_open_connections_are_not_counted_as_held_by_both_ends() -> None:
    """SYN cookies and a full accept queue: the client holds its quota, the server far less,
    and nothing failed. The comparison uses what the server holds and says why."""
    FakeServer.reaches = 233
    FakeClient.port_pool = 1000
    doc = isolated_run(FakePair(40000, 40999, server_nofile=300), count=600, escalate=False)
    (one,) = doc["steps"]
    assert one["ceiling"]["reached"] is False and one["server_held"] == 233
    comp = one["comparison"]
    assert comp["measured"] == 233 and comp["matches"] is True
    assert "the server holds 233 of the client's 600" in comp["text"]
    assert "half-open" in comp["text"] and "model is too low" not in comp["text"]


def test_step2_is_skipped_after_a_ceiling_it_cannot_lift() -> None:
    FakeServer.capacity = 295
    FakeClient.port_pool = 400  # the count is below the client's ports: quota reached
    doc = isolated_run(FakePair(server_nofile=300), count=400)
    assert [s["name"] for s in doc["steps"]] == ["ports"]
    assert any("step 2 (four-tuple) skipped" in n for n in doc["notes"])


def _rows(ports: range, dest_port: int) -> list[SocketRow]:
    return [SocketRow(CLIENT_IP, p, SERVER_IP, dest_port, 0x01) for p in ports] + [
        SocketRow("0.0.0.0", 22, "0.0.0.0", 0, TCP_LISTEN)
    ]


def test_an_odd_range_may_leave_one_end_unused_and_still_matches() -> None:
    FakeClient.port_pool = 3976  # 1024-5000 has 3,977 ports; connect() missed 1024
    pair = FakePair(1024, 5000)
    doc = isolated_run(pair, _rows(range(1025, 5001), 8000), count=5000, escalate=False)
    comp = doc["steps"][0]["comparison"]
    assert comp["predicted"] == 3977 and comp["measured"] == 3976
    assert comp["matches"] is True and comp["text"].endswith("✓")
    assert "odd number of ports (3,977)" in comp["text"] and "(here 1024)" in comp["text"]


def test_an_even_range_one_short_is_a_miss() -> None:
    FakeClient.port_pool = 499
    doc = isolated_run(FakePair(), _rows(range(40001, 40500), 8000), count=600, escalate=False)
    comp = doc["steps"][0]["comparison"]
    assert comp["matches"] is False and "odd" not in comp["text"]
    assert "1 no socket listed" in comp["text"]  # the port account, read in the client's netns


def test_a_server_ceiling_needs_a_resource_error_and_fewer_held() -> None:
    from conncap.measure import StepFacts, decide

    def server_ceiling(server_held: int, errors_by_cause: dict[str, int]) -> Ceiling | None:
        v = decide(
            StepFacts(
                requested=600,
                client_held=600,
                server_held=server_held,
                server_errors=errors_by_cause,
                server_errnos={"EMFILE": 9},
            )
        )
        return v.ceiling() if v.reached else None

    c = server_ceiling(server_held=295, errors_by_cause={"file-descriptors": 9})
    assert c is not None and (c.cause, c.side, c.errno) == (
        "file-descriptors",
        "server",
        "EMFILE",
    )
    assert c.count == 600 and c.server_held == 295 and c.advice
    # no resource error (half-open connections only), or the server holds them all: none
    assert server_ceiling(server_held=233, errors_by_cause={}) is None
    assert server_ceiling(server_held=600, errors_by_cause={"file-descriptors": 1}) is None
    assert server_ceiling(server_held=9, errors_by_cause={"server-closed": 3}) is None


def test_what_a_prediction_is_compared_with() -> None:
    from conncap.run import verdict

    client = Ceiling.reached_at(count=500, side="client", cause="ephemeral-ports")
    assert verdict.measured(client, client_held=500, server_held=500).value == 500
    server = Ceiling.reached_at(count=328, side="server", cause="file-descriptors", server_held=295)
    m = verdict.measured(server, client_held=328, server_held=295)
    assert (m.value, m.what) == (295, "the server accepted") and "33 more" in m.reasons[0]
    m = verdict.measured(Ceiling.none(), client_held=600, server_held=233)
    assert (m.value, m.what) == (233, "the server holds") and "half-open" in m.reasons[0]
    assert verdict.measured(Ceiling.none(), client_held=600, server_held=None).value == 600
    assert verdict.liftable(client) and not verdict.liftable(server)
    assert verdict.ports_text([8000, 8001, 8002, 8003, 8004]) == "8000-8004"
    assert verdict.ports_text([8000, 8002]) == "8000, 8002"


def test_compare_short_ok_only_below_and_only_by_that_much() -> None:
    pred = st.StepPrediction(doc={"count": 100, "cause": "ephemeral-ports"}, line="")
    kw: dict[str, Any] = {"reached": True, "cause": "ephemeral-ports", "requested": 200}
    assert st.compare(pred, measured=99, stop_reason="ceiling", short_ok=1, **kw).matches
    assert not st.compare(pred, measured=98, stop_reason="ceiling", short_ok=1, **kw).matches
    assert not st.compare(pred, measured=101, stop_reason="ceiling", short_ok=1, **kw).matches


def test_loopback_predictions_use_the_worker_nofile() -> None:
    """Without --isolated too, --client-nofile/--server-nofile are what the model sees."""
    lim = st.with_nofile(limits(), 1000)
    assert lim.nofile_hard.value == lim.nofile_soft.value == 1000
    assert st.with_nofile(limits(), None) == limits()
    spec = st.plan_steps("127.0.0.1", [41000], escalate=False, source_ips=1)[0]
    plan = st.model_plan(spec, client_processes=1, server_processes=1)
    pred = st.predict_step(
        limits(), plan, server_limits=st.with_nofile(limits(), 300), server_fds_in_use=5
    )
    assert (pred.count, pred.cause, pred.doc["side"]) == (295, "file-descriptors", "server")


# ---- the command's flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--port-range", "1024-5000"], "add --isolated"),
        (["run", "--somaxconn", "16"], "add --isolated"),
        (["run", "--syncookies", "0"], "add --isolated"),
        (["run", "--isolated", "--syncookies", "3"], "0, 1 or 2"),
        (["run", "--isolated", "--port-range", "5000-1024"], "LO <= HI"),
        (["run", "--isolated", "--port-range", "x"], "write LO-HI"),
        (["run", "--isolated", "--somaxconn", "0"], "at least 1"),
        (["run", "--isolated", "--server-nofile", "10"], "--server-nofile"),
        (["run", "--client-nofile", "100000000"], "CAP_SYS_RESOURCE"),
        (["run", "--isolated", "--source-ips", "70000"], "at most 65,535"),
        (["run", "--isolated", "--source-ips", "20000000"], "at most 65,535"),
    ],
)
def test_bad_isolated_flags_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_help_has_each_setting_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in ("--isolated", "--port-range", "--somaxconn", "--max-syn-backlog"):
        assert flag in out
    options = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    for flag in ("--client-nofile", "--server-nofile", "--isolated", "--port-range"):
        assert options.count(flag) == 1, flag


def test_not_root_without_user_namespaces_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conncap.commands import run as command
    from conncap.netns import support

    no = support.Support(
        root=False,
        uid=1000,
        ip="/usr/sbin/ip",
        netns=False,
        sysctl="/usr/sbin/sysctl",
        nft=None,
        iptables=None,
        userns=False,
        userns_reason="user.max_user_namespaces=0",
        veth=None,
    )
    monkeypatch.setattr(command.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(support, "check_support", lambda probe=False: no)
    monkeypatch.delenv(command.USERNS_ENV, raising=False)
    assert main(["run", "--isolated", "--count", "10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "isolated mode needs root or unprivileged user namespaces" in err
    assert "user.max_user_namespaces=0" in err


def _strip(ns: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(ns).items() if not k.startswith("_")}


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--isolated"],
        [
            "run",
            "--isolated",
            "--port-range",
            "1024-5000",
            "--somaxconn",
            "64",
            "--max-syn-backlog",
            "128",
            "--syncookies",
            "0",
            "--server-nofile",
            "300",
            "--client-nofile",
            "5000",
            "--count",
            "600",
            "--max-duration",
            "30",
            "--memory-guard",
            "0.5",
            "--no-escalate",
            "--source-ips",
            "4",
            "--ports",
            "2",
            "--client-workers",
            "2",
            "--server-workers",
            "1",
            "--rate",
            "500",
            "--timeout",
            "2",
            "--plateau",
            "0.2",
            "--json",
            "r.json",
            "--out",
            "outdir",
            "-q",
        ],
    ],
)
def test_the_user_namespace_rerun_repeats_every_flag(argv: list[str]) -> None:
    from conncap.commands.run import rerun_argv

    parser = build_parser()
    args = parser.parse_args(argv)
    again = rerun_argv(args)
    assert again[1:4] == ["-m", "conncap", "run"]
    reparsed = parser.parse_args(again[3:])
    want = _strip(args)
    for key in ("json", "out"):
        if want[key]:
            want[key] = str(__import__("os").path.abspath(want[key]))
    assert _strip(reparsed) == want


def test_isolated_settings_reach_the_pair() -> None:
    from conncap.scenarios.isolated import IsolatedSettings, settings_from_args

    args = build_parser().parse_args(
        ["run", "--isolated", "--port-range", "40000-40499", "--server-nofile", "300"]
    )
    s = settings_from_args(args)
    assert s == IsolatedSettings(port_range=(40000, 40499), server_nofile=300)
    assert dataclasses.asdict(s)["client_nofile"] is None
