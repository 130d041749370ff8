"""The HTML report: one self-contained file (inline CSS and SVG plots, no script, no network)
from a result (:class:`conncap.result.Result`, loaded and checked by
:func:`conncap.result.load_result`).

Every string taken from the result is escaped with :func:`html.escape` (matplotlib escapes
the text it writes into SVG); a Content-Security-Policy forbids scripts and every network
fetch, as a second line of defence. A figure the result does not have is shown as "not
measured". The plots are in :mod:`conncap.report.plots`, which imports matplotlib only when it
draws.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from conncap import __version__
from conncap.analysis import cause_of_name
from conncap.errors import UsageError
from conncap.report import summary as prose
from conncap.report.markup import e, fmt
from conncap.report.observe import latency_html, reproduce_html
from conncap.report.plots import (
    plot_churn,
    plot_failures,
    plot_held,
    plot_latency,
    plot_memory,
    plot_nodes,
    plot_rate,
)
from conncap.report.scenario import CSS as SCENARIO_CSS
from conncap.report.scenario import expectations_html, is_scenario, steps_html, verdict_html
from conncap.report.server import has_server_side, server_html
from conncap.report.summary import about, format_bytes
from conncap.result import (
    JsonObject,
    JsonValue,
    Memory,
    Prediction,
    Result,
    ServerFigures,
    load_result,
)

#: No script, no fetch of anything: the report is data to read, not a page that acts.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa;
        --bad:#b42318; --good:#1a7f37; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 1.0em; margin: 20px 0 6px; }
.meta { color: var(--muted); margin: 0; }
p.headline { font-size: 1.15em; font-weight: 600; margin: 0.4em 0; }
ul.summary { padding-left: 1.2em; }
ul.summary li { margin: 4px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.unknown td { color: var(--bad); }
table.limits { table-layout: fixed; width: 100%; }
table.limits td { overflow-wrap: anywhere; }
table.limits th:nth-child(1) { width: 17%; }
table.limits th:nth-child(2) { width: 20%; }
table.limits th:nth-child(3) { width: 25%; }
table.limits th:nth-child(4) { width: 18%; }
tr.na td { color: var(--muted); }
.na { color: var(--muted); font-style: italic; }
figure { margin: 12px 0 20px; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.9em; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card .v { font-size: 1.35em; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .k { color: var(--muted); font-size: 0.85em; }
.card.ceiling .v { color: var(--bad); }
code { background: var(--soft); padding: 1px 4px; border-radius: 3px; font-size: 0.92em; }
details summary { cursor: pointer; color: var(--muted); }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""


# --- HTML ---------------------------------------------------------------------------------------


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    classes: Sequence[str] = (),
    *,
    align_numbers: bool = True,
    table_class: str = "",
) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{e(classes[i])}"' if i < len(classes) and classes[i] else ""
        cells = []
        for v in row:
            numeric = align_numbers and isinstance(v, int | float) and not isinstance(v, bool)
            cells.append(
                f'<td class="num">{e(fmt(v))}</td>' if numeric else f"<td>{e(fmt(v))}</td>"
            )
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cls = f' class="{e(table_class)}"' if table_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(mapping: Mapping[str, object]) -> str:
    return _table(("field", "value"), list(mapping.items()), align_numbers=False)


def _fields(obj: Memory | ServerFigures) -> dict[str, object]:
    """The fields of a part of the result that hold a value (what its JSON has)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None and value != {} and value != ():
            out[f.name] = value
    return out


def _sub(obj: JsonObject | None, key: str) -> JsonObject:
    """A free-form part's object under ``key`` (empty when it is not one)."""
    value = (obj or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def _text(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _figure_html(svg: str | None, caption: str, missing: str) -> str:
    """The plot with its caption, or the sentence ``missing`` saying why there is none."""
    if svg is None:
        return f'<p class="na">{e(missing)}</p>'
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def _cards(result: Result) -> str:
    ceiling, pred = result.ceiling, result.prediction
    if result.command == "scenario" and result.steps:
        # A scenario's steps each start afresh: their counts do not add up to anything. The
        # tiles give the number of steps and the headline step's own figures.
        shown = next((s for s in result.steps if s.ceiling == ceiling), result.steps[-1])
        cards: list[tuple[str, str, str]] = [
            ("steps", fmt(len(result.steps)), ""),
            (f"requested in {shown.name}", fmt(shown.requested), ""),
            (f"held in {shown.name}", fmt(shown.held), ""),
            ("peak held, any step", fmt(result.established_peak), ""),
            ("duration", f"{result.duration_s:.1f} s", ""),
        ]
    else:
        cards = [
            ("requested", fmt(result.requested), ""),
            ("peak held", fmt(result.established_peak), ""),
            ("held at the end", fmt(result.held_at_end), ""),
            ("attempts", fmt(result.attempts), ""),
            ("duration", f"{result.duration_s:.1f} s", ""),
        ]
    if ceiling.reached:
        cards.append(
            (f"ceiling ({ceiling.cause or 'unknown cause'})", fmt(ceiling.count), "ceiling")
        )
    else:
        cards.append(("ceiling", "not reached", ""))
    if pred.count is not None:
        cards.append((f"predicted ({pred.cause or '?'})", fmt(pred.count), ""))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {e(cls)}"><div class="v">{e(v)}</div>'
            f'<div class="k">{e(k)}</div></div>'
            for k, v, cls in cards
        )
        + "</div>"
    )


def _failures_html(result: Result) -> str:
    failures = result.failures
    total = sum(failures.values())
    parts = []
    if total:
        rows = [
            (name, n, f"{n / total:.1%}", cause_of_name(name))
            for name, n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        parts.append(_table(("errno", "attempts", "share", "cause"), rows))
    else:
        parts.append("<p>No attempt failed.</p>")
    c = result.ceiling
    fields = {
        "reached": c.reached,
        "count": c.count,
        "cause": c.cause,
        "errno": c.errno,
        "knob": c.knob,
        "evidence": c.evidence,
        "certainty": c.certainty,
        "windows": c.windows,
    }
    parts.append("<h3>Ceiling</h3>" + _kv(fields))
    if c.advice:
        parts.append(
            "<p>To raise it:</p><ul>"
            + "".join(f"<li><code>{e(a)}</code></li>" for a in c.advice)
            + "</ul>"
        )
    if result.server is not None and _fields(result.server):
        parts.append("<h3>Server</h3>" + _kv(server_rows(result)))
    return "".join(parts)


#: Why a conncap server counts resets: its own clients end with an RST.
RESETS_WHY = (
    "conncap's client resets its connections at the end (SO_LINGER 0), so no TIME_WAIT is left "
    "for the next run; these are those resets, not failures"
)


def _peak_server_held(result: Result) -> int | None:
    """The most connections the server held at once: its samples, else its steps' counts."""
    seen = [s.server_held for s in result.timeline if s.server_held is not None]
    seen += [st.server_held for st in result.steps if st.server_held is not None]
    return max(seen) if seen else None


def server_rows(result: Result) -> dict[str, object]:
    """The server's own figures for people: the peak it held (its count is read after the
    clients closed, so ``held`` is what was left), and what its resets are."""
    server = result.server
    assert server is not None
    fields = _fields(server)
    rows: dict[str, object] = {}
    peak = _peak_server_held(result)
    if peak is not None:
        rows["held at the peak"] = peak
    if "held" in fields:
        rows["held when read, after the clients closed"] = fields.pop("held")
    for key in ("accepted", "closed"):
        if key in fields:
            rows[key] = fields.pop(key)
    if "resets" in fields:
        resets = fields.pop("resets")
        rows["resets (RST)"] = (
            f"{fmt(resets)}: {RESETS_WHY}" if result.command in ("run", "scenario") else resets
        )
    for key, value in fields.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) or "none"
        rows[key.replace("_", " ")] = value
    return rows


def _memory_html(result: Result) -> str:
    svg = plot_memory(result)
    parts = [
        _figure_html(
            svg,
            "Kernel and user memory against connections held; each line is the least-squares "
            "slope over the ramp (flat start and plateau left out), its value is the memory one "
            "connection costs.",
            "Memory against connections held: not measured ("
            + (
                "`conncap open` does not sample memory"
                if result.command == "open"
                else "the timeline has no kernel or user memory samples over a ramp"
            )
            + ").",
        )
    ]
    mem = _fields(result.memory) if result.memory is not None else {}
    if mem:
        rows = []
        for k, v in mem.items():
            shown = fmt(v)
            if isinstance(v, int | float) and not isinstance(v, bool):
                if k.endswith("bytes") or "per_conn" in k or k == "mem_available":
                    shown = f"{fmt(v)} ({format_bytes(v)})"
                elif k.endswith("_r2"):
                    shown = f"{v:.3f}"  # as the summary and the plot quote it
                elif k == "extrapolated_ceiling":
                    shown = f"{fmt(v)} (about {about(v)})"
            rows.append((k, shown))
        parts.append(_table(("field", "value"), rows))
    return "".join(parts)


def _plan_html(result: Result) -> str:
    parts = []
    plan = result.plan
    parts.append(_kv(plan) if plan else '<p class="na">No plan recorded.</p>')
    if result.topology:
        parts.append("<h3>Topology</h3>" + _kv(result.topology))
    steps = result.steps
    if steps:
        rows = []
        for st in steps:
            c, p = st.ceiling, st.prediction
            ceiling = f"{fmt(c.count)} ({fmt(c.cause)})" if c.reached else "not reached"
            predicted = (
                f"{fmt(p.count)} ({fmt(p.cause)})" if p is not None and p.count is not None else "—"
            )
            rows.append(
                (st.name, st.title, st.t_start, st.t_end, st.established_peak, ceiling, predicted)
            )
        parts.append(
            "<h3>Steps</h3>"
            + _table(("step", "what", "start (s)", "end (s)", "peak", "ceiling", "predicted"), rows)
        )
        for st in steps:
            sp, sb = st.plan, _bounds_table(st.prediction)
            if sp or sb:
                what = "plan and model" if sp and sb else "plan" if sp else "model"
                parts.append(
                    f"<details><summary>{what} of step {e(st.name)}</summary>"
                    f"{_kv(sp) if sp else ''}{sb}</details>"
                )
    bounds = _bounds_table(result.prediction)
    if bounds:
        heading = "Prediction: every bound the model found"
        if result.command == "scenario":
            headline = next((s.name for s in steps if s.prediction == result.prediction), None)
            if headline is not None:
                heading = f"Prediction of the headline step, {headline}: every bound"
        parts.append(f"<h3>{e(heading)}</h3>{bounds}")
    return "".join(parts)


def _bounds_table(prediction: Prediction | None) -> str:
    """Every bound of a prediction (cause, count, detail, estimate), or '' without any."""
    if prediction is None or not prediction.bounds:
        return ""
    rows = [(b.cause, b.count, b.detail, b.estimate) for b in prediction.bounds]
    return _table(("cause", "count", "detail", "estimate"), rows)


def _typed_limit(name: str, value: JsonValue) -> object:
    """A ``conncap.limits/1`` value back in the shape ``limits.render.format_value`` takes
    (tuples for lists, a ``SockStat`` for sockstat)."""
    from conncap.limits import SockStat

    if name == "sockstat" and isinstance(value, Mapping):
        return SockStat(**{k: v for k, v in value.items() if isinstance(v, int)})
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _plain(value: JsonValue) -> str:
    """Any JSON value in words, never a Python or JSON repr: ``{"a_b": 1}`` -> ``a b 1``."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "none"
    return fmt(value)


def limit_value(name: str, value: JsonValue, page_size: int | None = None) -> str:
    """A limit's value as ``conncap limits`` shows it (``limits.render.format_value``), or in
    plain words when this conncap does not know its shape."""
    from conncap.limits import Fact
    from conncap.limits.render import format_value

    if value is None:
        return "—"
    try:
        shown = format_value(name, Fact.of(_typed_limit(name, value), ""), page_size)
    except (TypeError, ValueError, IndexError, KeyError):
        return _plain(value)
    # format_value's last resort is str(): a repr of a shape it does not know
    return _plain(value) if shown.startswith(("{", "(", "[")) else shown


def limit_label(name: str) -> str:
    """A limit's name for people (``limits.render.LABELS``), else its key in words."""
    from conncap.limits.render import LABELS

    return LABELS.get(name) or name.removeprefix("extra.").replace("_", " ")


def _limits_html(result: Result) -> str:
    limits = result.limits or {}
    facts = _sub(limits, "facts")
    if not facts:
        why = {
            "open": "`conncap open` does not record them",
            "scenario": "a scenario's limits are its namespaces': the model's bounds of each "
            "step, under Plan and steps, are computed from them",
        }.get(result.command, "none")
        return f'<p class="na">No host limits in this result ({e(why)}).</p>'
    implied = _sub(limits, "implied")
    headers = ("limit", "value", "what it implies", "source", "status / reason")
    rows, classes, na_rows = [], [], []
    page = _sub(facts, "extra.page_size").get("value")
    page_size = page if isinstance(page, int) and not isinstance(page, bool) else None
    for name in facts:
        f = _sub(facts, name)
        status = _text(f, "status") or "?"
        reason = _text(f, "reason")
        no_limit = status == "unknown" and reason.startswith("no limit")
        value = "no limit" if no_limit else limit_value(name, f.get("value"), page_size)
        row = (
            limit_label(name),
            value,
            _text(_sub(implied, name), "text"),
            _text(f, "source"),
            status + (f": {reason}" if reason else ""),
        )
        if status == "n/a":
            na_rows.append(row)
        else:
            rows.append(row)
            classes.append("unknown" if status == "unknown" and not no_limit else "")
    os_name = _text(limits, "os") or "this OS"
    out = _table(headers, rows, classes, align_numbers=False, table_class="limits")
    if na_rows:
        out += (
            f"<details><summary>{len(na_rows)} limits not applicable on {e(os_name)}</summary>"
            + _table(headers, na_rows, align_numbers=False, table_class="limits")
            + "</details>"
        )
    return out


def _churn_html(churn: JsonObject) -> str:
    """``open --lifetime``'s churn object: the model's sentence, what was measured, and the
    whole churn prediction folded away."""
    prediction = _sub(churn, "prediction")
    line = _text(prediction, "line")
    out = f"<p>Predicted: {e(line)}</p>" if line else ""
    out += _kv({k: v for k, v in churn.items() if k != "prediction"})
    if prediction:
        out += (
            f"<details><summary>the churn model's prediction</summary>{_kv(prediction)}</details>"
        )
    return out


def _nodes_html(result: Result) -> str:
    """``open --cluster``: one row per node (what the model predicted for it, what it held,
    what stopped it) and each node's held count over time."""
    first = result.first_stop
    rows, classes = [], []
    for n in result.nodes:
        c, p = n.ceiling, n.prediction
        matches = {True: "yes", False: "no", None: "—"}[n.matches_prediction]
        name = n.node_id[:8] + (
            " (first to stop)" if first is not None and first.node_id == n.node_id else ""
        )
        rows.append(
            (
                name,
                n.address,
                f"{fmt(p.count)} ({fmt(p.cause)})" if p.count is not None else "—",
                n.held,
                c.cause if c.reached else ("failed: " + n.error if n.error else "no ceiling"),
                c.side if c.reached else "—",
                c.errno if c.reached else "—",
                matches,
                f"lost: {n.lost_reason or '?'}" if n.lost else "no",
            )
        )
        classes.append("unknown" if n.lost or n.error or n.matches_prediction is False else "")
    headers = ("node", "address", "predicted", "held", "cause", "side", "errno", "matches")
    table = _table((*headers, "lost"), rows, classes)
    caption = (
        "Connections each node held, on the run's time line; dashed: the cluster's total; "
        "a dot where a node reached its ceiling, a star on the first to stop."
    )
    return table + _figure_html(
        plot_nodes(result),
        caption,
        "Connections held over time per node: not measured (fewer than 2 samples per node).",
    )


def _any_failure(result: Result) -> bool:
    return any(n > 0 for s in result.timeline for n in s.failures_by_cause.values())


def render(result: Result) -> str:
    """The report as one HTML string."""
    host = result.host
    hostname = (host.hostname if host is not None else None) or "unknown host"
    command = result.command
    started = result.started_at or ""
    meta = " · ".join(
        e(p)
        for p in (
            hostname,
            " ".join(x for x in (host.os, host.kernel) if x) if host is not None else "",
            f"{fmt(host.cpu_count)} CPUs"
            if host is not None and host.cpu_count is not None
            else "",
            f"conncap {command}",
            started,
        )
        if p
    )
    summary = list(result.summary) or prose.summarize(result)
    scenario = is_scenario(result)
    verdict = ""
    if scenario:
        verdict = verdict_html(result)
        # the verdict says what the summary's first line says ("scenario NAME: N of M ...")
        name = result.scenario.name if result.scenario is not None else None
        summary = [s for s in summary if not (name and s.startswith(f"scenario {name}:"))]
    head = ""
    if summary and prose.is_headline(summary[0]):
        head, summary = summary[0], summary[1:]
    elif not scenario:
        head = prose.headline(result)  # a document written before the headline
    summary_html = (f'<p class="headline">{e(head)}</p>' if head else "") + (
        '<ul class="summary">' + "".join(f"<li>{e(s)}</li>" for s in summary) + "</ul>"
        if summary
        else '<p class="na">Nothing to summarize.</p>'
    )
    why = "the result has no timeline" if not result.timeline else ""
    no_failures = (
        "Failures by cause over time: none, no attempt failed."
        if result.timeline and not _any_failure(result)
        else "Failures by cause over time: not measured "
        f"({why or 'the timeline has no failures_by_cause'})."
    )
    sections = [
        ("Summary", verdict + summary_html + _cards(result)),
        *([("Expectations", expectations_html(result))] if scenario else []),
        (
            "Connections over time",
            _figure_html(
                plot_held(result),
                "Connections held. Dashed: the prediction (per step when the run has steps); "
                "dotted: the start of each step; red: where held stopped growing at a ceiling.",
                f"Connections held over time: not measured "
                f"({why or 'fewer than 2 samples with t and held'}).",
            )
            + _figure_html(
                plot_rate(result),
                "Connect rate (connections opened per second).",
                f"Connect rate over time: not measured "
                f"({why or 'fewer than 2 samples with t and rate'}).",
            )
            + _figure_html(
                plot_failures(result),
                "Failed attempts by cause, cumulative and stacked.",
                no_failures,
            ),
        ),
        *([("Nodes of the cluster", _nodes_html(result))] if result.nodes else []),
        ("Connect latency", latency_html(result, plot_latency(result))),
        *([("Steps: attribution and what was observed", steps_html(result))] if scenario else []),
        ("Failures and ceiling", _failures_html(result)),
        *([("The server's side", server_html(result))] if has_server_side(result) else []),
        *(
            [
                (
                    "Churn: connections opened and closed",
                    _figure_html(
                        plot_churn(result),
                        "New connections per second (measured) with the churn model's "
                        "sustainable rate (dashed), and sockets in TIME_WAIT (the client's "
                        "namespace) over time.",
                        "Churn over time: not plotted (fewer than 2 samples read TIME_WAIT).",
                    )
                    + _churn_html(result.churn),
                )
            ]
            if result.churn
            else []
        ),
        ("Memory per connection", _memory_html(result)),
        ("Plan and steps", _plan_html(result)),
        ("Host limits", _limits_html(result)),
        ("Reproduce this run", reproduce_html(result)),
    ]
    body = "".join(
        f"<section><h2>{e(title)}</h2>{content}</section>" for title, content in sections
    )
    title = f"conncap report: {hostname} ({command}{', ' + started if started else ''})"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{_CSS}{SCENARIO_CSS if scenario else ''}</style></head>"
        f'<body><main><header><h1>conncap report</h1><p class="meta">{meta}</p></header>'
        f"{body}"
        f"<footer>{e(result.schema)} · written by conncap "
        f"{e(result.conncap_version or '?')} · rendered by conncap {e(__version__)}</footer>"
        "</main></body></html>\n"
    )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` so that a reader never sees a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def default_output(result_path: str | os.PathLike[str]) -> Path:
    """RESULT.json -> RESULT.html next to it."""
    return Path(result_path).with_suffix(".html")


def build(
    result_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path:
    """Load a result (one-line UsageError if it is not one), render it, write it atomically."""
    loaded = load_result(result_path)
    out = Path(output) if output is not None else default_output(result_path)
    if out.resolve() == Path(result_path).resolve():
        raise UsageError(f"{out}: that is the result itself; choose another file with -o")
    text = render(loaded)
    try:
        return write_text_atomic(out, text)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
