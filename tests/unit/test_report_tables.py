"""The report's tables for people (issue 12): the server's peak and what its resets are, the
host limits with labels and readable values."""

from __future__ import annotations

from result_docs import result_of, sample

from conncap.report import html as report
from conncap.report.html import RESETS_WHY, server_rows


def _run_with_server() -> dict[str, object]:
    return {
        "requested": 100_000,
        "established_peak": 100_000,
        "timeline": [
            sample(t=0.0, held=0, server_held=0),
            sample(t=1.0, held=60_000, server_held=59_990),
            sample(t=2.0, held=100_000, server_held=100_000),
            sample(t=3.0, held=0, server_held=0),
        ],
        "server": {
            "held": 0,
            "accepted": 100_000,
            "resets": 100_000,
            "errors": {"file-descriptors": 2},
        },
    }


def test_the_server_table_shows_the_peak_and_why_resets_appear() -> None:
    rows = server_rows(result_of(**_run_with_server()))
    assert rows["held at the peak"] == 100_000
    assert rows["held when read, after the clients closed"] == 0
    assert rows["resets (RST)"] == f"100,000: {RESETS_WHY}"
    assert "SO_LINGER 0" in RESETS_WHY and "no TIME_WAIT" in RESETS_WHY
    assert rows["errors"] == "file-descriptors 2"
    assert "held" not in rows  # the count read after teardown is not shown as "held"
    page = report.render(result_of(**_run_with_server()))
    assert "<td>held at the peak</td>" in page and "100,000" in page
    assert "SO_LINGER 0" in page
