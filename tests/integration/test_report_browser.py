"""The report in a real browser (Debian's headless chromium): the plots are in the rendered DOM,
the page logs nothing to the console, and hostile strings in the result do not act."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import NAT, OPEN, RUN, SCENARIO, against_a_server, cluster, load, poison, typed

from conncap import report

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)


def chromium(tmp_path: Path, page: Path, *action: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    return subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *action,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def console_lines(stderr: str) -> list[str]:
    """What the page logged: chromium writes console messages as ':INFO:CONSOLE(…)' lines."""
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line or "Uncaught" in line or "Content Security Policy" in line
    ]


def write_page(tmp_path: Path, doc: dict[str, Any], name: str = "report.html") -> Path:
    return report.write_text_atomic(tmp_path / name, report.render(typed(doc)))


def test_plots_are_in_the_rendered_dom_and_the_console_is_silent(tmp_path: Path) -> None:
    page = write_page(tmp_path, load(RUN))
    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<h1>conncap report</h1>" in dom
    assert len(re.findall(r"<svg\b", dom)) == 4
    assert 'aria-label="kernel and user memory against connections held"' in dom
    assert console_lines(done.stderr) == []


@pytest.mark.parametrize("path", [RUN, SCENARIO], ids=["run", "scenario"])
def test_screenshot_of_the_report(tmp_path: Path, path: Path) -> None:
    """A person reads this: the PNG is written for a look (kept in the test's tmp dir)."""
    page = write_page(tmp_path, load(path))
    png = tmp_path / "report.png"
    done = chromium(tmp_path, page, "--window-size=1200,5200", f"--screenshot={png}")
    assert done.returncode == 0, done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 5200)
    assert len(data) > 100_000  # plots and tables, not a blank page


def test_hostile_strings_do_not_act(tmp_path: Path) -> None:
    doc = poison(load(RUN))
    doc["host"]["hostname"] = "<script>document.body.setAttribute('data-pwned','0')</script>"
    page = write_page(tmp_path, doc)
    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)  # type: ignore[union-attr]
    assert "<script" not in dom.lower()
    assert "<img" not in dom.lower()
    # an injected script would at least have been blocked by the CSP, and logged as such
    assert console_lines(done.stderr) == []
    assert "&lt;script&gt;document.body.setAttribute" in dom  # shown as text
    assert len(re.findall(r"<svg\b", dom)) == 4


@pytest.mark.parametrize("path", [SCENARIO, NAT], ids=["article", "nat"])
def test_hostile_strings_in_a_scenario_do_not_act(tmp_path: Path, path: Path) -> None:
    """The expectations, the attribution and the observed tables carry payloads too."""
    doc = poison(load(path))
    doc["scenario"]["name"] = "<script>document.body.setAttribute('data-pwned','0')</script>"
    page = write_page(tmp_path, doc)
    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)  # type: ignore[union-attr]
    assert "<script" not in dom.lower()
    assert "<img" not in dom.lower()
    assert console_lines(done.stderr) == []
    assert "<h2>Expectations</h2>" in dom
    assert dom.count('<div class="step">') == len(doc["steps"])
    assert "scenario &lt;script&gt;document.body.setAttribute" in dom  # shown as text
    assert len(re.findall(r"<svg\b", dom)) == 3  # held, rate, failures: no memory samples


def test_open_result_and_this_hosts_real_limits_render(tmp_path: Path) -> None:
    doc = load(OPEN)
    try:
        from conncap.limits import read_limits
        from conncap.limits.render import limits_to_json
    except ImportError:  # pragma: no cover - the limits renderer ships with conncap
        pytest.skip("conncap.limits.render is not in this checkout")
    doc["limits"] = json.loads(json.dumps(limits_to_json(read_limits())))
    page = write_page(tmp_path, doc)
    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert len(re.findall(r"<svg\b", dom)) == 2
    assert "not measured (`conncap open` does not sample memory)" in dom
    assert "port_range" in dom and "nofile_soft" in dom
    assert console_lines(done.stderr) == []


def test_a_cluster_result_renders_with_a_silent_console(tmp_path: Path) -> None:
    page = report.write_text_atomic(tmp_path / "cluster.html", report.render(cluster()))
    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<h2>Nodes of the cluster</h2>" in dom
    assert len(re.findall(r"<svg\b", dom)) == 4  # held, rate, failures, held per node
    assert 'aria-label="connections held over time per node"' in dom
    assert console_lines(done.stderr) == []


def test_the_servers_hostile_words_do_not_act(tmp_path: Path) -> None:
    """Issue 9: what a server said is quoted in the report as text, never as markup."""
    page = report.write_text_atomic(tmp_path / "server.html", report.render(against_a_server()))
    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<h2>The server's side</h2>" in dom
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)  # type: ignore[union-attr]
    assert "<script" not in dom.lower() and "<b>server" not in dom
    assert "&lt;script&gt;document.body.setAttribute" in dom
    assert console_lines(done.stderr) == []
