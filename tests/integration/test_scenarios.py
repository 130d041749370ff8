"""Every scenario, run for real between network namespaces at ``--scale small`` (needs root
and `ip netns`): its expectations hold, its exact figures are the kernel's, and nothing is
left behind (namespaces, worker processes, the run record).

Traffic goes only between namespaces these tests create (198.18.0.0/15, 100.64.0.0/10).
Counts are small and every connect has a time-out; the scenarios themselves assert exact
counts only where ports or descriptors bind, and "at least one" for kernel counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from conncap.cli import main
from conncap.netns import userns_command
from conncap.result import load, load_result, to_json
from conncap.scenarios import IsolatedSettings, isolated_pair, run_scenario

pytestmark = pytest.mark.netns

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {ln.split()[0] for ln in out.stdout.splitlines() if ln.startswith("conncap-")}


def _of_runs(runids: set[str]) -> set[str]:
    """Namespaces of these runs still present (other engineers' runs are not ours)."""
    return {n for n in _namespaces() if any(n.startswith(f"conncap-{r}-") for r in runids)}


@pytest.fixture(autouse=True)
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Each test leaves no namespace of its own runs, no run record, no child process.

    Run ids are collected as this process's topologies register them; subprocesses write
    their records into the same directory, and a record is removed only once its
    namespaces are gone.
    """
    from conncap.netns import Registry

    run_dir = tmp_path / "runs"
    monkeypatch.setenv("CONNCAP_RUN_DIR", str(run_dir))
    seen: set[str] = set()
    original = Registry.write

    def spy(self: Registry, record: Any) -> Any:
        seen.add(record.runid)
        return original(self, record)

    monkeypatch.setattr(Registry, "write", spy)
    yield seen
    assert _of_runs(seen) == set()
    assert not (run_dir.exists() and list(run_dir.glob("*.json")))
    assert psutil.Process().children(recursive=True) == []


def _run(name: str) -> dict[str, Any]:
    lines: list[str] = []
    outcome = run_scenario(name, scale="small", out=lines.append)
    text = "\n".join(lines)
    assert outcome.passed, f"scenario {name} failed:\n{text}"
    doc = to_json(outcome.result)
    assert doc["command"] == "scenario" and doc["scenario"]["name"] == name
    assert doc["timeline"] and all("t" in s and "held" in s for s in doc["timeline"])
    assert "✓" in text and "✗" not in text
    return doc


def _step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s["name"] == name)


def test_article() -> None:
    doc = _run("article")
    s1 = _step(doc, "maxuserport-5000")
    assert s1["held"] in (3976, 3977)  # 3,977 ports; connect() may leave one end unused
    assert s1["ceiling"]["errno"] == "EADDRNOTAVAIL"
    assert s1["ceiling"]["cause"] == "ephemeral-ports"
    assert s1["server"]["per_source_ip"] == {doc["topology"]["client"]["ip"]: s1["held"]}
    assert s1["observed"]["server_ss"]["distinct_peer_ports"] == s1["held"]
    assert s1["observed"]["server_ss"]["local_ports"] == [doc["topology"]["server"]["port"]]
    assert _step(doc, "maxuserport-5000-explicit")["held"] == 3977
    assert _step(doc, "maxuserport-10000")["held"] in (8976, 8977)
    s4 = _step(doc, "maxuserport-65535")
    assert s4["ceiling"]["cause"] == "file-descriptors" and s4["ceiling"]["errno"] == "EMFILE"
    table = s4["observed"]["client_fd_table"]
    assert table["open"] == table["limit"] and table["sockets"] == s4["held"]
    assert doc["ceiling"]["cause"] == "ephemeral-ports"  # the headline is the article's
    # the article's story: its Windows error and knob beside Linux's, as a short narrative
    story = doc["summary"][1:5]
    assert story[0].startswith("Setting: the client's ip_local_port_range 1024-5000 plays")
    assert "MaxUserPort" in story[0] and "WSAEADDRINUSE (10048)" in story[1]
    assert f"the client held {s1['held']:,}" in story[1]
    assert f"EMFILE at {s4['held']:,}" in story[2]
    assert any("WSAEADDRINUSE" in e["name"] for e in doc["expectations"])
    assert "MaxUserPort" in s1["title"]


def test_four_tuple() -> None:
    doc = _run("four-tuple")
    held = [s["held"] for s in doc["steps"]]
    assert held == [976, 4 * 976, 3 * 4 * 976]
    assert [s["prediction"]["count"] for s in doc["steps"]] == held
    assert all(s["ceiling"]["errno"] == "EADDRNOTAVAIL" for s in doc["steps"])


def test_many_clients() -> None:
    doc = _run("many-clients")
    s1, s2 = doc["steps"]
    assert s1["server"]["held"] == 200 and len(s1["server"]["per_source_ip"]) == 4
    table = s2["observed"]["server_fd_table"]
    assert table["open"] == table["limit"] == 300
    assert s2["server"]["held"] == sum(s2["server"]["per_source_ip"].values())
    assert s2["attribution"]["cause"] == "file-descriptors"
    assert s2["attribution"]["side"] == "server"


def test_nat() -> None:
    doc = _run("nat")
    for step, total in zip(doc["steps"], (100, 200), strict=True):
        assert step["observed"]["server_ss"]["connections"] == 100
        assert step["observed"]["server_ss"]["per_peer_ip"] == {
            doc["topology"]["gateway"]["wan_ip"]: 100
        }
        assert step["server"]["held"] == total
        assert step["counters"]["conntrack_insert_failed"] >= 1
        assert step["ceiling"]["cause"] == "conntrack"
        assert "SNAT port exhaustion" in step["ceiling"]["evidence"]


def test_server_fds() -> None:
    doc = _run("server-fds")
    (s,) = doc["steps"]
    assert s["attribution"]["cause"] == "file-descriptors" and s["attribution"]["side"] == "server"
    assert set(s["failures"]) == {"ETIMEDOUT"}  # the client never sees EMFILE itself
    assert s["server"]["errors_during_step"]["file-descriptors"] >= 1
    assert s["counters"]["listen_overflows"] >= 1
    assert s["observed"]["server_fd_table"]["open"] == 256


def test_backlog() -> None:
    doc = _run("backlog")
    stalled, accepting = doc["steps"]
    assert stalled["attribution"]["cause"] == "server-backlog"
    assert stalled["counters"]["listen_overflows"] >= 1
    assert stalled["counters"]["syn_retrans"] >= 1
    q = stalled["observed"]["accept_queue"]
    assert stalled["observed"]["server_after_resume"]["held"] == q["queued"]
    assert accepting["held"] == 200 and not accepting.get("failures")  # /2 leaves {} out


def test_cli_writes_a_result_that_report_renders(tmp_path: Path) -> None:
    out = tmp_path / "server-fds.json"
    assert main(["scenario", "server-fds", "--scale", "small", "--json", str(out)]) == 0
    doc = load(out)
    assert doc["command"] == "scenario" and doc["steps"]
    from conncap import report

    html = report.render(load_result(out))
    assert "server-ulimit" in html and "file-descriptors" in html


def test_ctrl_c_removes_everything_and_keeps_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "article.json"
    run_dir = Path(os.environ["CONNCAP_RUN_DIR"])
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conncap", "scenario", "article", "--scale", "small",
         "--json", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    runids: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the first step has been measured
            if line.startswith("step 2") or time.monotonic() > deadline:
                break
        runids = {p.stem for p in run_dir.glob("*.json")}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert runids and _of_runs(runids) == set()
    doc = json.loads(out.read_text())
    assert doc["stop_reason"] == "interrupted" and doc["steps"]
    assert doc["scenario"]["passed"] is False


def test_isolated_pair_for_the_run_command(runs: set[str]) -> None:
    from conncap import probes
    from conncap.engine import ClientPool, OpenPlan, ServerPool, Target

    settings = IsolatedSettings(port_range=(20000, 20099), somaxconn=64, server_nofile=128)
    with isolated_pair(settings) as pair:
        names = {pair.client_netns, pair.server_netns}
        assert names <= _of_runs(runs)
        with ServerPool(
            bind=pair.server_ip, netns=pair.server_netns, nofile=pair.server_nofile
        ) as server:
            port = server.ports[0]
            plan = OpenPlan((Target(pair.server_ip, port, port),), count=150, timeout_s=3.0)
            with ClientPool(plan, netns=pair.client_netns, nofile=pair.client_nofile) as pool:
                assert pool.wait(20)
                st = pool.stats()
        assert st.held == 100 and st.ceiling is not None  # the namespace's 100 ports
        assert st.ceiling.errno == "EADDRNOTAVAIL"
        limits = pair.client_limits()
        assert limits.port_range.value == (20000, 20099)
        assert pair.server_limits().somaxconn.value == 64
        assert pair.server_limits().nofile_hard.value == 128
        counters = probes.netstat_counters(reader=pair.server_reader())
        assert counters.passive_opens is not None and counters.passive_opens >= 100
        assert "client ip_local_port_range 20000-20099" in " ".join(pair.describe())
        sources = pair.add_source_ips(3)  # decided after the build, as `run` does
        assert len(sources) == 3 and sources[0] == pair.client_ip
        with ServerPool(bind=pair.server_ip, netns=pair.server_netns) as server:
            port = server.ports[0]
            plan = OpenPlan(
                (Target(pair.server_ip, port, port),), count=400, source_ips=sources, timeout_s=3
            )
            with ClientPool(plan, netns=pair.client_netns) as pool:
                assert pool.wait(20)
                assert pool.stats().held == 3 * 100  # 100 ports per source IP
                assert pool.stats().ceiling is not None
    assert not names & _namespaces()
    host = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert host != ["20000", "20099"]  # the host's own range was never touched


def test_not_root_reruns_itself_inside_a_user_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The re-run path, driven from here as if we were not root: the scenario runs in a
    private user + network namespace, and nothing of it is visible from the host."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    if subprocess.run(["unshare", "-Urmn", "true"]).returncode != 0:
        pytest.skip("user namespaces are not allowed here")
    from conncap.commands import scenario as command

    monkeypatch.setattr(command.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PYTHONPATH", SRC)
    monkeypatch.delenv(command.USERNS_ENV, raising=False)
    out = tmp_path / "server-fds.json"
    code = main(["scenario", "server-fds", "--scale", "small", "--json", str(out)])
    assert code == 0, capsys.readouterr()
    assert "unprivileged user namespace" in capsys.readouterr().err
    doc = load(out)
    assert doc["scenario"]["passed"] is True
    netns = doc["topology"]["server"]["netns"]
    assert netns not in _namespaces()  # it lived in the user namespace's own /run/netns


def test_unprivileged_user_reruns_inside_a_user_namespace() -> None:
    """As user nobody, `conncap scenario` re-runs itself in a user namespace (if allowed)."""
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        pytest.skip("needs setpriv and unshare (util-linux)")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    work = Path(tempfile.mkdtemp(prefix="conncap-test-"))
    try:
        work.chmod(0o777)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SRC, "HOME": str(work)}
        if subprocess.run([*nobody, "unshare", "-Urmn", "true"], cwd=work).returncode != 0:
            pytest.skip("unprivileged user namespaces are not allowed here")

        def usable(python: str) -> bool:
            check = "import psutil, conncap.scenarios, conncap.limits._linux"
            argv = [*nobody, *userns_command([python, "-c", check])]
            return subprocess.run(argv, env=env, cwd=work, capture_output=True).returncode == 0

        python = next((p for p in (sys.executable, "/usr/bin/python3") if usable(p)), None)
        if python is None:
            pytest.skip(
                "no Python that user nobody can run inside a user namespace with "
                "conncap and psutil importable"
            )
        out = work / "backlog.json"
        done = subprocess.run(
            [*nobody, python, "-m", "conncap", "scenario", "backlog", "--scale", "small",
             "--json", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=work,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "unprivileged user namespace" in done.stderr
        doc = load(out)
        assert doc["scenario"]["passed"] is True
        assert doc["topology"]["server"]["netns"] not in _namespaces()  # never visible here
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_scenario_takes_events_and_metrics(tmp_path: Path) -> None:
    """Issue 13: ``scenario --events --metrics``: the loop's samples and events in order, one
    step-end per step with its latency, and /metrics scraped (prometheus_client's parser)
    while the scenario runs; the endpoint binds the host's loopback."""
    parser = pytest.importorskip("prometheus_client.parser")
    events = tmp_path / "scenario.ndjson"
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conncap", "scenario", "server-fds", "--scale", "small",
         "--events", str(events), "--metrics", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    held = 0.0
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "conncap: metrics at http://127.0.0.1:" in line, line
        url = line.split("metrics at ", 1)[1].strip()
        import urllib.request

        end = time.monotonic() + 30
        while held <= 0 and time.monotonic() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                break
            for fam in parser.text_string_to_metric_families(text):
                for s in fam.samples:
                    if s.name == "conncap_info":
                        assert s.labels["command"] == "scenario"
                    if s.name == "conncap_connections_held":
                        held = float(s.value)
            time.sleep(0.1)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert held > 0
    docs = [json.loads(ln) for ln in events.read_text().splitlines()]  # every line JSON
    kinds = [d["type"] for d in docs]
    assert kinds[0] == "run-start" and kinds[-1] == "run-end"
    assert docs[0]["command"] == "scenario" and docs[0]["scenario"] == "server-fds"
    ts = [d["t"] for d in docs]
    assert ts == sorted(ts)
    assert kinds.index("step-start") < kinds.index("step-end")
    assert "sample" in kinds and "message" in kinds
    ends = [d for d in docs if d["type"] == "step-end"]
    assert [d["step"] for d in ends] == ["server-ulimit"]
    assert ends[0]["latency_p99_ms"] is not None  # per-step latency
    assert docs[-1]["passed"] is True


def test_churn() -> None:
    doc = _run("churn")
    fin = _step(doc, "fin-client-closes")
    churn = fin["observed"]["churn"]
    assert churn["opened"] == 200 and fin["ceiling"]["cause"] == "time-wait"
    assert fin["ceiling"]["errno"] == "EADDRNOTAVAIL"
    assert churn["sustainable_rate_predicted"] == 3.333  # 200 ports ÷ 60 s
    assert churn["time_to_exhaustion_predicted_s"] == 2.0  # 200 ports ÷ 100/s
    assert churn["time_wait_peak"] >= 200
    for name in ("rst-closes", "server-closes", "loopback-tw-reuse"):
        c = _step(doc, name)["observed"]["churn"]
        assert c["opened"] == 300 and c["failed"] == 0, name
    assert _step(doc, "rst-closes")["observed"]["churn"]["time_wait_peak"] == 0
    assert 0 < _step(doc, "server-closes")["observed"]["server_time_wait"] <= 200
    assert doc["churn"]["opened"] == 200  # the headline step's, for the report's plot
    assert doc["ceiling"]["cause"] == "time-wait"
