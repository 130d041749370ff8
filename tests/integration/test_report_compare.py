"""A report that reproduces itself (issue 13): the latency table, plot and the reproduction
section in a run's report; two runs side by side (`conncap report A.json B.json -o cmp.html`)
rendered in headless Chromium without console errors; the CSV export round-trips."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import OPEN, RUN, load, svgs, typed
from test_report_browser import chromium, console_lines

from conncap import cli, report
from conncap import latency as L
from conncap.report.compare import render_compare
from conncap.report.csvout import steps_csv, timeline_csv
from conncap.result import Latency


def with_latency(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as a conncap with issue 13 writes it: argv, latency per sample, step and run."""
    out = json.loads(json.dumps(doc))
    lat = Latency.of(L.Histogram.of([0, 0, 5, 40, 30, 10, 2], sum_ns=1_400_000, max_ns=22_000))
    assert lat is not None
    lat_json = json.loads(json.dumps(to_json_part(lat)))
    out["argv"] = ["conncap", "run", "--count", "100000", "--out", "results/"]
    out["latency"] = lat_json
    for st in out.get("steps", []):
        st["latency"] = lat_json
    for i, s in enumerate(out["timeline"]):
        if i % 2:
            s["latency_p50_ms"] = 0.5 + i / 100
            s["latency_p99_ms"] = 2.0 + i / 50
    return out


def to_json_part(part: object) -> object:
    from conncap.result import part_to_json

    return part_to_json(part)


def test_run_report_has_latency_and_how_to_reproduce() -> None:
    page = report.render(typed(with_latency(load(RUN))))
    assert "<h2>Connect latency</h2>" in page
    assert 'aria-label="connect latency over time"' in page
    assert "p99.9 (ms)" in page and "whole run" in page
    assert "from just before connect() to the epoll wake-up" in page
    assert "<h2>Reproduce this run</h2>" in page
    assert "conncap run --count 100000 --out results/" in page
    # an older result says what it lacks, never invents it
    old = report.render(typed(load(RUN)))
    assert "Connect latency: none in this result" in old and "not recorded" in old


@pytest.mark.browser
def test_comparison_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    a_path = tmp_path / "a.json"
    b_path = tmp_path / "b.json"
    a_path.write_text(json.dumps(load(RUN)))
    b_path.write_text(json.dumps(with_latency(load(RUN))))
    out = tmp_path / "cmp.html"
    assert cli.main(["report", str(a_path), str(b_path), "-o", str(out)]) == 0
    page = out.read_text()
    assert f'content="{html.escape(report.CSP)}"' in page  # default-src 'none'
    assert len(svgs(page)) == 3  # held, latency, kernel memory overlaid
    done = chromium(tmp_path, out, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "conncap comparison: a.json and b.json" in done.stdout
    assert len(re.findall(r"<svg\b", done.stdout)) == 3
    assert console_lines(done.stderr) == []


def test_comparison_of_an_open_and_a_run() -> None:
    page = render_compare(typed(load(OPEN)), typed(with_latency(load(RUN))), "open", "run")
    assert "not measured" in page  # the open result has no latency, no memory
    assert page.count("<h3>open</h3>") == 2  # latency tables, reproduction


def test_report_takes_at_most_two_results(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(RUN), str(RUN), str(RUN)]) == 2
    assert "one result, or two" in capsys.readouterr().err


def test_csv_round_trip(tmp_path: Path) -> None:
    doc = with_latency(load(RUN))
    result = typed(doc)
    src = tmp_path / "run.json"
    src.write_text(json.dumps(doc))
    out_dir = tmp_path / "csv"
    assert (
        cli.main(["report", str(src), "-o", str(tmp_path / "r.html"), "--csv", str(out_dir)]) == 0
    )
    rows = list(csv.DictReader(io.StringIO((out_dir / "timeline.csv").read_text())))
    assert len(rows) == len(result.timeline)  # header + one row per sample
    for row, s in zip(rows, result.timeline, strict=True):
        assert float(row["t"]) == s.t and int(row["held"]) == s.held
        for cause, n in s.failures_by_cause.items():
            assert int(row[f"failures:{cause}"]) == n
        p99 = row["latency_p99_ms"]
        assert (float(p99) if p99 else None) == s.latency_p99_ms
    assert (out_dir / "timeline.csv").read_text() == timeline_csv(result)
    steps = list(csv.DictReader(io.StringIO((out_dir / "steps.csv").read_text())))
    assert [r["name"] for r in steps] == [s.name for s in result.steps]
    assert all(float(r["latency_p99_ms"]) == result.latency.p99_ms for r in steps)  # type: ignore[union-attr]
    assert steps_csv(typed(load(OPEN))) is None
