"""conncap.run.summary: the words printed after a run, from a result document."""

from __future__ import annotations

from typing import Any

from conncap.run.summary import advice_lines, memory_lines, step_line, summary_lines


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
        "ceiling": {
            "reached": True,
            "count": measured,
            "cause": "ephemeral-ports",
            "errno": "EADDRNOTAVAIL",
            "evidence": "every (source IP, destination) pair failed to connect (2 of 2 workers)",
        },
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
        "comparison": {"text": text},
    }


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
            {"listen_overflows": 0, "listen_drops": 0, "syn_retrans": 0},
            {"listen_overflows": 3, "listen_drops": 3, "syn_retrans": 5},
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
                "ceiling": {"reached": False},
                "comparison": {
                    "text": "reached the requested 100,000, below the predicted ceiling of "
                    "119,952 (file-descriptors)"
                },
            },
        ],
        "ceiling": {
            "reached": True,
            "cause": "ephemeral-ports",
            "knob": "net.ipv4.ip_local_port_range",
            "advice": ['sysctl -w net.ipv4.ip_local_port_range="1024 65535"', "persist it"],
            "windows": "netsh int ipv4 set dynamicport tcp start=1025 num=64511",
        },
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
    lines = summary_lines(doc())
    text = "\n".join(lines)
    assert lines[0].startswith("Prediction: with 1 source IP and 1 destination port")
    assert "A single client process would stop first, at 19,992" in lines[1]
    assert "step 1 used 2 client processes" in lines[1]
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
        step1(28229, "predicted 28,232, measured 28,229 (-3) (3 ports ... listening socket)"), 1
    )
    assert "Predicted 28,232, measured 28,229 (-3)" in line and "✓" not in line


def test_memory_not_measured_is_said() -> None:
    assert memory_lines({}) == [
        "Memory per connection: not measured (the ramp had too few samples)."
    ]


def test_no_ceiling_no_advice() -> None:
    assert advice_lines({"reached": False, "cause": None}, "linux") == []


def test_summary_of_an_empty_or_damaged_document_does_not_crash() -> None:
    lines = summary_lines({"steps": "nonsense", "memory": 3, "timeline": None, "error": "boom"})
    assert any(line.startswith("Run:") for line in lines)
    assert "Error: boom." in lines
