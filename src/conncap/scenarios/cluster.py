"""``cluster``: K client hosts, each a Ray node, open against one server in ONE coordinated
run (``conncap open --cluster``), and each stops at its own predicted ceiling.

K client namespaces and a server namespace on one bridge (``many_clients``). Each client host
gets its own narrow ``ip_local_port_range`` (small: 50, 80, 120, … ports; full: 1,000,
2,000, …) so each stops at a different count, all predicted. A Ray head starts in the first
client host and a Ray node in each other one (``ray start --block`` under the topology, so
their pids are owned and ended first; every port Ray opens is placed outside the ranges,
``conncap.cluster.ports``). The driver must reach the head: ``conncap open --cluster`` runs
inside the head's namespace. The scenario checks every node's ceiling against its
prediction, the sum against what the server holds, and that no Ray process is left in the
client hosts once Ray is stopped. The topology then removes the namespaces (and ends
anything still inside them, by pid); ``conncap cleanup`` finds Ray's processes there too.

With ``options["command"] == "run"`` the driver is ``conncap run --target SERVER:PORT
--cluster``: each client host gets a second address, so every node's step 1 stops at its
range and its step 2 (its two addresses) at twice that; the server holds the sum.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from conncap.errors import RunFailed
from conncap.result import (
    Attribution,
    Node,
    Result,
    ServerFigures,
    json_object,
    load_result,
)
from conncap.scenarios import expect as ex
from conncap.scenarios.framework import ScenarioRun
from conncap.scenarios.step import Step

#: Ports of each client host's range, by scale; node i of K > 3 takes the last size + 40 × i.
SIZES = {"small": (50, 80, 120), "full": (1000, 2000, 3000)}
#: First port of every client host's range (Ray's ports are all below it).
RANGE_LO = 40000
#: Connections each node is asked for beyond its range (so every node reaches its ceiling).
MARGIN = 40
#: Bounds: the driver's --max-duration, the wait for the head, the stop of each process.
DRIVER_MAX_S = 60.0
HEAD_WAIT_S = 45.0
STOP_S = 15.0
#: Seconds the driver holds once every node's ramp is over (the server is read meanwhile).
HOLD_S = 1.5


def ray_executable() -> str:
    """The ``ray`` command of this Python (the venv conncap runs from), or RunFailed."""
    here = Path(sys.executable).parent / "ray"
    if here.exists():
        return str(here)
    found = shutil.which("ray")
    if found is None:
        raise RunFailed(
            "the cluster scenario needs Ray: pip install 'conncap[ray]' (no `ray` command "
            f"next to {sys.executable} or on PATH)"
        )
    return found


def sizes(scale: str, k: int) -> list[int]:
    base = list(SIZES[scale])
    step = 40 if scale == "small" else 1000
    while len(base) < k:
        base.append(base[-1] + step)
    return base[:k]


def _stop(proc: subprocess.Popen[Any], timeout: float = STOP_S) -> None:
    """SIGTERM (``ray start --block`` then ends its node's processes), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def run(sr: ScenarioRun) -> None:
    from conncap.cluster import ports as rp
    from conncap.netns import reaper
    from conncap.netns.sysctls import port_range_value

    k = int(sr.options.get("nodes") or 3)
    if k < 3:
        raise RunFailed("the cluster scenario needs at least 3 nodes")
    as_run = sr.options.get("command") == "run"
    #: addresses per client host: a second one for run's step 2
    per_host = 2 if as_run else 1
    ray = ray_executable()
    widths = sizes(sr.scale, k)
    ranges = [(RANGE_LO, RANGE_LO + w - 1) for w in widths]
    for r in ranges:
        if rp.clashes(r):
            raise RunFailed(f"Ray's ports {rp.clashes(r)} lie inside the range {r}")
    total_ports = sum(widths)
    mc = sr.topo.many_clients(k, somaxconn=max(4096, 2 * total_ports))
    for host, r in zip(mc.clients, ranges, strict=True):
        sr.topo.sysctls_set(host, {"net.ipv4.ip_local_port_range": port_range_value(r)})
    # run's step 2: a second address for each client host (a /32 of the block conncap uses
    # for source addresses; the server routes it back via that host)
    from conncap.netns.naming import SOURCE_BLOCK

    spare = [str(a) for _, a in zip(range(k), SOURCE_BLOCK.hosts(), strict=False)]
    extra_ips: list[list[str]] = [[] for _ in mc.clients]
    if as_run:
        for i, (host, ip) in enumerate(zip(mc.clients, mc.client_ips, strict=True)):
            extra_ips[i] = sr.topo.add_addresses(host, [f"{spare[i]}/32"])
            sr.topo.route(mc.server, spare[i], via=ip)
    server = sr.server(mc.server, mc.server_ip)
    port = server.ports[0]
    head_ip = mc.client_ips[0]
    address = f"{head_ip}:{rp.GCS_PORT}"
    # --count is split evenly over the nodes: every share must pass the widest range
    count = k * (per_host * max(widths) + MARGIN)
    sr.layout = {
        "clients": [
            {"netns": h.name, "ip": ip, "port_range": list(r), "ray": "head" if i == 0 else "node"}
            for i, (h, ip, r) in enumerate(zip(mc.clients, mc.client_ips, ranges, strict=True))
        ],
        "server": {"netns": mc.server.name, "ip": mc.server_ip, "port": port},
        "switch": mc.switch.name,
        "ray": {"address": address, "ports": rp.port_flags(True)},
    }
    sr.settings = {"nodes": k, "port_ranges": [list(r) for r in ranges], "count": count}
    sr.headline = "cluster"

    temp = tempfile.mkdtemp(prefix="cc-ray-")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(Path(temp) / "conncap-ray-start.log", "w")  # noqa: SIM115 (closed below)
    ray_procs: list[subprocess.Popen[Any]] = []
    driver: subprocess.Popen[str] | None = None
    result: Result | None = None
    # the server's highest count while the cluster ran, and its connections by source IP then
    peak_held = 0
    peak_by_ip: dict[str, int] = {}
    t_ray = time.monotonic()
    try:
        sr.say(f"step 1 ray: a Ray head in {mc.clients[0].name}, a node in each other client")
        ray_procs.append(
            sr.topo.popen(
                mc.clients[0],
                rp.ray_start_argv(ray, node_ip=head_ip, head_address=None, temp_dir=temp),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_listening(sr, mc.clients[0], rp.GCS_PORT, ray_procs[0])
        # One node at a time: nodes on one machine share the head's session directory, and
        # two raylets starting together can pick the same socket name there (the second
        # then dies: "bind: Address already in use"). Separate machines never share it.
        for host, ip in zip(mc.clients[1:], mc.client_ips[1:], strict=True):
            proc = sr.topo.popen(
                host,
                rp.ray_start_argv(ray, node_ip=ip, head_address=address),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            ray_procs.append(proc)
            _wait_listening(sr, host, rp.NODE_PORTS["--node-manager-port"], proc)
        sr.layout["ray"]["pids"] = [p.pid for p in ray_procs]
        sr.say(f"  Ray started ({time.monotonic() - t_ray:.1f} s): {address}")

        out_json = Path(temp) / "cluster.json"
        target = f"{mc.server_ip}:{port}"
        if as_run:
            argv = ["run", "--target", target, "--plateau", str(HOLD_S)]
        else:
            argv = ["open", target, "--hold", str(HOLD_S)]
        argv += ["--cluster", address, "--nodes", str(k), "--count", str(count), "--timeout", "2"]
        argv += ["--max-duration", str(DRIVER_MAX_S), "--json", str(out_json)]
        sr.say(f"step 2 cluster: conncap {' '.join(argv)}")
        t_start = sr.now()
        driver = sr.topo.popen(
            mc.clients[0],
            [sys.executable, "-m", "conncap", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        said: list[str] = []
        reader = threading.Thread(target=_relay, args=(driver, sr, said), daemon=True)
        reader.start()
        end = time.monotonic() + DRIVER_MAX_S + 60
        while driver.poll() is None and time.monotonic() < end:
            st = server.stats()
            if st.held > peak_held:
                peak_held, peak_by_ip = st.held, dict(st.per_source_ip)
            sr.sample("cluster")
            time.sleep(0.1)
        if driver.poll() is None:
            raise RunFailed(f"the driver did not finish within {DRIVER_MAX_S + 60:.0f} s")
        reader.join(5)
        if out_json.exists():
            result = load_result(out_json)
        if driver.returncode != 0 or result is None:
            last = said[-1].strip() if said else "no output"
            raise RunFailed(f"conncap {argv[0]} --cluster exited {driver.returncode}: {last}")
        t_end = sr.now()
    except BaseException:
        log.flush()
        tail = (Path(temp) / "conncap-ray-start.log").read_text(errors="replace").splitlines()
        for line in tail[-10:]:
            sr.note(f"ray start: {line}")
        raise
    finally:
        if driver is not None and driver.poll() is None:
            _stop(driver)
        for proc in reversed(ray_procs):  # the nodes, then the head
            _stop(proc)
        log.close()
        left = reaper.pids_in([h.name for h in mc.clients])
        shutil.rmtree(temp, ignore_errors=True)
    n_left = sum(len(v) for v in left.values())
    assert result is not None

    # ---- checks -----------------------------------------------------------------------------
    step_name = "cluster"
    by_ip = {n.address: n for n in result.nodes}
    for host, ip, r, w in zip(mc.clients, mc.client_ips, ranges, widths, strict=True):
        node = by_ip.get(ip)
        label = f"{host.role} ({ip}, ports {r[0]}-{r[1]})"
        if node is None:
            sr.check(ex.holds(f"{label}: an agent ran", False, "an agent", "none"))
            continue
        sr.check(ex.same(f"{label}: not lost", False, node.lost, step=step_name))
        pred = node.prediction
        sr.check(
            ex.equal(
                f"{label}: the model predicts its range"
                + (" × its 2 addresses (step 2)" if as_run else ""),
                per_host * w,
                pred.count,
                step=step_name,
            )
        )
        sr.check(
            ex.equal(f"{label}: held its predicted ceiling", pred.count, node.held,
                     step=step_name)
        )  # fmt: skip
        c = node.ceiling
        sr.check(
            ex.same(
                f"{label}: stopped by its own ports",
                ("ephemeral-ports", "client", "EADDRNOTAVAIL"),
                (c.cause, c.side, c.errno),
                step=step_name,
            )
        )
        listeners = (node.ray_cost or {}).get("listeners_in_range")
        sr.check(
            ex.equal(
                f"{label}: Ray holds no port of its range",
                0,
                listeners if isinstance(listeners, int) else None,
                step=step_name,
            )
        )
        off, rtt = node.clock_offset_s, node.clock_rtt_s
        sr.check(
            ex.holds(
                f"{label}: clock offset within the round trip (one machine, one clock)",
                off is not None and rtt is not None and abs(off) <= rtt / 2 + 0.002,
                "|offset| <= rtt/2",
                f"{(off or 0) * 1000:+.2f} ms (rtt {(rtt or 0) * 1000:.2f} ms)",
                step=step_name,
            )
        )
    total = result.held_at_end
    sr.check(
        ex.equal(
            "the cluster holds the sum of the ranges" + (" × 2" if as_run else ""),
            per_host * total_ports,
            total,
            step=step_name,
        )
    )
    sr.check(ex.equal("the server holds the sum", total, peak_held, step=step_name))
    sr.check(
        ex.same(
            "the server tells the nodes apart by source IP: each its range",
            {
                a: w
                for ip, extra, w in zip(mc.client_ips, extra_ips, widths, strict=True)
                for a in (ip, *extra)
            },
            peak_by_ip,
            step=step_name,
        )
    )
    if as_run:
        for rs in result.steps:
            want = per_host * total_ports if rs.name == "four-tuple" else total_ports
            comp = rs.comparison
            sr.check(
                ex.equal(
                    f"run's step {rs.name}: every node as predicted, the sum",
                    want,
                    comp.measured if comp is not None and comp.matches else None,
                    step=step_name,
                )
            )
    fs = result.first_stop
    sr.check(
        ex.note(
            "first to stop",
            f"{fs.address} at {fs.stopped_at_s or 0.0:.2f} s with {fs.ceiling.count} "
            f"({fs.ceiling.cause})"
            if fs is not None
            else "none",
            "timing is not promised; the smallest range usually ends first",
            step=step_name,
        )
    )
    sr.check(ex.equal("no Ray process left in the client hosts", 0, n_left, step=step_name))

    # The cluster's result is an ``open`` result with nodes: its ceiling (the verdict most
    # nodes reached, at the cluster's total), its prediction (the nodes' sum) and its failures
    # are the step's; its nodes go on the scenario's time line.
    ceiling = result.ceiling
    shift = _shift(sr, result, t_start)
    sr.nodes.extend(_on_scenario_time(n, shift) for n in result.nodes)
    _fill_held(sr, result, shift)
    sr.steps.append(
        Step(
            name=step_name,
            title=f"{k} Ray nodes, one coordinated open --cluster",
            t_start=t_start,
            t_end=t_end,
            requested=count,
            held=total,
            established_peak=total,
            attempts=result.attempts or 0,
            failures=dict(result.failures),
            failures_by_cause=dict(result.failures_by_cause),
            ceiling=ceiling,
            prediction=result.prediction,
            attribution=Attribution(
                ceiling.cause or "unknown", ceiling.side or "unknown", ceiling.evidence or ""
            ),
            server=ServerFigures(held=peak_held, per_source_ip=dict(peak_by_ip)),
            counters={},
            plan=dict(result.plan or {}),
            stop_reason=str(result.stop_reason),
            observed={
                "cluster": json_object(
                    {
                        "summary": list(result.summary),
                        "first_stop": fs.address if fs is not None else None,
                    },
                    "cluster",
                )
            },
        )
    )


def _shift(sr: ScenarioRun, result: Result, t_start: float) -> float:
    """Seconds from the scenario's start to the cluster's common start (the cluster result's
    ``started_at``, to the millisecond; one machine, one clock). Without it: the driver's
    launch."""
    if result.started_at is None:
        return t_start
    try:
        common = dt.datetime.fromisoformat(result.started_at)
    except ValueError:
        return t_start
    return round((common - sr.started_at).total_seconds(), 3)


def _fill_held(sr: ScenarioRun, result: Result, shift: float) -> None:
    """The scenario's own samples hold no client (the clients are the Ray nodes): give each
    the cluster's total at that time (held, rate and failures: its latest sample before), while
    the cluster's timeline lasts."""
    totals = [(s.t + shift, s) for s in result.timeline]
    if not totals:
        return
    for i, s in enumerate(sr.timeline):
        if s.t > totals[-1][0]:
            break
        latest = None
        for t, total in totals:
            if t > s.t:
                break
            latest = total
        if latest is not None:
            sr.timeline[i] = dataclasses.replace(
                s,
                held=latest.held,
                rate=latest.rate,
                failures=latest.failures,
                failures_by_cause=dict(latest.failures_by_cause),
            )


def _on_scenario_time(node: Node, shift: float) -> Node:
    """A node with its samples and its stop moved from the cluster's time line (0 = the
    common start) to the scenario's."""
    return dataclasses.replace(
        node,
        timeline=tuple(dataclasses.replace(s, t=round(s.t + shift, 3)) for s in node.timeline),
        stopped_at_s=None if node.stopped_at_s is None else round(node.stopped_at_s + shift, 3),
    )


def _wait_listening(sr: ScenarioRun, host: Any, port: int, proc: subprocess.Popen[Any]) -> None:
    """Until something listens on ``port`` inside ``host`` (the head's GCS, a node's
    raylet), bounded."""
    end = time.monotonic() + HEAD_WAIT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RunFailed(f"ray start exited {proc.returncode} in {host.name}")
        out = sr.topo.run(host, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.3)
    raise RunFailed(f"Ray did not listen on {port} in {host.name} within {HEAD_WAIT_S:.0f} s")


def _relay(proc: subprocess.Popen[str], sr: ScenarioRun, said: list[str]) -> None:
    """The driver's lines, indented, as they come (and kept, for an error)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        said.append(line)
        sr.say("  | " + line.rstrip())
