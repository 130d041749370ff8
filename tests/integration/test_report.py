"""`conncap report`: the HTML it writes (self-contained, escaped, degrading gracefully) and the
command's exit codes for bad input. The browser checks are in test_report_browser.py."""

from __future__ import annotations

import copy
import html
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import (
    FIXTURES,
    HOSTILE_WORDS,
    NAT,
    OPEN,
    RUN,
    SCENARIO,
    against_a_server,
    cluster,
    generator,
    load,
    poison,
    svgs,
    typed,
)

from conncap.errors import UsageError
from conncap.report import html as report
from conncap.report import plots
from conncap.report import scenario as report_scenario
from conncap.result import SCHEMA_V1, from_json, load_result, to_json


def render(doc: dict[str, Any]) -> str:
    """The page of a result document, as ``conncap report`` loads it."""
    return report.render(typed(doc))


def render_or_refuse(doc: dict[str, Any]) -> str | None:
    """The page of a document, or None when the loader refuses it: with one line naming the
    file, never a traceback (``conncap report`` exits 2 with it)."""
    try:
        result = typed(doc)
    except UsageError as exc:
        assert str(exc).startswith("result.json: ") and "\n" not in str(exc)
        return None
    page = report.render(result)
    assert "</html>" in page
    return page


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conncap", "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- what the page contains ---------------------------------------------------------------------


def test_realistic_run_has_every_plot_and_section() -> None:
    page = report.render(load_result(RUN))
    assert len(svgs(page)) == 4  # held, rate, failures, memory
    for heading in (
        "Summary",
        "Connections over time",
        "Failures and ceiling",
        "Memory per connection",
        "Plan and steps",
        "Host limits",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "Predicted: 28,232 connections before ephemeral-ports binds (client side)." in page
    kib = generator().KERNEL_PER_CONN / 1024  # the kernel slope RUN was built with
    assert f"{kib:.1f} KiB per connection" in page  # the slope's value, in the memory plot's legend
    assert "28,232 connections per (source IP, destination ip:port)" in page  # limits implied
    assert "server-fds" in page and "a server limited to 20,000 descriptors" in page
    assert "not measured" not in page


def test_the_page_needs_no_network_and_runs_no_script() -> None:
    page = report.render(load_result(RUN))
    assert f'content="{html.escape(report.CSP)}"' in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page and "<iframe" not in page
    assert not re.search(r"\bsrc\s*=", page)
    # the only references are to ids inside the page (clip paths)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page))


def test_render_is_deterministic() -> None:
    doc = load(RUN)
    assert render(doc) == render(copy.deepcopy(doc))


def test_open_result_says_not_measured_instead_of_broken_plots() -> None:
    page = report.render(load_result(OPEN))
    assert len(svgs(page)) == 2  # held and rate
    assert (
        "Memory against connections held: not measured (`conncap open` does not sample memory)."
        in page
    )
    assert "Failures by cause over time: none, no attempt failed." in page
    assert "No host limits in this result" in page
    assert "predicted 28,232 (ephemeral-ports), off scale" in page


def test_a_churn_result_shows_its_churn_object() -> None:
    """``open --lifetime`` writes a churn object: it survives the loader and reaches the page."""
    doc = load(OPEN)
    doc["churn"] = {
        "rate": 2000.0,
        "opened": 5890,
        "time_wait_peak": 5870,
        "stopped_by": "time-wait",
        "sustainable_rate_measured_basis": "ports ran out <after> 2.9 s",
        "prediction": {"ports": 5900, "line": "the client's 5,900 ports run out after 2.9 s"},
    }
    page = render(doc)
    churn = _section(page, "Churn: connections opened and closed")
    assert "<p>Predicted: the client&#x27;s 5,900 ports run out after 2.9 s</p>" in churn
    assert "<td>time_wait_peak</td><td>5,870</td>" in churn
    assert "ports ran out &lt;after&gt; 2.9 s" in churn
    assert "Churn:" not in render(load(OPEN))


def test_bare_minimum_document_renders() -> None:
    doc: dict[str, Any] = {
        "schema": SCHEMA_V1,  # the fewest keys a document may have
        "requested": 0,
        "established_peak": 0,
        "held_at_end": 0,
        "failures": {},
        "ceiling": {"reached": False},
        "prediction": {},
        "timeline": [],
        "duration_s": 0,
    }
    page = render(doc)
    assert svgs(page) == []
    assert "Connections held over time: not measured (the result has no timeline)." in page
    assert "Failures by cause over time: not measured (the result has no timeline)." in page


def _section(page: str, title: str) -> str:
    """The HTML of one <section> of the page, by its heading."""
    start = page.index(f"<h2>{title}</h2>")
    return page[start : page.index("</section>", start)]


def test_scenario_result_shows_its_expectations_near_the_top() -> None:
    doc = load(SCENARIO)
    page = render(doc)
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings[:3] == ["Summary", "Expectations", "Connections over time"]
    checks = [x for x in doc["expectations"] if x["kind"] == "check"]
    ok = sum(1 for x in checks if x["ok"])
    assert f"✓ scenario article: {ok} of {len(checks)} expectations hold" in page
    table = _section(page, "Expectations")
    # one row per expectation, its mark from "ok", and both figures as the scenario said them
    assert table.count('<td class="mark good"') == ok
    assert table.count('<td class="mark note"') == len(doc["expectations"]) - len(checks)
    assert 'class="mark bad"' not in table
    for x in doc["expectations"]:
        assert html.escape(x["measured"]) in table
        if x["expected"]:
            assert html.escape(x["expected"]) in table
    for st in doc["steps"]:  # grouped under each step, with its title
        assert f"step {html.escape(st['name'])}" in table
        assert html.escape(st["title"]) in table


def test_scenario_tiles_do_not_add_counts_across_steps() -> None:
    """Each step of a scenario starts afresh: the tiles give the headline step's own figures,
    never a sum over the steps (the article's steps would add to 37,000 'requested')."""
    doc = load(SCENARIO)
    page = render(doc)
    cards = page[page.index('<div class="cards">') : page.index("</div></div></div>")]
    headline = next(st for st in doc["steps"] if st["ceiling"] == doc["ceiling"])
    assert f"requested in {html.escape(headline['name'])}" in cards
    assert f">{headline['requested']:,}<" in cards
    assert f">{len(doc['steps'])}<" in cards and ">steps<" in cards
    total = sum(st["requested"] for st in doc["steps"])
    assert f">{total:,}<" not in cards


def test_every_step_that_reached_a_ceiling_gets_its_marker_and_a_numbered_bar() -> None:
    """The held plot's caption promises a red marker where held stopped growing: one per step
    that reached a ceiling, at that ceiling's count, even when the step ended on it (no
    plateau after); steps are numbered bars, named once in the title line."""
    from conncap.report import plots
    from conncap.result import load_result

    result = load_result(SCENARIO)
    reached = [st for st in result.steps if st.ceiling.reached]
    knees = plots._knees(result)
    assert [(held, cause) for _t, held, cause in knees] == [
        (st.ceiling.count, st.ceiling.cause) for st in reached
    ]
    svg = plots.plot_held(result)
    assert svg is not None
    names = " · ".join(f"{i} {st.name}" for i, st in enumerate(result.steps, start=1))
    assert html.escape(f"steps: {names}") in svg or f"steps: {names}" in svg


def test_scenario_steps_show_attribution_and_what_was_observed() -> None:
    doc = load(SCENARIO)
    steps = _section(render(doc), "Steps: attribution and what was observed")
    blocks = steps.split('<div class="step">')[1:]
    assert len(blocks) == len(doc["steps"])
    for block, st in zip(blocks, doc["steps"], strict=True):
        att = st["attribution"]
        assert f"<th>cause</th><td>{html.escape(att['cause'])}</td>" in block
        assert f"<th>side</th><td>{html.escape(att['side'])}</td>" in block
        assert f"<th>evidence</th><td>{html.escape(att['evidence'])}</td>" in block
        assert f"client held {st['held']:,} of {st['requested']:,} asked" in block
        for key, table in st["observed"].items():
            assert html.escape(report_scenario.OBSERVED_LABELS[key]) in block
            for field in table:
                assert f"<th>{html.escape(field)}</th>" in block
    # a port and a pid are names, not quantities: no thousands separator
    last = doc["steps"][-1]["observed"]
    ss = last["server_ss"]
    assert f"<th>peer_port_max</th><td>{ss['peer_port_max']}</td>" in blocks[-1]
    assert f"<th>pid</th><td>{last['client_fd_table']['pid']}</td>" in blocks[-1]
    assert f"<th>connections</th><td>{ss['connections']:,}</td>" in blocks[-1]


def test_nat_scenario_names_snat_exhaustion_and_shows_the_gateways_counters() -> None:
    doc = load(NAT)
    steps = _section(render(doc), "Steps: attribution and what was observed")
    for st in doc["steps"]:
        assert "SNAT port exhaustion" in st["attribution"]["evidence"]
        assert html.escape(st["attribution"]["evidence"]) in steps
        grown = st["counters"]["conntrack_insert_failed"]
        assert f"<th>conntrack_insert_failed</th><td>+{grown:,}</td>" in steps
        level = st["counters"]["conntrack_count"]
        assert f"<th>conntrack_count (at the end)</th><td>{level:,}</td>" in steps
    assert html.escape(report_scenario.OBSERVED_LABELS["snat"]) in steps


def test_a_failed_expectation_is_marked_and_counted() -> None:
    doc = load(SCENARIO)
    failing = doc["expectations"][2]
    failing.update(ok=False, measured="3,900")
    doc["scenario"].update(passed=False, checks_passed=doc["scenario"]["checks"] - 1)
    page = render(doc)
    total = doc["scenario"]["checks"]
    assert f"✗ scenario article: {total - 1} of {total} expectations hold (1 did not)" in page
    table = _section(page, "Expectations")
    (row,) = re.findall(r'<tr class="bad">.*?</tr>', table)
    assert html.escape(failing["name"]) in row and "3,900" in row and "✗" in row


def test_scenario_without_counts_derives_them_from_the_expectations() -> None:
    doc = load(SCENARIO)
    del doc["scenario"]
    doc["expectations"][0]["ok"] = False
    checks = [x for x in doc["expectations"] if x["kind"] == "check"]
    page = render(doc)
    assert f"✗ scenario ?: {len(checks) - 1} of {len(checks)} expectations hold" in page


def test_run_and_open_results_have_no_scenario_sections() -> None:
    for path in (RUN, OPEN):
        page = render(load(path))
        assert "<h2>Expectations</h2>" not in page
        assert "Steps: attribution" not in page
        assert 'class="verdict' not in page


WRONG = [None, "text", -3, 1.5, True, [], {}, [None, "x", 4], {"a": {"b": []}}]
#: Keys whose values reach matplotlib; the others only reach the HTML.
PLOTTED = ("timeline", "steps", "prediction", "requested", "ceiling", "command")


@pytest.fixture
def cheap_svg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip matplotlib's SVG drawing (0.1 s a plot): the data handling before it still runs."""
    monkeypatch.setattr(plots, "_svg", lambda fig, name, label: "<svg></svg>")


@pytest.mark.usefixtures("cheap_svg")
@pytest.mark.parametrize("wrong", WRONG, ids=[repr(w)[:20] for w in WRONG])
def test_any_scenario_field_of_the_wrong_type_degrades_without_a_crash(wrong: Any) -> None:
    base = load(NAT)
    for key in (*base, "expectations"):
        if key == "schema":
            continue
        doc = copy.deepcopy(base)
        doc[key] = wrong
        render_or_refuse(doc)
    for key in ("name", "ok", "expected", "measured", "step", "why", "kind"):
        doc = copy.deepcopy(base)
        for x in doc["expectations"]:
            x[key] = wrong
        doc["expectations"][1:3] = [wrong, wrong]
        render_or_refuse(doc)
    for key in (*base["steps"][0], "observed"):
        doc = copy.deepcopy(base)
        for st in doc["steps"]:
            st[key] = wrong
            if isinstance(st.get("observed"), dict):
                st["observed"] = {k: wrong for k in st["observed"]}
        render_or_refuse(doc)
    doc = copy.deepcopy(base)
    for st in doc["steps"]:
        st["attribution"] = {"cause": wrong, "side": wrong, "evidence": wrong}
        st["counters"] = {k: wrong for k in st["counters"]}
        st["server"] = {"held": wrong, "errors_during_step": wrong}
    render_or_refuse(doc)


@pytest.mark.usefixtures("cheap_svg")
@pytest.mark.parametrize("wrong", WRONG, ids=[repr(w)[:20] for w in WRONG])
def test_any_field_of_the_wrong_type_degrades_without_a_crash(wrong: Any) -> None:
    base = load(RUN)
    for key in base:
        if key == "schema":
            continue
        doc = copy.deepcopy(base)
        doc[key] = wrong
        render_or_refuse(doc)
    for key in ("t", "held", "rate", "failures_by_cause", "kernel_bytes", "user_bytes_client"):
        doc = copy.deepcopy(base)
        for sample in doc["timeline"][::3]:
            sample[key] = wrong
        render_or_refuse(doc)
    doc = copy.deepcopy(base)
    doc["timeline"][5:9] = [wrong] * 4
    for step in doc["steps"]:
        step.update(t_start=wrong, ceiling=wrong, prediction=wrong)
    render_or_refuse(doc)


ODD_NUMBERS = [math.nan, math.inf, -1e308, 1e308, -5]


@pytest.mark.parametrize("odd", ODD_NUMBERS, ids=[repr(v) for v in ODD_NUMBERS])
def test_odd_numbers_reach_real_plots_without_a_crash(odd: float) -> None:
    """JSON from Python may hold NaN and Infinity: the loader refuses them with one line. Huge
    or negative values must not break the drawing (this one runs matplotlib for real); where
    the schema wants an integer they are integers."""
    whole: float | int = int(odd) if math.isfinite(odd) else odd
    doc = load(RUN)
    for sample in doc["timeline"][::7]:
        for key in ("t", "rate"):
            sample[key] = odd
        for key in ("held", "kernel_bytes", "user_bytes_server"):
            sample[key] = whole
        sample["failures_by_cause"] = {"timeout": whole}
    doc["prediction"]["count"] = whole
    doc["requested"] = whole
    doc["steps"][0]["t_start"] = odd
    doc["steps"][1]["prediction"]["count"] = whole
    page = render_or_refuse(doc)
    if not math.isfinite(odd):
        assert page is None
        return
    assert page is not None
    assert len(svgs(page)) >= 3


# --- escaping -----------------------------------------------------------------------------------


def test_every_input_string_is_escaped_in_html_and_svg() -> None:
    doc = poison(load(RUN))
    doc["host"]["hostname"] = "<script>alert(1)</script>"
    page = render(doc)
    lowered = page.lower()
    assert "<script" not in lowered
    assert "<img" not in lowered
    assert not re.search(r"<[a-z]+[^>]*\son[a-z]+\s*=", lowered)  # no event handler attribute
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    plots = svgs(page)
    assert len(plots) == 4  # payloads in step names and causes did not break a plot
    inside_svg = "".join(plots)
    assert "&lt;script&gt;" in inside_svg or "&lt;img" in inside_svg  # the text is there, inert
    assert "<svg onload" not in lowered
    assert "$\\alpha$" in page  # '$' is text, not mathtext


@pytest.mark.parametrize("path", [SCENARIO, NAT], ids=["article", "nat"])
def test_scenario_strings_are_escaped_in_expectations_steps_and_observed(path: Path) -> None:
    """Every string of the document, and the keys of observed, counters and the per-peer
    maps, carries a payload: the expectations, the attribution and the observed tables show
    them as text."""
    clean = render(load(path))
    doc = poison(load(path))
    doc["scenario"]["name"] = "<script>alert(1)</script>"
    page = render(doc)
    lowered = page.lower()
    assert "<script" not in lowered
    assert "<img" not in lowered
    assert "<svg onload" not in lowered
    assert not re.search(r"<[a-z]+[^>]*\son[a-z]+\s*=", lowered)
    assert "</style></title>" not in page  # the page's own tags are not closed early
    assert "✓ scenario &lt;script&gt;alert(1)&lt;/script&gt;: " in page
    assert len(svgs(page)) == len(svgs(clean))
    expectations = _section(page, "Expectations")
    steps = _section(page, "Steps: attribution and what was observed")
    for part in (expectations, steps):
        assert "&lt;script&gt;document.body" in part or "&lt;img src=x" in part
    x = doc["expectations"][0]
    for text in (x["name"], x["expected"], x["measured"], x["step"]):
        assert html.escape(text) in expectations
    st = doc["steps"][0]
    for text in st["attribution"].values():
        assert html.escape(text) in steps
    shown = [k for k, v in st["counters"].items() if v]  # a counter that did not move is not
    for key in (*st["observed"], *shown):
        assert html.escape(key) in steps  # keys from the outside are escaped too


# --- the command ------------------------------------------------------------------------------


def test_cli_writes_the_report_atomically_where_asked(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "report.html"
    done = run_cli(str(RUN), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert len(svgs(out.read_text())) == 4
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left


def test_cli_default_output_is_next_to_the_input(tmp_path: Path) -> None:
    src = tmp_path / "result.json"
    shutil.copy(OPEN, src)
    done = run_cli(str(src))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "result.html").is_file()


def _one_line_exit_2(done: subprocess.CompletedProcess[str], words: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("conncap: ")
    assert words in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("corrupted.json", "not a conncap result (invalid JSON"),
        ("foreign.json", "not a conncap result (schema is 'other.tool/3'"),
        ("absent.json", "no such file"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(name: str, words: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    _one_line_exit_2(run_cli(str(FIXTURES / name), "-o", str(out)), words)
    assert not out.exists()


def test_cli_unwritable_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_line_exit_2(run_cli(str(OPEN), "-o", str(blocker / "r.html")), "cannot write")


def test_cli_refuses_to_overwrite_the_result(tmp_path: Path) -> None:
    src = tmp_path / "result.json"
    shutil.copy(OPEN, src)
    _one_line_exit_2(run_cli(str(src), "-o", str(src)), "that is the result itself")
    assert src.read_bytes() == OPEN.read_bytes()


def test_failed_write_keeps_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.html"
    target.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "replace", broken_replace)
    with pytest.raises(OSError):
        report.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_a_cluster_result_has_a_node_table_and_a_plot_per_node() -> None:
    result = cluster()
    assert from_json(to_json(result), source="cluster.json") == result  # what report loads
    page = report.render(result)
    assert "<h2>Nodes of the cluster</h2>" in page
    assert len(svgs(page)) == 4  # held, rate, failures, held per node
    assert 'aria-label="connections held over time per node"' in page
    table = page.split("<h2>Nodes of the cluster</h2>", 1)[1].split("<figure>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table)
    assert len(rows) == 4  # the header and one row per node
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in rows]
    assert cells[0] == [
        "node", "address", "predicted", "held", "cause", "side", "errno", "matches", "lost",
    ]  # fmt: skip
    assert cells[1] == [
        "node0-01 (first to stop)", "10.0.0.1", "50 (ephemeral-ports)", "50",
        "ephemeral-ports", "client", "EADDRNOTAVAIL", "yes", "no",
    ]  # fmt: skip
    assert cells[2][1:4] == ["10.0.0.2", "80 (ephemeral-ports)", "80"]
    assert cells[3][-1] == "lost: The actor died unexpectedly (node died)"
    assert cells[3][4] == "no ceiling"
    # the summary is the lines open --cluster printed
    assert "first to stop: node node0-01 (10.0.0.1) at 0.50 s, 50 held" in page
    assert "total held 130 of 480 requested (predicted ceiling 250)" in page
    # every node's own line is in the plot, with its address as its label
    plot = plots.plot_nodes(result)
    assert plot is not None
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3 (lost)", "cluster total"):
        assert address in plot


def test_results_without_nodes_have_no_node_section() -> None:
    for path in (RUN, OPEN, SCENARIO):
        result = load_result(path)
        assert not result.nodes and plots.plot_nodes(result) is None
        assert "Nodes of the cluster" not in report.render(result)


# --- the server's side (issue 9) ----------------------------------------------------------------


def test_the_servers_side_shows_its_words_closes_lifetimes_process_rules_and_sources() -> None:
    result = against_a_server()
    page = report.render(result)
    section = _section(page, "The server&#x27;s side")
    assert "<script" not in page.lower() and "<b>server" not in page and "<i>x" not in page
    assert html.escape('"' + HOSTILE_WORDS + '"', quote=True) in section  # quoted, as text
    assert "FIN 120, RST 2" in section
    assert "<h3>Lifetimes</h3>" in section and "under 1 ms" in section and "4 ms-8 ms" in section
    assert "redis-&lt;b&gt;server&lt;/b&gt;" in section and ">29<" in section and ">32<" in section
    assert "REJECT &lt;i&gt;x&lt;/i&gt;" in section
    assert "<code>/proc/net/tcp</code>" in section and "0 of 511" in section
    assert "icmp 3/13" in section and "never acknowledged" in section
    assert "<strong>certain</strong>" in section
    # and in the summary, from the same pure lines the run writes
    summary = _section(page, "Summary")
    assert "Closed by the server: 122 (FIN 120, RST 2)" in summary
    assert "The server said &quot;&lt;script&gt;" in summary
    assert "redis-&lt;b&gt;server&lt;/b&gt; pid 4242 (29 of 32 descriptors)" in summary
    assert "The ceiling&#x27;s reading is certain." in summary


def test_results_without_a_server_side_have_no_such_section() -> None:
    for path in (RUN, OPEN, SCENARIO):
        assert "The server&#x27;s side" not in render(load(path))


def test_summary_lines_of_a_run_mention_the_servers_side() -> None:
    from conncap.report.summary import server_side_lines, summary_lines

    result = against_a_server()
    lines = summary_lines(result)
    for line in server_side_lines(result):
        assert line in lines
    assert server_side_lines(typed(load(RUN))) == []


# --- churn: new connections per second and TIME_WAIT, the predicted sustainable rate ----------


def _churn_result(predicted: float | None = 3.333, unbounded: bool = False) -> Any:
    """An ``open --lifetime`` result built here: 100/s into 200 ports with TIME_WAIT rising to
    200, then EADDRNOTAVAIL (the run of test_churn_netns, by hand)."""
    doc = load(OPEN)
    doc["timeline"] = [
        {
            "t": t / 4,
            "held": 0,
            "failures": 0 if t < 9 else 2,
            "rate": 100.0 if 0 < t < 9 else 0.0,
            "failures_by_cause": {} if t < 9 else {"time-wait": 2},
            "established": min(200, 25 * t),
            "time_wait": min(200, 25 * t),
            "closed": min(200, 25 * t),
        }
        for t in range(12)
    ]
    doc["churn"] = {
        "rate": 100.0,
        "lifetime": 0.0,
        "close": "fin",
        "opened": 200,
        "time_wait_peak": 200,
        "sustainable_rate_predicted": predicted,
        "predicted_unbounded": unbounded,
        "sustainable_rate_measured": 3.3,
        "prediction": {"line": "at 100/s, FIN closes by the client: sustainable 3.3/s"},
    }
    return typed(doc)


def test_churn_plot_marks_the_predicted_sustainable_rate() -> None:
    result = _churn_result()
    svg = plots.plot_churn(result)
    assert svg is not None
    assert 'aria-label="new connections per second and TIME_WAIT over time"' in svg
    assert "sustainable (predicted): 3.3/s" in svg
    assert "sockets in TIME_WAIT" in svg and "new connections / s" in svg
    page = report.render(result)
    assert "<h2>Churn: connections opened and closed</h2>" in page
    assert svg in page and "Churn over time: not plotted" not in page


def test_churn_plot_says_no_port_limit_and_needs_time_wait_samples() -> None:
    svg = plots.plot_churn(_churn_result(predicted=None, unbounded=True))
    assert svg is not None and "sustainable: no port limit" in svg
    assert plots.plot_churn(typed(load(OPEN))) is None  # no churn object: no plot
