"""``conncap run --isolated`` for real: a client and a server namespace made by the run, the
settings applied inside them only, small counts, and nothing left behind (namespaces, run
records, processes) on success, on an error and on Ctrl-C."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.netns

RUN = [sys.executable, "-m", "conncap", "run", "--isolated"]
#: Seconds any one conncap run in these tests may take (they take a few).
LIMIT = 90
HOST_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {ln.split()[0] for ln in out.stdout.splitlines() if ln.startswith("conncap-")}


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test's runs record themselves here (the runs it starts inherit the variable); a
    record is removed only once its namespaces are gone. Afterwards: no record, no child
    process, and the host's own port range as it was."""
    d = tmp_path / "runs"
    monkeypatch.setenv("CONNCAP_RUN_DIR", str(d))
    host_range = HOST_RANGE.read_text()
    yield d
    assert not (d.exists() and list(d.glob("*.json"))), "a run record was left"
    assert psutil.Process().children(recursive=True) == []
    assert HOST_RANGE.read_text() == host_range


def run_conncap(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=LIMIT, check=False)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def assert_gone(doc: dict[str, Any]) -> None:
    """The run's own namespaces are gone (other engineers' runs may have theirs)."""
    topo = doc["topology"]
    names = {topo["client_netns"], topo["server_netns"]}
    assert all(n.startswith("conncap-") for n in names)
    assert not names & _namespaces()


def test_a_narrow_client_range_stops_step1_at_exactly_500_and_step2_lifts_it(
    tmp_path: Path,
) -> None:
    result = tmp_path / "r.json"
    proc = run_conncap(
        [
            "--port-range",
            "40000-40499",
            "--count",
            "1500",
            "--plateau",
            "0.3",
            "--json",
            str(result),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    doc = load(result)
    assert_gone(doc)
    topo = doc["topology"]
    assert topo["settings"]["port_range"] == [40000, 40499]
    one, two = doc["steps"]
    c = one["ceiling"]
    assert (c["reached"], c["count"], c["cause"], c["errno"], c["side"]) == (
        True,
        500,
        "ephemeral-ports",
        "EADDRNOTAVAIL",
        "client",
    )
    assert one["prediction"]["count"] == 500
    assert one["prediction"]["cause"] == "ephemeral-ports"
    assert one["comparison"]["text"] == "predicted 500, measured 500 ✓"
    assert "predicted 500, measured 500 ✓" in proc.stdout
    # step 2 keeps step 1's 500 and lifts past them, from the client namespace's addresses
    assert two["held_before"] == 500
    assert two["established_peak"] == 1500 > 500
    assert doc["stop_reason"] == "count" and doc["established_peak"] == 1500
    sources = two["spec"]["source_ips"]
    assert sources[0] == topo["client_ip"] and len(sources) >= 2
    extra = ipaddress.ip_network("198.19.0.0/16")
    assert all(ipaddress.ip_address(a) in extra for a in sources[1:])
    # to the server's namespace, on fixed ports, said so
    for target in doc["plan"]["targets"]:
        host, port = target.rsplit(":", 1)
        assert host == topo["server_ip"] and 8000 <= int(port) < 9000
    assert "fixed" in proc.stdout
    # each side's limits were read inside its namespace; the host's were not touched
    assert doc["limits"]["facts"]["port_range"]["value"] == [40000, 40499]
    assert doc["server_limits"]["facts"]["port_range"]["value"] != [40000, 40499]
    assert HOST_RANGE.read_text().split() != ["40000", "40499"]
    # the server's counters come from the server's namespace
    assert all("listen_overflows" in s for s in doc["timeline"])
    assert "probe_problems" not in doc, doc.get("probe_problems")


def test_a_small_server_nofile_binds_on_the_server_side(tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    nofile = 300
    proc = run_conncap(
        [
            "--server-nofile",
            str(nofile),
            "--server-workers",
            "1",
            "--somaxconn",
            "32",
            # off, so that no connection is half-open (established at the client only): the
            # client then holds the server's connections plus its full accept queue, and
            # times out; with cookies a burst can leave the server short of its limit
            "--syncookies",
            "0",
            # and no burst: a burst can overflow a backlog of 32 before the server's table is
            # full (then the backlog is the ceiling, rightly; not what this test shows)
            "--rate",
            "500",
            "--count",
            "600",
            "--timeout",
            "2",
            "--no-escalate",
            "--plateau",
            "0.3",
            "--json",
            str(result),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    doc = load(result)
    assert_gone(doc)
    (one,) = doc["steps"]
    c = one["ceiling"]
    assert c["reached"] is True
    assert (c["cause"], c["side"]) == ("file-descriptors", "server")
    # the server's table: its connections + stdin, stdout, stderr, epoll and one listener
    assert c["server_held"] == nofile - 5
    pred = one["prediction"]
    assert (pred["count"], pred["cause"], pred["side"]) == (
        nofile - 5,
        "file-descriptors",
        "server",
    )
    assert one["comparison"]["matches"] is True
    assert one["comparison"]["text"].startswith(f"predicted {nofile - 5}, the server accepted")
    # the client holds more: handshakes the kernel completed that the server never accepted
    assert one["established_peak"] > c["server_held"]
    assert doc["stop_reason"] == "ceiling"
    assert doc["server_limits"]["facts"]["nofile_hard"]["value"] == nofile
    assert doc["server_limits"]["facts"]["somaxconn"]["value"] == 32
    assert "server tcp_syncookies 0" in doc["summary"][1]
    assert doc["server"]["errors"].get("file-descriptors", 0) >= 1


def _client_holding(pid: int, fds: int) -> list[psutil.Process]:
    """The run's processes once one client worker holds ``fds`` descriptors (else [])."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
        for w in procs:
            if '"role": "client"' in " ".join(w.cmdline()) and w.num_fds() >= fds:
                return procs
    except psutil.NoSuchProcess:
        pass
    return []


def test_ctrl_c_stops_removes_the_namespaces_and_writes_what_was_measured(
    tmp_path: Path, run_dir: Path
) -> None:
    result = tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            *RUN,
            "--count",
            "100000",
            "--rate",
            "1000",
            "--client-workers",
            "1",
            "--server-workers",
            "1",
            "--json",
            str(result),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        procs: list[psutil.Process] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not procs:
            time.sleep(0.1)
            procs = _client_holding(proc.pid, 300)
        assert procs, "the run did not start holding connections"
        time.sleep(0.5)  # the workers report their counts a few times a second
        records = list(run_dir.glob("*.json"))
        assert len(records) == 1  # the run's namespaces are registered while they exist
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    doc = load(result)
    assert doc["stop_reason"] == "interrupted"
    assert 0 < doc["established_peak"] < 100000
    assert_gone(doc)
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == []


def test_an_error_during_the_run_still_removes_everything() -> None:
    """In process: a server that cannot start is an error document, and the namespaces, the
    reader processes and every descriptor are gone after the block."""
    from conncap.errors import RunFailed
    from conncap.result import to_json
    from conncap.run import Experiment, RunConfig
    from conncap.scenarios.isolated import IsolatedSettings, isolated_pair

    class Broken:
        def __init__(self, **kw: Any) -> None:
            self.ports: list[int] = []

        def start(self) -> None:
            raise RunFailed("the server could not bind")

        def stop(self, timeout: float = 2.0) -> None:
            pass

    me = psutil.Process()
    fds = me.num_fds()
    with isolated_pair(IsolatedSettings(port_range=(40000, 40099))) as pair:
        names = {pair.client_netns, pair.server_netns}
        assert names <= _namespaces()
        cfg = RunConfig(
            count=50,
            host=pair.server_ip,
            server_netns=pair.server_netns,
            client_netns=pair.client_netns,
        )
        doc = to_json(Experiment(cfg, isolated=pair, make_server=Broken).run())
        pair.client_reader()("/proc/net/sockstat")  # starts a reader process inside
    assert doc["stop_reason"] == "error" and "the server could not start" in doc["error"]
    assert doc["limits"]["facts"]["port_range"]["value"] == [40000, 40099]
    assert not names & _namespaces()
    assert me.children(recursive=True) == []
    assert me.num_fds() == fds

    with pytest.raises(RuntimeError), isolated_pair() as pair:
        names = {pair.client_netns, pair.server_netns}
        raise RuntimeError("boom")
    assert not names & _namespaces()


def test_not_root_reruns_itself_inside_a_user_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The re-run path, driven from here as if we were not root: the run happens in a private
    user + network namespace, and none of its namespaces is ever visible from the host."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    if subprocess.run(["unshare", "-Urmn", "true"], check=False).returncode != 0:
        pytest.skip("user namespaces are not allowed here")
    from conncap.cli import main
    from conncap.commands import run as command

    monkeypatch.setattr(command.os, "geteuid", lambda: 1000)
    monkeypatch.delenv(command.USERNS_ENV, raising=False)
    src = str(Path(__file__).resolve().parents[2] / "src")
    monkeypatch.setenv("PYTHONPATH", src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = tmp_path / "r.json"
    code = main(
        [
            "run",
            "--isolated",
            "--port-range",
            "40000-40099",
            "--count",
            "150",
            "--no-escalate",
            "--plateau",
            "0.1",
            "-q",
            "--json",
            str(result),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "user namespace" in capsys.readouterr().err
    doc = load(result)
    c = doc["steps"][0]["ceiling"]
    assert (c["count"], c["cause"]) == (100, "ephemeral-ports")
    assert_gone(doc)
