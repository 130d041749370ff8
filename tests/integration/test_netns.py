"""Real network namespaces: built, used over veths, and always removed (needs root + `ip`).

Traffic goes only between namespaces these tests create, on 198.18.0.0/15 and 100.64.0.0/10.
Every socket has a timeout; every subprocess is waited for with a timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conncap.cli import main
from conncap.errors import UsageError
from conncap.netns import (
    Host,
    Registry,
    RunRecord,
    Topology,
    check_support,
    namespace_name,
    probe_veth,
    reaper,
    userns_command,
)
from conncap.netns.naming import new_runid

pytestmark = pytest.mark.netns

SRC = str(Path(__file__).resolve().parents[2] / "src")

# A server that accepts `count` connections on (ip, port 0), prints its port, then one
# "ip port" line per peer. A client that connects (optionally from a source ip) and prints
# its own "ip port". Both bounded by socket timeouts.
SERVER = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(16); s.settimeout(10)
print(s.getsockname()[1], flush=True)
for _ in range(int(sys.argv[2])):
    c, peer = s.accept(); print(peer[0], peer[1], flush=True); c.close()
"""
CLIENT = r"""
import socket, sys
src = (sys.argv[3], 0) if len(sys.argv) > 3 else None
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5, source_address=src)
print(*c.getsockname()); c.close()
"""


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {ln.split()[0] for ln in out.stdout.splitlines() if ln.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {ln.split(":")[1].strip().split("@")[0] for ln in out.stdout.splitlines()}


def _ours(runid: str) -> tuple[set[str], set[str]]:
    """(namespaces, host links) that carry this run id."""
    return (
        {n for n in _namespaces() if n.startswith(f"conncap-{runid}-")},
        {ln for ln in _links() if ln.startswith(f"cc{runid}")},
    )


def _host_sysctl(key: str) -> str:
    return " ".join(Path("/proc/sys", *key.split(".")).read_text().split())


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("CONNCAP_RUN_DIR", str(tmp_path / "runs"))
    return Registry(tmp_path / "runs")


def _start_server(
    topo: Topology, host: Host, ip: str, count: int
) -> tuple[subprocess.Popen[str], int]:
    proc = topo.popen(
        host, [sys.executable, "-c", SERVER, ip, str(count)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _connect(
    topo: Topology, host: Host, ip: str, port: int, src: str | None = None
) -> tuple[str, int]:
    argv = [sys.executable, "-c", CLIENT, ip, str(port), *([src] if src else [])]
    addr, p = topo.run(host, argv, timeout=10).stdout.split()
    return addr, int(p)


def _peer(server: subprocess.Popen[str]) -> tuple[str, int]:
    assert server.stdout is not None
    addr, p = server.stdout.readline().split()
    return addr, int(p)


# ---- life cycle -------------------------------------------------------------------------


def test_removed_on_normal_exit(registry: Registry) -> None:
    links_before = _links()
    with Topology(registry=registry) as topo:
        topo.client_server()
        made, host_links = _ours(topo.runid)
        assert made == {namespace_name(topo.runid, "cli"), namespace_name(topo.runid, "srv")}
        assert host_links == set()  # both veth ends were created inside the namespaces
        assert registry.path(topo.runid).exists()
    assert _ours(topo.runid) == (set(), set())
    assert _links() == links_before
    assert not registry.path(topo.runid).exists()


def test_removed_on_exception(registry: Registry) -> None:
    with pytest.raises(RuntimeError, match="boom"), Topology(registry=registry) as topo:
        topo.nat(1)
        assert len(_ours(topo.runid)[0]) == 3
        raise RuntimeError("boom")
    assert _ours(topo.runid) == (set(), set())
    assert not registry.path(topo.runid).exists()


def test_processes_inside_are_ended(registry: Registry) -> None:
    with Topology(registry=registry) as topo:
        host = topo.add_host("solo")
        # Started outside Topology.popen, as a pool would: only the namespace knows it.
        sleeper = subprocess.Popen([*topo.exec_prefix(host), "sleep", "30"])
        time.sleep(0.1)
        # conncap's /proc scan agrees with iproute2's own `ip netns pids`
        listed = subprocess.run(
            ["ip", "netns", "pids", host.name], capture_output=True, text=True, check=True
        ).stdout.split()
        assert reaper.pids_in([host.name]) == {host.name: [sleeper.pid]}
        assert listed == [str(sleeper.pid)]
    assert sleeper.wait(timeout=5) != 0  # ended by a signal, not finished
    assert _ours(topo.runid) == (set(), set())


SIGNAL_SCRIPT = r"""
import sys, time
from conncap.netns import Topology
try:
    with Topology() as topo:
        topo.client_server()
        sleeper = topo.popen(topo.hosts["srv"], ["sleep", "30"])
        print(topo.runid, sleeper.pid, flush=True)
        time.sleep(30)
except KeyboardInterrupt as exc:
    print("interrupted", type(exc).__name__, flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_removed_when_a_run_is_signalled(signum: int, registry: Registry) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        runid, sleeper = proc.stdout.readline().split()
        assert len(_ours(runid)[0]) == 2
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    expected = "KeyboardInterrupt" if signum == signal.SIGINT else "Terminated"
    assert f"interrupted {expected}" in out
    assert _ours(runid) == (set(), set())
    assert not Path(f"/proc/{sleeper}").exists() or "Z" in Path(f"/proc/{sleeper}/stat").read_text()
    assert not registry.path(runid).exists()


def test_signal_handlers_restored(registry: Registry) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with Topology(registry=registry):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


# ---- sysctls ----------------------------------------------------------------------------


def test_sysctls_inside_do_not_change_the_host(registry: Registry) -> None:
    keys = ("net.ipv4.ip_local_port_range", "net.core.somaxconn", "net.ipv4.ip_forward")
    host_before = {k: _host_sysctl(k) for k in keys}
    with Topology(registry=registry) as topo:
        cs = topo.client_server(port_range=(40000, 40100), somaxconn=77)
        topo.enable_forwarding(cs.server)
        inside = topo.read_file(cs.client, "/proc/sys/net/ipv4/ip_local_port_range")
        assert inside.split() == ["40000", "40100"]
        assert topo.read_file(cs.server, "/proc/sys/net/core/somaxconn").strip() == "77"
        assert topo.read_file(cs.server, "/proc/sys/net/ipv4/ip_forward").strip() == "1"
        assert {k: _host_sysctl(k) for k in keys} == host_before
    assert {k: _host_sysctl(k) for k in keys} == host_before


@pytest.mark.parametrize(
    "key", ["net.netfilter.nf_conntrack_max", "kernel.pid_max", "vm.max_map_count"]
)
def test_kernel_wide_sysctls_are_refused(key: str, registry: Registry) -> None:
    before = _host_sysctl(key) if Path("/proc/sys", *key.split(".")).exists() else None
    with Topology(registry=registry) as topo:
        host = topo.add_host("solo")
        with pytest.raises(UsageError):
            topo.sysctl(host, key, 1000)
    if before is not None:
        assert _host_sysctl(key) == before


# ---- traffic ----------------------------------------------------------------------------


def test_client_reaches_server_over_the_veth(registry: Registry) -> None:
    with Topology(registry=registry) as topo:
        cs = topo.client_server(port_range=(40000, 40100), extra_client_ips=2)
        server, port = _start_server(topo, cs.server, cs.server_ip, 2)
        local = _connect(topo, cs.client, cs.server_ip, port)
        assert _peer(server) == local
        assert local[0] == cs.client_ip
        assert 40000 <= local[1] <= 40100  # the client namespace's own port range
        extra = cs.source_ips[-1]
        local2 = _connect(topo, cs.client, cs.server_ip, port, src=extra)
        assert _peer(server) == local2 and local2[0] == extra
        assert server.wait(timeout=5) == 0


def test_many_clients_share_one_server(registry: Registry) -> None:
    with Topology(registry=registry) as topo:
        mc = topo.many_clients(3)
        server, port = _start_server(topo, mc.server, mc.server_ip, 3)
        for host, ip in zip(mc.clients, mc.client_ips, strict=True):
            local = _connect(topo, host, mc.server_ip, port)
            assert local[0] == ip
            assert _peer(server) == local
        assert server.wait(timeout=5) == 0


def test_masquerade_shows_the_gateway_address(registry: Registry) -> None:
    if not check_support().nat:
        pytest.skip("needs nft or iptables")
    with Topology(registry=registry) as topo:
        nat = topo.nat(2, ports=(40000, 40999))
        assert "100.64." not in topo.run(nat.server, ["ip", "route"]).stdout
        server, port = _start_server(topo, nat.server, nat.server_ip, 2)
        for host, ip in zip(nat.clients, nat.client_ips, strict=True):
            local = _connect(topo, host, nat.server_ip, port)
            assert local[0] == ip
            seen = _peer(server)
            assert seen[0] == nat.gateway_wan_ip
            assert 40000 <= seen[1] <= 40999
        assert server.wait(timeout=5) == 0


# ---- cleanup ----------------------------------------------------------------------------


@pytest.fixture
def leaked(registry: Registry) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A namespace whose recorded run is dead, with a process still inside it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    runid = new_runid()
    name = namespace_name(runid, "leak")
    registry.write(RunRecord(runid, dead.pid, None, time.time(), (name,)))
    subprocess.run(["ip", "netns", "add", name], check=True)
    inside = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "30"])
    time.sleep(0.1)
    try:
        yield name, inside
    finally:
        if inside.poll() is None:
            inside.kill()
        inside.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_cleanup_removes_a_leaked_namespace(
    leaked: tuple[str, subprocess.Popen[bytes]],
    registry: Registry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, inside = leaked
    assert main(["cleanup", "--dry-run"]) == 0
    assert f"would remove namespace {name}" in capsys.readouterr().out
    assert name in _namespaces() and inside.poll() is None

    assert main(["cleanup"]) == 0
    out = capsys.readouterr().out
    assert f"removed namespace {name}" in out and f"ended pids {inside.pid}" in out
    assert name not in _namespaces()
    assert inside.wait(timeout=5) != 0
    assert registry.records() == ([], [])


def test_cleanup_keeps_a_live_run(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    with Topology(registry=registry) as topo:
        host = topo.add_host("live")
        assert main(["cleanup"]) == 0
        assert f"kept namespace {host.name}" in capsys.readouterr().out
        assert host.name in _namespaces()


def test_cleanup_all_keeps_a_live_run_recorded_elsewhere(
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another CONNCAP_RUN_DIR: the record is not seen, but the run's process inside is."""
    with Topology(registry=registry) as topo:
        host = topo.add_host("live")
        inside = topo.popen(host, ["sleep", "30"])
        try:
            time.sleep(0.1)
            monkeypatch.setenv("CONNCAP_RUN_DIR", str(tmp_path / "elsewhere"))
            assert main(["cleanup", "--all"]) == 0
            out = capsys.readouterr().out
            assert f"kept namespace {host.name}" in out and "runs in it" in out
            assert host.name in _namespaces() and inside.poll() is None
        finally:
            inside.kill()
            inside.wait()


# ---- support ----------------------------------------------------------------------------


def test_check_support_probe() -> None:
    support = probe_veth(check_support())
    assert support.root and support.veth is True and support.problem is None


def test_user_namespace_mode_as_nobody(tmp_path: Path) -> None:
    """A non-root user builds a topology inside `userns_command` (if the kernel allows)."""
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        pytest.skip("needs setpriv and unshare (util-linux)")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SRC}
    probe = subprocess.run([*nobody, "unshare", "-Urmn", "true"], capture_output=True, cwd=tmp_path)
    if probe.returncode != 0:
        pytest.skip("unprivileged user namespaces are not allowed here")

    def usable(python: str) -> bool:
        argv = [*nobody, *userns_command([python, "-c", "import conncap.netns"])]
        return subprocess.run(argv, env=env, capture_output=True, cwd=tmp_path).returncode == 0

    python = next((p for p in (sys.executable, "/usr/bin/python3") if usable(p)), None)
    if python is None:
        pytest.skip("no Python that user nobody can run with conncap importable")
    script = (
        "from conncap.netns import Topology\n"
        "with Topology() as t:\n"
        "    cs = t.client_server(port_range=(40000, 40100))\n"
        "    print(t.read_file(cs.client, '/proc/sys/net/ipv4/ip_local_port_range').split())\n"
    )
    before = _namespaces()
    out = subprocess.run(
        [*nobody, *userns_command([python, "-c", script])],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['40000', '40100']"
    assert _namespaces() == before  # nothing of it is visible from the host
