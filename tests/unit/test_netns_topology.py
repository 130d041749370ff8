"""Topology's commands and its teardown guarantees, with a fake command runner (no kernel)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from conncap.errors import RunFailed, UsageError
from conncap.netns import Registry, Support, Terminated, Topology
from conncap.netns.iproute import Shell


class FakeKernel:
    """Records commands; keeps a set of namespaces so teardown can be checked."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.namespaces: set[str] = set()
        self.fail: Callable[[list[str], str | None], str | None] = lambda argv, stdin: None
        self.on_call: Callable[[list[str], str | None], None] = lambda argv, stdin: None
        self.keep_on_delete = False

    def __call__(
        self, argv: Sequence[str], stdin: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append((argv, stdin))
        self.on_call(argv, stdin)
        err = self.fail(argv, stdin)
        if err is not None:
            return subprocess.CompletedProcess(argv, 2, "", err)
        out = ""
        if argv[:3] == ["ip", "netns", "list"]:
            out = "".join(f"{n} (id: 1)\n" for n in sorted(self.namespaces))
        for line in (stdin or "").splitlines():
            if line.startswith("netns add "):
                self.namespaces.add(line.split()[2])
            if line.startswith("netns del ") and not self.keep_on_delete:
                self.namespaces.discard(line.split()[2])
        return subprocess.CompletedProcess(argv, 0, out, "")

    def lines(self) -> list[str]:
        out: list[str] = []
        for argv, stdin in self.calls:
            out.append(" ".join(argv))
            out.extend(f"  {ln}" for ln in (stdin or "").splitlines())
        return out


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
def topo(kernel: FakeKernel, tmp_path: Path) -> Topology:
    return Topology(runid="abcdef", shell=Shell(kernel), registry=Registry(tmp_path), check=False)


def test_client_server_commands(kernel: FakeKernel, topo: Topology) -> None:
    with topo:
        cs = topo.client_server(port_range=(40000, 40999), somaxconn=128)
    text = "\n".join(kernel.lines())
    assert "  netns add conncap-abcdef-cli" in text and "  netns add conncap-abcdef-srv" in text
    assert (
        "ip -n conncap-abcdef-cli link add name ccabcdefa0 type veth peer name ccabcdefb0 "
        "netns conncap-abcdef-srv" in text
    )
    assert "ip -n conncap-abcdef-cli link set lo up" in text
    assert cs.client_ip == "198.18.0.1" and cs.server_ip == "198.18.0.2"
    sysctl_calls = [argv for argv, _ in kernel.calls if "sysctl" in argv]
    assert [
        "ip", "netns", "exec", "conncap-abcdef-cli",
        "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40999",
    ] in sysctl_calls  # fmt: skip
    assert any("net.core.somaxconn=128" in a for a in sysctl_calls[1])
    assert kernel.namespaces == set()  # removed at exit


@pytest.mark.parametrize("layout", ["client_server", "many_clients", "nat"])
def test_no_veth_is_ever_created_in_the_host_namespace(
    kernel: FakeKernel, topo: Topology, layout: str
) -> None:
    with topo:
        if layout == "client_server":
            topo.client_server()
        elif layout == "many_clients":
            topo.many_clients(3)
        else:
            topo.nat(3)
    assert any("type veth" in (stdin or "") or "veth" in argv for argv, stdin in kernel.calls)
    for argv, stdin in kernel.calls:
        cmds = [" ".join(argv), *(stdin or "").splitlines()]
        for cmd in cmds:
            if "type veth" in cmd:
                assert "-n conncap-" in " ".join(argv), cmd  # runs inside a namespace
                assert " netns conncap-" in cmd  # and puts the peer in another


def test_record_is_written_before_the_namespace_exists(
    kernel: FakeKernel, topo: Topology, tmp_path: Path
) -> None:
    seen: list[list[str]] = []

    def check(argv: list[str], stdin: str | None) -> None:
        if stdin and "netns add" in stdin:
            seen.append(json.loads((tmp_path / "abcdef.json").read_text())["namespaces"])

    kernel.on_call = check
    with topo:
        topo.add_host("one")
        topo.add_hosts(["two", "three"])
    assert seen == [
        ["conncap-abcdef-one"],
        ["conncap-abcdef-one", "conncap-abcdef-two", "conncap-abcdef-three"],
    ]
    assert not (tmp_path / "abcdef.json").exists()


def test_failure_while_building_still_removes_everything(
    kernel: FakeKernel, topo: Topology
) -> None:
    kernel.fail = lambda argv, stdin: "RTNETLINK answers: boom" if "veth" in argv else None
    with pytest.raises(RunFailed, match="boom"), topo:
        topo.client_server()
    assert kernel.namespaces == set()
    assert any(stdin and "netns del conncap-abcdef-cli" in stdin for _, stdin in kernel.calls)


def test_teardown_failure_is_reported_and_record_kept(
    kernel: FakeKernel, topo: Topology, tmp_path: Path
) -> None:
    kernel.keep_on_delete = True
    with pytest.raises(RunFailed, match="conncap cleanup"), topo:
        topo.add_host("stuck")
    assert (tmp_path / "abcdef.json").exists()  # so `conncap cleanup` can finish the job


def test_teardown_failure_does_not_hide_the_original_error(
    kernel: FakeKernel, topo: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel.keep_on_delete = True
    with pytest.raises(ValueError, match="original"), topo:
        topo.add_host("stuck")
        raise ValueError("original")
    assert "could not remove namespaces conncap-abcdef-stuck" in capsys.readouterr().err


def test_sigterm_becomes_an_exception_and_cleans_up(kernel: FakeKernel, topo: Topology) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), topo:
        topo.add_host("one")
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert kernel.namespaces == set()
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_during_teardown_waits_until_it_is_done(kernel: FakeKernel, topo: Topology) -> None:
    def interrupt(argv: list[str], stdin: str | None) -> None:
        if stdin and "netns del" in stdin:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt), topo:
        topo.add_host("one")
        kernel.on_call = interrupt
    assert kernel.namespaces == set()
    assert kernel.calls[-1][0] == ["ip", "netns", "list"]  # teardown checked its work


def test_masquerade_falls_back_to_iptables(kernel: FakeKernel, topo: Topology) -> None:
    kernel.fail = lambda argv, stdin: "nft: not supported" if "nft" in argv else None
    with topo:
        nat = topo.nat(1, ports=(40000, 40999))
    assert nat.firewall == "iptables"
    ipt = [argv for argv, _ in kernel.calls if "iptables" in argv]
    assert ipt and all(a[:4] == ["ip", "netns", "exec", "conncap-abcdef-gw"] for a in ipt)
    assert any("--to-ports" in a for a in ipt)


def test_masquerade_with_no_backend_is_one_clear_error(kernel: FakeKernel, topo: Topology) -> None:
    kernel.fail = lambda argv, stdin: (
        "missing" if {"nft", "iptables", "iptables-legacy"} & set(argv) else None
    )
    with pytest.raises(RunFailed, match="nft or iptables"), topo:
        topo.nat(1)


def test_layout_arguments_are_checked(topo: Topology) -> None:
    with topo:
        with pytest.raises(UsageError):
            topo.many_clients(0)
        with pytest.raises(UsageError):
            topo.nat(5000)
        with pytest.raises(UsageError):
            topo.client_server(port_range=(50000, 40000))
        host = topo.add_host("one")
        with pytest.raises(UsageError):
            topo.add_host("one")
        with pytest.raises(UsageError):
            topo.route(host, "default", via="10.0.0.1")
        with pytest.raises(UsageError):
            topo.read_file(host, "proc/net/sockstat")


def test_use_outside_with_block_is_refused(topo: Topology) -> None:
    with pytest.raises(UsageError, match="with"):
        topo.add_host("one")


def test_addresses_and_routes(kernel: FakeKernel, topo: Topology) -> None:
    with topo:
        cs = topo.client_server(extra_client_ips=3)
        assert cs.source_ips == ("198.18.0.1", "198.19.0.1", "198.19.0.2", "198.19.0.3")
        same_net = topo.add_addresses(cs.server, ["198.18.0.3"])
        assert same_net == ["198.18.0.3"]
    text = "\n".join(kernel.lines())
    assert "  addr add 198.19.0.1/32 dev ccabcdefa0" in text
    assert "ip -n conncap-abcdef-srv route replace 198.19.0.0/29 via 198.18.0.1" in text
    assert "  addr add 198.18.0.3/30 dev ccabcdefb0" in text


def test_shell_errors_are_one_line() -> None:
    def missing(
        argv: Sequence[str], stdin: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    def slow(
        argv: Sequence[str], stdin: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(list(argv), timeout)

    def failing(
        argv: Sequence[str], stdin: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 1, "", "Error: x\nCommand failed -:2\n")

    with pytest.raises(RunFailed, match="`ip` not found"):
        Shell(missing)._ip("netns", "list")
    with pytest.raises(RunFailed, match="did not finish"):
        Shell(slow)._ip("netns", "list")
    with pytest.raises(RunFailed) as err:
        Shell(failing).ip_batch(["link set lo up", "addr add 198.18.0.1/30 dev x"], netns="ns1")
    assert str(err.value) == "`ip -n ns1 addr add 198.18.0.1/30 dev x` failed: Error: x"
    assert "\n" not in str(err.value)


def _support(**kw: object) -> Support:
    base: dict[str, object] = dict(
        root=True, uid=0, ip="/sbin/ip", netns=True, sysctl="/sbin/sysctl", nft="/sbin/nft",
        iptables=None, userns=None, userns_reason=None, veth=None,
    )  # fmt: skip
    base.update(kw)
    return Support(**base)  # type: ignore[arg-type]


def test_support_problems_are_one_line() -> None:
    assert _support().problem is None
    s = _support(
        root=False, uid=1000, userns=False, userns_reason="kernel.unprivileged_userns_clone=0"
    )
    assert s.problem is not None and "kernel.unprivileged_userns_clone=0" in s.problem
    assert "run as root" in s.problem
    with pytest.raises(RunFailed):
        s.require()
    s = _support(root=False, uid=1000, userns=True)
    assert s.problem is not None and "unshare -Urmn" in s.problem
    assert "iproute2" in str(_support(ip=None).problem)
    assert "procps" in str(_support(sysctl=None).problem)
    assert "veth" in str(_support(veth=False, veth_error="EPERM").problem)
    with pytest.raises(RunFailed, match="nftables"):
        _support(nft=None).require(nat=True)
    for s in (_support(), _support(root=False, uid=1)):
        assert s.problem is None or "\n" not in s.problem


def test_a_run_id_in_use_is_never_reused(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.namespaces.add("conncap-abcdef-cli")
    given = Topology(runid="abcdef", shell=Shell(kernel), registry=Registry(tmp_path), check=False)
    with pytest.raises(UsageError, match="in use"), given:
        pass
    auto = Topology(shell=Shell(kernel), registry=Registry(tmp_path), check=False)
    auto.runid = "abcdef"  # as if new_runid() had drawn a taken id
    with auto:
        assert auto.runid != "abcdef"
    assert kernel.namespaces == {"conncap-abcdef-cli"}  # the other run's namespace is untouched
