"""Honest memory figures (issue #12): a figure the data cannot support is "not measured: why",
user memory is fitted within one step, and the summary, the table and the plot quote the one
r² that ``analysis.memory_fits`` computed. Synthetic timelines with literal expectations."""

from __future__ import annotations

import dataclasses
import re

from result_docs import result_of
from result_docs import timeline as tl

from conncap import analysis, report
from conncap.report.plots import plot_memory
from conncap.report.summary import memory_lines, summarize
from conncap.result import Memory, from_json, to_json

RAMP = [0.0, 0.0] + [1000.0 * i for i in range(1, 11)] + [10_000.0] * 3  # 15 samples


def test_a_clean_ramp_is_measured_with_its_r2() -> None:
    mem = analysis.memory_report(
        tl(RAMP, kernel_bytes=[1e8 + 8000 * h for h in RAMP]), guard_fraction=0.0
    )
    assert mem.kernel_bytes_per_conn == 8000
    assert mem.kernel_r2 == 1.0 and mem.kernel_reason is None
    assert mem.user_reason == "not measured: this run did not sample user memory"


def test_a_negative_slope_is_not_a_figure() -> None:
    mem = analysis.memory_report(
        tl(RAMP, kernel_bytes=[1e8 - 500 * h for h in RAMP], mem_available=[1e10] * 15),
        guard_fraction=0.0,
    )
    assert mem.kernel_bytes_per_conn is None
    assert mem.extrapolated_ceiling is None  # nothing to extrapolate from
    assert mem.kernel_r2 == 1.0  # the fit's own r², kept
    assert mem.kernel_reason is not None
    assert mem.kernel_reason.startswith(
        "not measured: kernel memory did not grow with connections (-500 B per connection"
    )


def test_memory_that_did_not_move_at_all_is_a_measured_zero() -> None:
    # conncap's workers allocate their tables at start: USS stays put while held rises
    mem = analysis.memory_report(
        tl(
            RAMP,
            kernel_bytes=[1e8 + 8000 * h for h in RAMP],
            user_bytes_client=[3e7] * 15,
            user_bytes_server=[2e7] * 15,
        ),
        guard_fraction=0.0,
    )
    assert mem.user_bytes_per_conn == 0 and mem.user_reason is None


def test_noise_below_the_r2_threshold_is_not_a_figure() -> None:
    noise = [4e6 if i % 2 else -4e6 for i in range(len(RAMP))]
    mem = analysis.memory_report(
        tl(RAMP, kernel_bytes=[1e8 + 1000 * h + n for h, n in zip(RAMP, noise, strict=True)]),
        guard_fraction=0.0,
    )
    assert mem.kernel_bytes_per_conn is None
    assert mem.kernel_r2 is not None and 0 < mem.kernel_r2 < analysis.MIN_R2
    assert mem.kernel_reason is not None
    assert "not a line in connections held" in mem.kernel_reason
    assert f"(r² {mem.kernel_r2:.3f}, below 0.9)" in mem.kernel_reason


def test_too_few_samples_and_too_small_a_range() -> None:
    few = analysis.fit_memory(tl([0, 0, 1000, 1000], a=[0, 1, 2, 3]), ("a",), "kernel")
    assert few.fit is None
    assert few.reason == (
        "not measured: 2 samples of kernel memory on the ramp, at least 3 needed; "
        "a longer ramp (a larger --count, or a lower --rate) measures it"
    )
    narrow = analysis.fit_memory(
        tl([0, 10, 20, 30, 40], a=[0, 1e5, 2e5, 3e5, 4e5]), ("a",), "kernel"
    )
    assert narrow.bytes_per_conn is None and narrow.fit is not None
    assert narrow.reason is not None
    assert narrow.reason.startswith("not measured: held rose by only 40 connections")


def test_user_memory_is_fitted_within_one_step_not_through_its_step() -> None:
    # step 1 ramps 0..5,000 at 200 B a connection; step 2 starts new workers (+50 MB at once)
    # and ramps 5,000..10,000 at 200 B a connection: a fit over both would see the jump
    held = [0.0, 1000, 2000, 3000, 4000, 5000, 5000, 6000, 7000, 8000, 9000, 10_000]
    steps = ["one"] * 6 + ["two"] * 6
    user = [1e7 + 200 * h + (5e7 if s == "two" else 0) for h, s in zip(held, steps, strict=True)]
    timeline = tl(held, user_bytes_client=user, step=steps)
    across = analysis.slope(held, user)
    assert across.slope > 1000 and across.r2 < 0.9  # what the old fit printed
    fit = analysis.memory_fits(timeline)["user"]
    assert fit.bytes_per_conn == 200.0 and fit.reason is None
    assert [timeline[i].step for i in fit.indices] == ["one"] * 6
    mem = analysis.memory_report(timeline, guard_fraction=0.0)
    assert mem.user_bytes_per_conn == 200 and mem.user_bytes_per_conn_client == 200
    assert mem.user_r2 == 1.0


def test_the_reasons_round_trip_through_the_codec() -> None:
    mem = Memory(kernel_r2=0.235, kernel_reason="not measured: k", user_reason="not measured: u")
    result = dataclasses.replace(result_of(), memory=mem)
    doc = to_json(result)
    assert doc["memory"] == {
        "kernel_r2": 0.235,
        "kernel_reason": "not measured: k",
        "user_reason": "not measured: u",
    }
    assert from_json(doc, source="test") == result


def test_the_summary_says_not_measured_and_why() -> None:
    mem = Memory(
        kernel_r2=0.235,
        kernel_reason="not measured: kernel memory did not grow with connections",
        user_bytes_per_conn=300,
        user_r2=0.95,
        samples=9,
    )
    lines = memory_lines(mem)
    assert lines[0] == (
        "Memory per connection: 300 B user (client + server processes), slope over 9 samples "
        "of one step's ramp (r² 0.950)."
    )
    assert lines[1] == (
        "Kernel memory per connection not measured: kernel memory did not grow with connections."
    )
    brief = summarize(
        dataclasses.replace(result_of(), memory=Memory(user_reason="not measured: u"))
    )
    assert "User memory per connection not measured: u." in brief


def test_summary_table_and_plot_quote_the_same_r2() -> None:
    held = [0.0, 0.0] + [1000.0 * i for i in range(1, 11)]
    wobble = [(-1) ** i * (i % 3) for i in range(len(held))]  # a literal, uneven noise
    timeline = tl(
        held,
        kernel_bytes=[1e8 + 8000 * h + 9e5 * w for h, w in zip(held, wobble, strict=True)],
        user_bytes_client=[1e7 + 100 * h + 5e4 * w for h, w in zip(held, wobble, strict=True)],
        user_bytes_server=[1e7 + 150 * h + 2e4 * w for h, w in zip(held, wobble, strict=True)],
        step=["one"] * 12,
    )
    mem = analysis.memory_report(timeline, guard_fraction=0.0)
    assert mem.kernel_r2 is not None and mem.user_r2 is not None
    assert mem.kernel_reason is None and mem.user_reason is None
    assert f"{mem.kernel_r2:.3f}" != f"{mem.user_r2:.3f}" and mem.kernel_r2 < 1
    result = dataclasses.replace(result_of(), timeline=tuple(timeline), memory=mem)
    svg = plot_memory(result)
    assert svg is not None
    shown = set(re.findall(r"r² ([01]\.\d{3})", svg))
    assert shown == {f"{mem.kernel_r2:.3f}", f"{mem.user_r2:.3f}"}
    text = "\n".join(memory_lines(mem))
    assert f"kernel r² {mem.kernel_r2:.3f}" in text and f"user r² {mem.user_r2:.3f}" in text
    page = report.render(result)
    assert re.search(rf"<td>kernel_r2</td><td[^>]*>{mem.kernel_r2:.3f}</td>", page)
    assert re.search(rf"<td>user_r2</td><td[^>]*>{mem.user_r2:.3f}</td>", page)


def test_the_plot_says_not_measured_instead_of_drawing_a_negative_slope() -> None:
    timeline = tl(RAMP, kernel_bytes=[1e8 - 500 * h for h in RAMP], step=["one"] * 15)
    mem = analysis.memory_report(timeline, guard_fraction=0.0)
    svg = plot_memory(dataclasses.replace(result_of(), timeline=tuple(timeline), memory=mem))
    assert svg is not None
    assert "not measured: kernel memory did not grow" in svg
    assert "per connection\n" not in svg and "-500 B per connection" in svg  # quoted, no line
