"""Watching a run (issue 13): /metrics scraped during a small `conncap open` on loopback and
parsed with prometheus_client's own parser; the event stream of the same run (every line JSON,
in order, types as documented); prometheus_client is imported only with --metrics, and
without it --metrics is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conncap import cli
from conncap.engine import ServerPool
from conncap.observe.events import TYPES

prom = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

COUNT = 300


def _scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], name: str, **labels: str) -> float | None:
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_metrics_and_events_during_open(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    with ServerPool(ports=(0,)) as srv:
        port = srv.ports[0]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conncap",
                "open",
                f"127.0.0.1:{port}",
                "--count",
                str(COUNT),
                "--hold",
                "4",
                "--metrics",
                "127.0.0.1:0",
                "--events",
                str(events),
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stderr is not None
            url = None
            end = time.monotonic() + 20
            while url is None and time.monotonic() < end:
                line = proc.stderr.readline()
                if not line:
                    break
                if "metrics at " in line:
                    url = line.split("metrics at ", 1)[1].strip()
            assert url is not None and url.startswith("http://127.0.0.1:")
            fams: dict[str, Any] = {}
            end = time.monotonic() + 15
            while time.monotonic() < end:
                fams = _scrape(url)
                if _value(fams, "conncap_connections_held") == COUNT:
                    break
                time.sleep(0.2)
            assert _value(fams, "conncap_connections_held") == COUNT
            info = fams["conncap_info"]  # the text format has no info type: a gauge of 1
            assert info.samples[0].value == 1
            assert info.samples[0].labels["command"] == "open"
            assert "version" in info.samples[0].labels
            assert _value(fams, "conncap_connect_attempts_total") == COUNT
            assert _value(fams, "conncap_connections_established_total") == COUNT
            hist = fams["conncap_connect_latency_seconds"]
            assert hist.type == "histogram"
            assert _value(fams, "conncap_connect_latency_seconds_count") == COUNT
            assert _value(fams, "conncap_connect_latency_seconds_bucket", le="+Inf") == COUNT
            assert (_value(fams, "conncap_connect_latency_seconds_sum") or 0) > 0
            # the smallest bucket is 10 µs
            assert _value(fams, "conncap_connect_latency_seconds_bucket", le="1e-05") is not None
            assert fams["conncap_memory_bytes"].type == "gauge"
            assert (_value(fams, "conncap_memory_bytes", part="client") or 0) > 0
            assert "conncap_time_wait_sockets" in fams
            proc.stderr.read()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    lines = events.read_text().splitlines()
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert docs[0]["type"] == "run-start" and docs[-1]["type"] == "run-end"
    assert docs[0]["argv"][:2] == ["conncap", "open"]
    ts = [d["t"] for d in docs]
    assert ts == sorted(ts), "t never goes back"
    assert all(d["type"] in TYPES and d["ts"].endswith("+00:00") for d in docs)
    kinds = [d["type"] for d in docs]
    assert kinds.index("step-start") < kinds.index("step-end") < kinds.index("run-end")
    samples = [d for d in docs if d["type"] == "sample"]
    assert samples and samples[-1]["held"] == COUNT
    assert any(d.get("latency_p99_ms") for d in samples)
    assert docs[-1]["stop_reason"] == "hold"


def test_prometheus_client_is_imported_only_with_metrics() -> None:
    with ServerPool(ports=(0,)) as srv:
        code = (
            "import sys; from conncap.cli import main; "
            f"rc = main(['open', '127.0.0.1:{srv.ports[0]}', '--count', '5']); "
            "print('IMPORTED' if 'prometheus_client' in sys.modules else 'CLEAN', rc)"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["CLEAN", "0"], r.stderr


def test_metrics_without_the_library_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    rc = cli.main(["open", "127.0.0.1:9", "--count", "1", "--metrics", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "pip install 'conncap[metrics]'" in err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("127.0.0.1:x", "expected ADDR:PORT"),
        ("127.0.0.1:70000", "0-65535"),
        ("host:1", "not an IP"),
    ],
)
def test_bad_metrics_address_is_one_line(
    text: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["serve", "--metrics", text, "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and err.count("\n") == 1


def _metrics_url(proc: subprocess.Popen[str]) -> str:
    """The URL from the command's ``conncap: metrics at URL`` line on stderr."""
    assert proc.stderr is not None
    end = time.monotonic() + 20
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        if "metrics at " in line:
            return line.split("metrics at ", 1)[1].strip()
    raise AssertionError("no 'metrics at' line")


def _ordered_events(path: Path, command: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in path.read_text().splitlines()]  # every line is JSON
    assert docs[0]["type"] == "run-start" and docs[-1]["type"] == "run-end"
    assert docs[0]["command"] == command
    ts = [d["t"] for d in docs]
    assert ts == sorted(ts), "t never goes back"
    assert all(d["type"] in TYPES and d["ts"].endswith("+00:00") for d in docs)
    kinds = [d["type"] for d in docs]
    assert kinds.index("step-start") < kinds.index("step-end") < kinds.index("run-end")
    return docs


def test_churn_takes_events_and_metrics(tmp_path: Path) -> None:
    """Issue 13: ``open --lifetime`` streams its samples (with TIME_WAIT and closed) and
    serves /metrics, the same flags as a hold run."""
    events = tmp_path / "churn.ndjson"
    with ServerPool(ports=(0,)) as srv:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "conncap", "open", f"127.0.0.1:{srv.ports[0]}"),
                *("--rate", "100", "--lifetime", "0.2", "--duration", "2.5"),
                *("--metrics", "127.0.0.1:0", "--events", str(events)),
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            url = _metrics_url(proc)
            fams: dict[str, Any] = {}
            end = time.monotonic() + 10
            while time.monotonic() < end:
                fams = _scrape(url)
                if (_value(fams, "conncap_connections_established_total") or 0) >= 50:
                    break
                time.sleep(0.2)
            assert (_value(fams, "conncap_connections_established_total") or 0) >= 50
            assert fams["conncap_info"].samples[0].labels["command"] == "open"
            assert "conncap_time_wait_sockets" in fams
            assert _value(fams, "conncap_connect_latency_seconds_count") is not None
            assert proc.stderr is not None
            proc.stderr.read()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    docs = _ordered_events(events, "open")
    assert docs[0]["plan"]["lifetime"] == 0.2 and "churn" in docs[0]
    samples = [d for d in docs if d["type"] == "sample"]
    # the churn pool's figures, once its workers report (not in the sample before they start)
    assert len(samples) > 4 and all("time_wait" in d and "closed" in d for d in samples[-4:])
    assert samples[-1]["closed"] > 0
    assert docs[-1]["stop_reason"] in ("count", "ceiling")
