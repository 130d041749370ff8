"""The HTML report's sections for a ``conncap scenario`` result (docs/scenarios.md): the
verdict, the expectations (✓/✗ with what was expected and what was measured), and per step
the attribution of its ceiling (cause, side, evidence) and what the scenario observed with
the system's tools (``ss``, the descriptor tables, the gateway's conntrack counters).

Every string from the document goes through :func:`conncap.report.markup.e`; a missing field or one
of the wrong type is shown as "not measured" or left out, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conncap.report.markup import as_list as _list
from conncap.report.markup import e, fmt, obj, str_or_none

#: What each ``observed`` key holds, in words (unknown keys are shown by their name).
OBSERVED_LABELS = {
    "server_ss": "the server's sockets (ss in its namespace)",
    "client_fd_table": "the client worker's descriptor table",
    "server_fd_table": "the server worker's descriptor table",
    "accept_queue": "the accept queue (ss -ltn at the server)",
    "server_side": "where the client's connections are, seen at the server",
    "snat": "the NAT gateway (conntrack in its namespace)",
}
#: Step counters that are levels at the end of the step, not growth over it.
LEVEL_COUNTERS = ("conntrack_count", "conntrack_max")
#: Items of a list or map shown in one cell before "… (N in all)".
MAX_ITEMS = 12

CSS = """
.verdict { font-size: 1.1em; font-weight: 600; margin: 4px 0; }
.verdict.good, td.mark.good { color: var(--good); }
.verdict.bad, td.mark.bad { color: var(--bad); }
td.mark { text-align: center; font-weight: 700; width: 1.6em; }
td.mark.note { color: var(--muted); }
tr.bad td { background: #fff1f0; }
tr.group th { background: var(--bg); border-left: none; border-right: none;
              padding-top: 10px; font-weight: 600; }
tr.group th .t { color: var(--muted); font-weight: 400; }
.why { color: var(--muted); font-size: 0.9em; }
table.wide { width: 100%; }
.step { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 10px;
        margin: 14px 0; }
.step h3 { margin-top: 10px; }
.step .meta { margin-bottom: 6px; }
table.kv th { font-weight: 500; white-space: nowrap; }
table.kv.wide th { width: 6.5em; font-weight: 600; }
table.exp td:nth-child(2) { width: 32%; }
table.exp td:nth-child(3), table.exp td:nth-child(4) { width: 33%; }
.obs { display: flex; flex-wrap: wrap; gap: 4px 18px; align-items: flex-start; }
.obs > div { min-width: 260px; max-width: 100%; }
h4 { font-size: 0.92em; margin: 10px 0 2px; color: var(--muted); font-weight: 600; }
"""


def is_scenario(doc: Mapping[str, Any]) -> bool:
    """A ``conncap scenario`` result (or any result that carries expectations)."""
    return doc.get("command") == "scenario" or isinstance(doc.get("expectations"), list)


def _expectations(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [x for x in _list(doc.get("expectations")) if isinstance(x, Mapping)]


def _mark(ok: Any) -> tuple[str, str]:
    """(symbol, class) of an expectation: ✓ held, ✗ did not, · a note (ok null)."""
    if ok is True:
        return "✓", "good"
    if ok is False:
        return "✗", "bad"
    return "·", "note"


def _is_label(key: str) -> bool:
    """Numbers that name something (a port, a pid) are shown without thousands separators."""
    return key == "pid" or key.endswith(("_port", "port_min", "port_max", "local_ports"))


def compact(value: Any, limit: int = MAX_ITEMS, key: str = "") -> str:
    """A value in one short line of text (not yet escaped): maps as ``key: value``, lists
    joined, at most ``limit`` items and then how many there are in all. Under a ``key`` that
    names ports or a pid, integers are shown as they are (40000, not 40,000)."""
    if isinstance(value, Mapping):
        items = [f"{k}: {compact(v, limit)}" for k, v in value.items()]
    elif isinstance(value, list):
        items = [compact(v, limit, key) for v in value]
    elif _is_label(key) and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    else:
        return fmt(value)
    if not items:
        return "(none)"
    more = f" … ({len(items):,} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def verdict_html(doc: Mapping[str, Any]) -> str:
    """'✓ scenario article: 20 of 20 expectations hold' and what the scenario shows."""
    sc = obj(doc.get("scenario"))
    exps = _expectations(doc)
    checks = [x for x in exps if x.get("ok") is not None]
    ok = sc.get("checks_passed")
    total = sc.get("checks")
    if not isinstance(ok, int) or isinstance(ok, bool):
        ok = sum(1 for x in checks if x.get("ok") is True)
    if not isinstance(total, int) or isinstance(total, bool):
        total = len(checks)
    passed = sc.get("passed")
    if not isinstance(passed, bool):
        passed = bool(checks) and ok == total
    name = str_or_none(sc.get("name")) or "?"
    title = str_or_none(sc.get("title"))
    scale = str_or_none(sc.get("scale"))
    symbol, cls = ("✓", "good") if passed else ("✗", "bad")
    failed = total - ok
    head = f"{symbol} scenario {name}: {fmt(ok)} of {fmt(total)} expectations hold" + (
        f" ({fmt(failed)} did not)" if failed > 0 else ""
    )
    if not passed and failed <= 0:
        head += f" (stop: {fmt(doc.get('stop_reason'))})"
    parts = [f'<p class="verdict {cls}">{e(head)}</p>']
    sub = " · ".join(e(x) for x in (title, f"scale {scale}" if scale else None) if x)
    if sub:
        parts.append(f'<p class="meta">{sub}</p>')
    shows = str_or_none(sc.get("shows"))
    if shows:
        parts.append(f"<p>{e(shows)}</p>")
    error = str_or_none(doc.get("error"))
    if error:
        parts.append(f'<p class="verdict bad">{e("stopped by an error: " + error)}</p>')
    return "".join(parts)


def expectations_html(doc: Mapping[str, Any]) -> str:
    """The table of expectations, grouped by step in the order they were checked; a check
    that failed is marked ✗ on a tinted row, a note (a figure the kernel does not promise,
    or the model's prediction) with ·."""
    exps = _expectations(doc)
    if not exps:
        return '<p class="na">This result has no expectations.</p>'
    titles = {
        str(s.get("name")): str_or_none(s.get("title")) or ""
        for s in _list(doc.get("steps"))
        if isinstance(s, Mapping)
    }
    rows: list[str] = []
    group: object = object()
    for x in exps:
        step = str_or_none(x.get("step")) or ""
        if step != group:
            group = step
            label = f"step {step}" if step else "the whole scenario"
            title = titles.get(step, "")
            rows.append(
                f'<tr class="group"><th colspan="4">{e(label)}'
                + (f' <span class="t">{e(title)}</span>' if title else "")
                + "</th></tr>"
            )
        symbol, cls = _mark(x.get("ok"))
        why = str_or_none(x.get("why"))
        what = e(fmt(x.get("name"))) + (f'<div class="why">{e(why)}</div>' if why else "")
        expected = str_or_none(x.get("expected"))
        rows.append(
            f'<tr class="{"bad" if cls == "bad" else ""}">'
            f'<td class="mark {cls}">{symbol}</td>'
            f"<td>{what}</td>"
            f"<td>{e(expected) if expected else '<span class=na>—</span>'}</td>"
            f"<td>{e(fmt(x.get('measured')))}</td></tr>"
        )
    head = "<tr><th></th><th>what</th><th>expected</th><th>measured</th></tr>"
    legend = (
        '<p class="why">✓ held, ✗ did not; · a figure shown without a check (the kernel '
        "does not promise it, or the model's prediction).</p>"
    )
    return (
        f'<table class="wide exp"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        + legend
    )


def _step_line(st: Mapping[str, Any]) -> str:
    parts = [f"client held {fmt(st.get('held'))} of {fmt(st.get('requested'))} asked"]
    server = obj(st.get("server"))
    if server.get("held") is not None:
        parts.append(f"server held {fmt(server.get('held'))}")
    failures = {str(k): v for k, v in obj(st.get("failures")).items()}
    if failures:
        parts.append("failures " + ", ".join(f"{k} ×{fmt(v)}" for k, v in failures.items()))
    errors = obj(server.get("errors_during_step"))
    if errors:
        parts.append(
            "server accept() failed " + ", ".join(f"{k} ×{fmt(v)}" for k, v in errors.items())
        )
    stop = str_or_none(st.get("stop_reason"))
    if stop:
        parts.append(f"stopped: {stop}")
    return " · ".join(parts)


def _attribution_html(st: Mapping[str, Any]) -> str:
    att = obj(st.get("attribution"))
    ceiling = obj(st.get("ceiling"))
    pred = obj(st.get("prediction"))
    if not att and not ceiling:
        return '<p class="na">No attribution recorded for this step.</p>'
    rows: list[tuple[str, Any]] = []
    if ceiling.get("reached") is False:
        rows.append(("ceiling", "not reached"))
    elif ceiling.get("reached") is True:
        errno = str_or_none(ceiling.get("errno"))
        rows.append(("ceiling", f"{fmt(ceiling.get('count'))}" + (f" ({errno})" if errno else "")))
    rows.append(("cause", att.get("cause")))
    rows.append(("side", att.get("side")))
    rows.append(("evidence", att.get("evidence")))
    if pred.get("count") is not None or pred.get("reason"):
        said = (
            f"{fmt(pred.get('count'))} ({fmt(pred.get('cause'))}, {fmt(pred.get('side'))})"
            if pred.get("count") is not None
            else f"none ({fmt(pred.get('reason'))})"
        )
        rows.append(("model", said))
    return _kv_rows([(k, fmt(v)) for k, v in rows], "kv wide")


def _kv_rows(rows: list[tuple[str, str]], cls: str = "kv") -> str:
    """A two-column table, the name in a header cell; '' for no rows."""
    if not rows:
        return ""
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{e(cls)}"><tbody>{body}</tbody></table>'


def _observed_html(st: Mapping[str, Any]) -> str:
    blocks = []
    for key, value in obj(st.get("observed")).items():
        label = OBSERVED_LABELS.get(str(key), str(key))
        if isinstance(value, Mapping):
            body = _kv_rows([(str(k), compact(v, key=str(k))) for k, v in value.items()])
        else:
            body = f"<p>{e(compact(value))}</p>"
        blocks.append(f"<div><h4>{e(label)}</h4>{body or '<p class=na>(empty)</p>'}</div>")
    counters = obj(st.get("counters"))
    grown = [
        (str(k), v)
        for k, v in counters.items()
        if str(k) not in LEVEL_COUNTERS and v is not None and v != 0
    ]
    levels = [(str(k), v) for k, v in counters.items() if str(k) in LEVEL_COUNTERS]
    if grown or levels:
        rows = [(k, f"+{fmt(v)}" if isinstance(v, int) and v > 0 else fmt(v)) for k, v in grown]
        rows += [(f"{k} (at the end)", fmt(v)) for k, v in levels]
        blocks.append(f"<div><h4>kernel counters over the step</h4>{_kv_rows(rows)}</div>")
    if not blocks:
        return ""
    return '<div class="obs">' + "".join(blocks) + "</div>"


def steps_html(doc: Mapping[str, Any]) -> str:
    """Per step: what it did, what the client and the server held, the attribution of its
    ceiling, and what was observed."""
    steps = [s for s in _list(doc.get("steps")) if isinstance(s, Mapping)]
    if not steps:
        return '<p class="na">This result has no steps.</p>'
    exps = _expectations(doc)
    out = []
    for i, st in enumerate(steps, 1):
        name = fmt(st.get("name"))
        mine = [x for x in exps if x.get("step") == st.get("name") and x.get("ok") is not None]
        good = sum(1 for x in mine if x.get("ok") is True)
        tally = f" · {good} of {len(mine)} checks hold" if mine else ""
        title = str_or_none(st.get("title"))
        out.append(
            '<div class="step">'
            f"<h3>Step {i}: {e(name)}</h3>"
            + (f'<p class="meta">{e(title)}</p>' if title else "")
            + f"<p>{e(_step_line(st) + tally)}</p>"
            + _attribution_html(st)
            + _observed_html(st)
            + "</div>"
        )
    return "".join(out)
