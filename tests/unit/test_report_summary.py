"""conncap.report.summary: the words printed after a run, and the summary of any result
document."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from result_docs import ceiling, result_of, sample

from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.report import summary
from conncap.report.summary import advice_lines, memory_lines, step_line, summary_lines
from conncap.result import Ceiling, Memory, Result, Step, load_result


def step1(
    measured: int = 28232, text: str = "predicted 28,232, measured 28,232 ✓"
) -> dict[str, Any]:
    return {
        "name": "ports",
        "title": "one source IP to one server port",
        "plan": {"workers": 2},
        "t_start": 0.2,
        "t_ramp_end": 6.6,
        "t_end": 8.1,
        "held_before": 0,
        "established_peak": measured,
        "ceiling": ceiling(
            reached=True,
            count=measured,
            cause="ephemeral-ports",
            side="client",
            errno="EADDRNOTAVAIL",
            evidence="every (source IP, destination) pair failed to connect (2 of 2 workers)",
        ),
        "prediction": {
            "count": 28232,
            "cause": "ephemeral-ports",
            "line": "with 1 source IP and 1 destination port the client will stop at 28,232",
            "single_process": {
                "count": 19992,
                "cause": "file-descriptors",
                "detail": "RLIMIT_NOFILE hard 20,000 − 8 in use",
                "binds_first": True,
            },
        },
        "comparison": _comparison(28232, measured, text),
    }


def _comparison(predicted: int, measured: int, text: str) -> dict[str, Any]:
    same = predicted == measured
    return {
        "predicted": predicted,
        "measured": measured,
        "exact": same,
        "matches": same,
        "text": text,
    }


def _step(fields: dict[str, Any]) -> Step:
    return result_of(steps=[fields]).steps[0]


def doc() -> dict[str, Any]:
    return {
        "requested": 100000,
        "established_peak": 100000,
        "duration_s": 15.3,
        "stop_reason": "count",
        "attempts": 100012,
        "failures": {"EADDRNOTAVAIL": 12},
        "host": {"os": "linux"},
        "timeline": [
            sample(listen_overflows=0, listen_drops=0, syn_retrans=0),
            sample(t=1.0, listen_overflows=3, listen_drops=3, syn_retrans=5),
        ],
        "steps": [
            step1(),
            {
                "name": "four-tuple",
                "title": "3 source IPs × 3 server ports",
                "t_start": 8.1,
                "t_ramp_end": 10.4,
                "held_before": 28232,
                "established_peak": 100000,
                "ceiling": ceiling(),
                "comparison": _comparison(
                    119952,
                    100000,
                    "reached the requested 100,000, below the predicted ceiling of "
                    "119,952 (file-descriptors)",
                ),
            },
        ],
        "ceiling": ceiling(
            reached=True,
            count=28232,
            cause="ephemeral-ports",
            side="client",
            knob="net.ipv4.ip_local_port_range",
            advice=['sysctl -w net.ipv4.ip_local_port_range="1024 65535"', "persist it"],
            windows="netsh int ipv4 set dynamicport tcp start=1025 num=64511",
        ),
        "memory": {
            "kernel_bytes_per_conn": 8526,
            "user_bytes_per_conn": 643,
            "kernel_source": "slabinfo",
            "samples": 75,
            "kernel_r2": 0.9995,
            "mem_available": 24_057_675_776,
            "extrapolated_ceiling": 2_723_827,
            "guard_bytes": 6 << 30,
            "guard_fraction": 0.25,
            "guard_ceiling": 2_026_561,
            "both_ends": True,
        },
    }


def test_summary_says_prediction_steps_memory_and_advice() -> None:
    lines = summary_lines(result_of(**doc()))
    text = "\n".join(lines)
    assert lines[0] == (
        "Ceiling: 28,232 connections — ephemeral ports (client) — raise with "
        "net.ipv4.ip_local_port_range"
    )
    assert lines[1].startswith("Prediction: with 1 source IP and 1 destination port")
    assert "A single client process would stop first, at 19,992" in lines[2]
    assert "step 1 used 2 client processes" in lines[2]
    assert "Step 1 (one source IP to one server port): held 28,232 in 6.4 s" in text
    assert "stopped by ephemeral-ports (EADDRNOTAVAIL)" in text
    assert "Predicted 28,232, measured 28,232 ✓." in text
    assert "the port ceiling lifted: held 100,000 (+71,768 on step 1's 28,232)" in text
    assert "it ended because it reached the requested count" in text
    assert "EADDRNOTAVAIL 12" in text and "ListenOverflows +3" in text
    assert "SYN retransmits +5" in text
    assert "8.3 KiB kernel (/proc/slabinfo) + 643 B user" in text
    assert "holds about 2.7 million before memory binds (WSAENOBUFS 10055 on Windows)" in text
    assert 'sysctl -w net.ipv4.ip_local_port_range="1024 65535"' in text
    assert "On Windows: netsh int ipv4 set dynamicport" in text


def test_step_line_with_a_miss_gives_the_reason() -> None:
    line = step_line(
        _step(
            step1(28229, "predicted 28,232, measured 28,229 (-3) (3 ports ... listening socket)")
        ),
        1,
    )
    assert "Predicted 28,232, measured 28,229 (-3)" in line and "✓" not in line


def test_memory_not_measured_is_said() -> None:
    assert memory_lines(Memory()) == [
        "Memory per connection: not measured (the ramp had too few samples)."
    ]


def test_no_ceiling_no_advice() -> None:
    assert advice_lines(Ceiling.none(), "linux") == []


def test_summary_of_a_bare_result() -> None:
    lines = summary_lines(result_of(error="boom"))
    assert any(line.startswith("Run:") for line in lines)
    assert "Error: boom." in lines


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ({"steps": "nonsense"}, "steps: expected a list"),
        ({"memory": 3}, "memory: expected an object"),
        ({"timeline": None}, "timeline: expected a list"),
    ],
)
def test_a_damaged_document_is_refused_before_the_summary(
    damage: dict[str, Any], words: str
) -> None:
    """The summary reads a checked result: damage is the loader's one line, not a crash."""
    with pytest.raises(UsageError, match=words):
        result_of(**damage)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("results_generate", FIXTURES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> Result:
    return load_result(FIXTURES / name)


# --- summarize: any result document ---------------------------------------------------------


def test_summarize_a_run() -> None:
    lines = summary.summarize(_load("run_loopback.json"))
    text = "\n".join(lines)
    assert lines[0] == "Predicted: 28,232 connections before ephemeral-ports binds (client side)."
    assert "Held 28,232 of 40,000 requested connections at the peak" in text
    assert "EADDRNOTAVAIL 18,000 (90%, ephemeral-ports)" in text
    assert "Ceiling: 28,232 connections, set by ephemeral-ports (EADDRNOTAVAIL)" in text
    assert "The prediction was 28,232 (exactly right)." in text
    assert "Step server-fds (a server limited to 20,000 descriptors): peak 24,087" in text
    gen = _generator()  # the inputs run_loopback.json was built from
    kib = gen.KERNEL_PER_CONN / 1024
    per_conn = gen.KERNEL_PER_CONN + gen.USER_CLIENT_PER_CONN + gen.USER_SERVER_PER_CONN
    usable = (gen.MEM_BASE - gen.PORTS * gen.MEM_AVAILABLE_PER_CONN) * (1 - gen.GUARD_FRACTION)
    millions = (gen.PORTS + usable // per_conn) / 1e6
    assert f"Memory per connection: {kib:.1f} KiB in the kernel (from /proc/slabinfo)" in text
    assert f"per connection this host holds about {millions:.1f} million before memory" in text
    assert "(WSAENOBUFS 10055 on Windows)" in text
    assert "To raise it: net.ipv4.ip_local_port_range" in text
    assert "On Windows: netsh int ipv4 set dynamicport" in text


def test_summarize_the_memory_sentence_of_the_issue() -> None:
    result = result_of(
        memory={
            "kernel_bytes_per_conn": round(8.1 * 1024),
            "mem_available": round(12.3 * 2**30),
            "extrapolated_ceiling": 1_433_053,
        }
    )
    assert summary.summarize(result)[-1] == (
        "12.3 GiB available: at 8.1 KiB per connection this host holds about 1.4 million "
        "before memory binds (WSAENOBUFS 10055 on Windows)."
    )


def test_summarize_an_open_result_has_no_memory_or_advice() -> None:
    lines = summary.summarize(_load("open_minimal.json"))
    assert "No ceiling was reached: all 1,000 requested connections held." in lines
    assert "No attempt failed." in lines
    assert not any("Memory" in line or "To raise" in line for line in lines)


WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    ({"prediction": "x"}, "prediction: expected an object"),
    ({"ceiling": ceiling(reached=True, count="many")}, "ceiling.count: expected an integer"),
    ({"ceiling": ceiling(reached=True, cause=5)}, "ceiling.cause: expected a string"),
    ({"failures": {"EMFILE": "3"}}, "failures.EMFILE: expected an integer"),
    ({"steps": [None]}, "steps[0]: expected an object"),
    ({"memory": {"kernel_bytes_per_conn": "big"}}, "memory.kernel_bytes_per_conn"),
    ({"requested": None}, "requested: expected an integer"),
    ({"established_peak": math.inf}, "established_peak: expected an integer"),
]


@pytest.mark.parametrize(("damage", "words"), WRONG_TYPES, ids=[w for _, w in WRONG_TYPES])
def test_wrong_types_are_refused_before_summarize(damage: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        result_of(**damage)


def test_summarize_a_bare_result() -> None:
    assert summary.summarize(result_of()) == [
        "Held 0 of 0 requested connections at the peak (0 at the end) in 0.0 s.",
        "No attempt failed.",
        "No ceiling was reached: all 0 requested connections held.",
    ]


def test_summarize_uses_catalogue_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    from conncap import catalogue

    class Advice:
        knob = "the catalogue's knob"
        commands = ("cmd one", "cmd two")
        windows = "n/a"

    seen: list[tuple[str, str]] = []

    def advice(cause: Cause, os_name: str) -> Advice:
        seen.append((cause, os_name))
        return Advice()

    monkeypatch.setattr(catalogue, "advice", advice)
    lines = summary.summarize(_load("run_loopback.json"))
    assert "To raise it: the catalogue's knob: cmd one; cmd two." in lines
    assert seen == [(Cause.EPHEMERAL_PORTS, "linux")]


@pytest.mark.parametrize(
    ("n", "text"),
    [(1_433_053, "1.4 million"), (28_232, "28,000"), (150_312, "150,000"), (3_977, "3,977")],
)
def test_about(n: int, text: str) -> None:
    assert summary.about(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(512, "512 B"), (8294.4, "8.1 KiB"), (12.3 * 2**30, "12.3 GiB"), (-2048, "-2.0 KiB")],
)
def test_format_bytes(n: float, text: str) -> None:
    assert summary.format_bytes(n) == text


def test_the_headline_comes_first_with_or_without_a_ceiling() -> None:
    assert summary_lines(result_of(requested=5000, established_peak=5000))[0] == (
        "No ceiling: reached the requested 5,000"
    )
    cut = result_of(requested=5000, established_peak=1200, stop_reason="interrupted")
    assert summary_lines(cut)[0] == (
        "No ceiling reached: held 1,200 of the requested 5,000; it ended because it was "
        "interrupted (Ctrl-C)"
    )


def test_the_report_shows_the_headline_above_the_detail() -> None:
    from conncap.report import html as report

    page = report.render(result_of(**doc()))
    assert '<p class="headline">Ceiling: 28,232 connections — ephemeral ports (client)' in page
    old = result_of(**{**doc(), "summary": ["Prediction: old document"]})
    assert '<p class="headline">Ceiling: 28,232 connections' in report.render(old)


def test_a_run_without_out_says_where_the_report_would_go() -> None:
    from conncap.commands.run import no_report

    assert no_report(None) == (
        "no files written: add --out DIR for the HTML report and the JSON "
        "(DIR/report.html, DIR/result.json)"
    )
    assert "`conncap report r.json` writes it" in no_report("r.json")
