"""``conncap doctor --netns`` against state made in a namespace of its own: a nearly full port
pool, TIME_WAIT churn, a process at its descriptor limit, a listener with a full accept queue.

Each test makes one namespace (port range 40000-40099: 100 ports, tcp_tw_reuse 0), starts a
holder inside it that creates the state over loopback and waits (30 s at most), and reads
``doctor --json``. Traffic stays on the namespace's loopback; everything is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conncap import __version__ as conncap_version
from conncap.netns import Host, Topology

pytestmark = pytest.mark.netns

SRC = str(Path(__file__).resolve().parents[2] / "src")
RANGE = (40000, 40099)

HOLDER = r"""
import ctypes, os, resource, select, socket, sys, time
mode = sys.argv[1]
ctypes.CDLL(None).prctl(15, b"conncap-" + mode.encode(), 0, 0, 0)  # PR_SET_NAME
keep = []

def listener(backlog):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 5000))  # outside the ephemeral range 40000-40099
    s.listen(backlog)
    s.settimeout(5)
    keep.append(s)
    return s

def client():
    return socket.create_connection(("127.0.0.1", 5000), timeout=5)

if mode == "ports":  # 90 connections held to one listener
    srv = listener(128)
    for _ in range(90):
        keep.append(client()); keep.append(srv.accept()[0])
elif mode == "timewait":  # 85 closed by the client first (its end stays in TIME_WAIT), 5 held
    srv = listener(128)
    for i in range(90):
        c = client(); a = srv.accept()[0]
        if i < 85:
            c.close(); a.close()
        else:
            keep += [c, a]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until every client end reached TIME_WAIT
        out = os.popen("ss -Htan state time-wait").read()
        if len(out.splitlines()) >= 85:
            break
        time.sleep(0.05)
elif mode == "fds":  # open descriptors until the (low) limit says no
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    try:
        while len(keep) < 100:
            keep.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
elif mode == "backlog":  # listen(8), never accept, 12 clients knock
    srv = listener(8)
    for _ in range(12):
        c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", 5000)); keep.append(c)
    time.sleep(0.3)
print("ready", os.getpid(), flush=True)
select.select([sys.stdin], [], [], 30)
"""


@pytest.fixture
def ns() -> Iterator[tuple[Topology, Host]]:
    with Topology() as topo:
        host = topo.add_host("doc")
        topo.sysctls_set(host, {"net.ipv4.ip_local_port_range": RANGE, "net.ipv4.tcp_tw_reuse": 0})
        yield topo, host


def _hold(topo: Topology, host: Host, mode: str) -> tuple[subprocess.Popen[str], int]:
    child = topo.popen(
        host,
        [sys.executable, "-c", HOLDER, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line and line[0] == "ready", f"holder {mode} did not start"
    return child, int(line[1])


def _release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=10)


def _doctor(host: Host) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = ["doctor", "--netns", host.name, "--json", "--sample", "0.2", "--top", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "conncap", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    assert doc["schema"] == "conncap.doctor/1"
    assert doc["netns"] == host.name
    return doc


def _first(doc: dict[str, Any]) -> dict[str, Any]:
    firm = [c for c in doc["ceilings"] if not c["conditional"]]
    assert firm, doc
    first: dict[str, Any] = firm[0]
    return first


def test_a_pool_at_90_percent_is_named_first(ns: tuple[Topology, Host]) -> None:
    topo, host = ns
    child, _ = _hold(topo, host, "ports")
    try:
        doc = _doctor(host)
        ss = topo.run(host, ["ss", "-Htan"]).stdout.splitlines()
    finally:
        _release(child)
    first = _first(doc)
    assert first["cause"] == "ephemeral-ports"
    assert first["side"] == "client"
    assert first["subject"] == "127.0.0.1 → 127.0.0.1:5000"
    assert (first["used"], first["limit"]) == (90, 100)
    assert any("ip_local_port_range" in cmd for cmd in first["fix"]["commands"])
    assert doc["verdict"]["near"] is True
    pool = doc["ports"]["pools"][0]
    assert (pool["in_use"], pool["time_wait"], pool["usable"]) == (90, 0, 100)
    assert doc["ports"]["server_sockets"] == 90  # the accepted ends share the listener's port
    # the same sockets as the system's own tool sees
    assert doc["sockets"]["total"] == len(ss) == 181
    assert doc["sockets"]["by_state"] == {"ESTABLISHED": 180, "LISTEN": 1}


def test_time_wait_dominating_is_cause_time_wait(ns: tuple[Topology, Host]) -> None:
    topo, host = ns
    child, _ = _hold(topo, host, "timewait")
    try:
        doc = _doctor(host)
        tw = topo.run(host, ["ss", "-Htan", "state", "time-wait"]).stdout.splitlines()
    finally:
        _release(child)
    first = _first(doc)
    assert first["cause"] == "time-wait"
    assert first["subject"] == "127.0.0.1 → 127.0.0.1:5000"
    assert (first["used"], first["limit"]) == (90, 100)
    assert first["details"]["time_wait"] == 85 == len(tw)
    assert doc["time_wait"]["tcp_tw_reuse"] == 0
    pool = doc["time_wait"]["pools"][0]
    assert pool["time_wait"] == 85
    assert pool["churn_per_s"] == pytest.approx(85 / 60, abs=0.01)
    assert pool["sustainable_per_s"] == pytest.approx(95 / 60, abs=0.01)  # 100 less 5 held


def test_a_process_at_its_descriptor_limit_is_named(ns: tuple[Topology, Host]) -> None:
    topo, host = ns
    child, pid = _hold(topo, host, "fds")
    try:
        doc = _doctor(host)
    finally:
        _release(child)
    first = _first(doc)
    assert first["cause"] == "file-descriptors"
    assert first["details"]["pid"] == pid
    assert first["subject"] == f"conncap-fds (pid {pid})"
    assert (first["used"], first["limit"]) == (64, 64)
    top = doc["descriptors"]["processes"][0]
    assert (top["pid"], top["fds"], top["soft"], top["hard"]) == (pid, 64, 64, 64)
    assert doc["descriptors"]["scope"] == f"network namespace {host.name}"


def test_a_full_accept_queue_is_cause_server_backlog(ns: tuple[Topology, Host]) -> None:
    topo, host = ns
    child, pid = _hold(topo, host, "backlog")
    try:
        doc = _doctor(host)
        ss = topo.run(host, ["ss", "-Hltn"]).stdout.split()
    finally:
        _release(child)
    first = _first(doc)
    assert first["cause"] == "server-backlog"
    assert first["side"] == "server"
    assert first["details"]["backlog"] == 8
    assert first["details"]["pid"] == pid
    listener = doc["listeners"]["sockets"][0]
    # the kernel fills the queue to at least the backlog; ss shows the same Recv-Q/Send-Q
    assert listener["accept_queue"] >= 8
    assert [str(listener["accept_queue"]), "8"] == ss[1:3]


SCRAPER = r"""
import sys, time, urllib.request
url = sys.argv[1]
end = time.monotonic() + 10
while time.monotonic() < end:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        time.sleep(0.05)
        continue
    if "conncap_pool_ports_in_use" in text:
        sys.stdout.write(text)
        break
    time.sleep(0.05)
"""


def test_watch_metrics_are_scraped_during_a_bounded_watch(ns: tuple[Topology, Host]) -> None:
    """Issue 14: ``watch --metrics`` serves the doctor's figures (in the namespace it reads);
    a scrape during a 3-reading watch parses with prometheus_client's own parser."""
    parser = pytest.importorskip("prometheus_client.parser")
    topo, host = ns
    child, pid = _hold(topo, host, "ports")
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = ["watch", "--netns", host.name, "--json", "--count", "3", "--interval", "0.2"]
    watch = subprocess.Popen(
        [sys.executable, "-m", "conncap", *argv, "--top", "5", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watch.stderr is not None
        line = watch.stderr.readline()
        assert "conncap: metrics at http://127.0.0.1:" in line, line
        url = line.split("metrics at ", 1)[1].strip()
        scraped = topo.run(host, [sys.executable, "-c", SCRAPER, url]).stdout
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        _release(child)
    assert watch.returncode == 0, err
    assert len(out.splitlines()) == 3  # the JSON sink ran beside the exporter
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in parser.text_string_to_metric_families(scraped)
        for s in fam.samples
    }
    pool = (("pool", "127.0.0.1->127.0.0.1:5000"),)
    last = json.loads(out.splitlines()[-1])
    # the exporter's own port 0 came from the namespace's range 40000-40099: a listener's
    # port in the range counts against every pool, as the doctor's document says too
    assert last["ports"]["listener_ports_in_range"] == 1
    assert (
        samples[("conncap_pool_ports_in_use", pool)]
        == 90 + 1
        == last["ports"]["pools"][0]["in_use"]
    )
    assert samples[("conncap_pool_time_wait", pool)] == 0
    assert samples[("conncap_pool_ports_usable", ())] == 100
    assert samples[("conncap_info", (("command", "watch"), ("version", conncap_version)))] == 1
    fill = (
        ("cause", "ephemeral-ports"),
        ("side", "client"),
        ("subject", "127.0.0.1 → 127.0.0.1:5000"),
    )
    assert samples[("conncap_nearest_ceiling_fill", fill)] == pytest.approx(0.91)
    listener = (("addr", "127.0.0.1"), ("port", "5000"))
    assert samples[("conncap_listener_backlog", listener)] == 128
    assert samples[("conncap_listener_accept_queue", listener)] == 0
    holder = (("name", "conncap-ports"), ("pid", str(pid)))
    assert samples[("conncap_process_fds", holder)] >= 181
    assert ("conncap_file_table_max", ()) in samples
    # the endpoint went with the command
    again = topo.run(host, [sys.executable, "-c", SCRAPER.replace("10", "0.3"), url]).stdout
    assert again == ""
