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


def _limits_doc() -> dict[str, object]:
    fact = {"source": "sysctl", "status": "known"}
    return {
        "schema": "conncap.limits/1",
        "os": "linux",
        "facts": {
            "port_range": {**fact, "value": [32768, 60999]},
            "reserved_ports": {**fact, "value": [[8080, 8080], [9000, 9010]]},
            "tcp_mem": {**fact, "value": [1179242496, 1572327424, 2358484992]},
            "sockstat": {
                **fact,
                "value": {
                    "tcp_inuse": 1,
                    "tcp_orphan": 0,
                    "tcp_tw": 56,
                    "tcp_alloc": 1,
                    "tcp_mem_pages": 122,
                    "sockets_used": 7,
                },
            },
            "extra.page_size": {**fact, "value": 4096},
            "extra.some_new_fact": {**fact, "value": {"nested_key": [1, 2]}},
            "cgroup_mem_current": {
                "source": "/sys/fs/cgroup/" + "x" * 120 + "/memory.current",
                "status": "known",
                "value": 66646016,
            },
        },
        "implied": {},
    }


def _limit_cells(page: str) -> list[str]:
    import re

    section = page[page.index("<h2>Host limits</h2>") :]
    return re.findall(r"<td[^>]*>(.*?)</td>", section[: section.index("</table>")])


def test_the_limits_table_is_for_people() -> None:
    page = report.render(result_of(limits=_limits_doc()))
    cells = _limit_cells(page)
    for label in ("ephemeral port range", "TCP sockets now", "page size", "some new fact"):
        assert label in cells
    assert "32768-60999" in cells and "8080, 9000-9010" in cells
    assert "in use 1, time-wait 56, orphan 0, allocated 1, buffers 488.0 KiB" in cells
    assert "nested key 1, 2" in cells
    assert not any(c.startswith(("{", "[", "(")) or "{&#x27;" in c or "_" in c[:1] for c in cells)
    assert not any("{'" in c or '{"' in c or "&#x27;:" in c for c in cells)
    assert "sockstat" not in cells and "extra.page_size" not in cells
    # long values wrap inside a fixed-width table instead of overflowing
    assert '<table class="limits">' in page
    assert "table.limits { table-layout: fixed; width: 100%; }" in page
    assert "table.limits td { overflow-wrap: anywhere; }" in page
