"""The event writer (order, queued signal events, a reader that goes away) and the metric
families of one set of figures, parsed back with prometheus_client's parser."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest

from conncap import latency as L
from conncap.observe.events import EventWriter
from conncap.observe.figures import Figures, from_sample
from conncap.result import Sample


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _writer(out: io.StringIO, clock: Clock) -> EventWriter:
    return EventWriter(out, clock=clock, wall=lambda: dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC))


def test_lines_in_order_with_queued_signal() -> None:
    out, clock = io.StringIO(), Clock()
    w = _writer(out, clock)
    w.write("run-start", {"command": "open"})
    clock.now += 0.5
    w.sample(Sample(t=0.25, held=3, failures=0, rate=12.0, failures_by_cause={}))
    w.later("signal", signal="SIGINT")  # from a handler: written with the next line
    clock.now += 0.25
    w.write("run-end", {"stop_reason": "interrupted"})
    w.close()
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["type"] for d in docs] == ["run-start", "sample", "signal", "run-end"]
    assert [d["t"] for d in docs] == [0.0, 0.5, 0.75, 0.75]
    assert docs[0]["ts"] == "2026-01-01T12:00:00.000+00:00"
    assert docs[1]["sample_t"] == 0.25 and docs[1]["held"] == 3 and "step" not in docs[1]
    # a field cannot overwrite the line's own keys
    w2 = _writer(out := io.StringIO(), clock)
    w2.write("message", {"type": "x", "t": -1, "text": "hi"})
    doc = json.loads(out.getvalue())
    assert (doc["type"], doc["t"], doc["text"]) == ("message", 0.0, "hi")


def test_non_finite_number_is_null() -> None:
    out = io.StringIO()
    w = _writer(out, Clock())
    w.write("sample", {"rate": float("nan")})
    assert json.loads(out.getvalue())["rate"] is None


def test_a_reader_that_goes_away_stops_the_stream_not_the_run() -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    w = _writer(Gone(), Clock())
    w.write("run-start", {})
    w.write("run-end", {})  # no exception
    w.close()


def test_metric_families_parse_back() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    sample = Sample(
        t=1.0,
        held=5,
        failures=2,
        rate=1.0,
        failures_by_cause={"ephemeral-ports": 2},
        established=5,
        server_held=5,
        server_accepted=5,
        server_errors={},
        kernel_bytes=4096,
    )
    hist = L.Histogram.of([0, 3, 2], sum_ns=60_000, max_ns=13_000)
    fig = from_sample("run", sample, attempts=7, latency=hist, client_rss=1000, time_wait=4)

    text = _text(fig)
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert got[("conncap_connections_held", ())] == 5
    assert got[("conncap_connect_attempts_total", ())] == 7
    assert got[("conncap_connect_failures_total", (("cause", "ephemeral-ports"),))] == 2
    assert got[("conncap_server_accepts_total", ())] == 5
    assert got[("conncap_time_wait_sockets", ())] == 4
    assert got[("conncap_memory_bytes", (("part", "client"),))] == 1000
    assert got[("conncap_memory_bytes", (("part", "kernel"),))] == 4096
    # 10 µs: 0 below it; 11.892 µs: the 3 of bucket 1; +Inf: all 5
    assert got[("conncap_connect_latency_seconds_bucket", (("le", "1e-05"),))] == 0
    assert got[("conncap_connect_latency_seconds_bucket", (("le", "1.1892e-05"),))] == 3
    assert got[("conncap_connect_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert got[("conncap_connect_latency_seconds_count", ())] == 5
    assert got[("conncap_connect_latency_seconds_sum", ())] == pytest.approx(6e-5)
    buckets = [k for k in got if k[0] == "conncap_connect_latency_seconds_bucket"]
    assert len(buckets) == L.BUCKETS
    # figures a command does not measure are left out, not shown as 0
    only = {f.name for f in text_string_to_metric_families("".join(_text(Figures("serve"))))}
    assert only == {"conncap_info"}


def _text(fig: Figures) -> str:
    from prometheus_client.core import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector

    from conncap.observe.metrics import families

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            yield from families(fig)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    return generate_latest(reg).decode()
