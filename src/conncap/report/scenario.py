"""The HTML report's sections for a ``conncap scenario`` result (docs/scenarios.md): the
verdict, the expectations (✓/✗ with what was expected and what was measured), and per step
the attribution of its ceiling (cause, side, evidence) and what the scenario observed with
the system's tools (``ss``, the descriptor tables, the gateway's conntrack counters).

Every string from the result goes through :func:`conncap.report.markup.e`; a field the result
does not have is shown as "not measured" or left out.
"""

from __future__ import annotations

from collections.abc import Mapping

from conncap.report.markup import e, fmt
from conncap.result import Expectation, JsonValue, Result, Step

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


def is_scenario(result: Result) -> bool:
    """A ``conncap scenario`` result (or any result that carries expectations)."""
    return result.command == "scenario" or bool(result.expectations)


def _mark(ok: bool | None) -> tuple[str, str]:
    """(symbol, class) of an expectation: ✓ held, ✗ did not, · a note (ok null)."""
    if ok is True:
        return "✓", "good"
    if ok is False:
        return "✗", "bad"
    return "·", "note"


def _is_label(key: str) -> bool:
    """Numbers that name something (a port, a pid) are shown without thousands separators."""
    return key == "pid" or key.endswith(("_port", "port_min", "port_max", "local_ports"))


def compact(value: JsonValue, limit: int = MAX_ITEMS, key: str = "") -> str:
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


def _checked(exps: tuple[Expectation, ...]) -> list[Expectation]:
    return [x for x in exps if x.ok is not None]


def verdict_html(result: Result) -> str:
    """'✓ scenario article: 20 of 20 expectations hold' and what the scenario shows."""
    sc = result.scenario
    checks = _checked(result.expectations)
    ok = sc.checks_passed if sc is not None else None
    total = sc.checks if sc is not None else None
    if ok is None:
        ok = sum(1 for x in checks if x.ok is True)
    if total is None:
        total = len(checks)
    passed = sc.passed if sc is not None else None
    if passed is None:
        passed = bool(checks) and ok == total
    name = (sc.name if sc is not None else None) or "?"
    title = sc.title if sc is not None else None
    scale = sc.scale if sc is not None else None
    symbol, cls = ("✓", "good") if passed else ("✗", "bad")
    failed = total - ok
    head = f"{symbol} scenario {name}: {fmt(ok)} of {fmt(total)} expectations hold" + (
        f" ({fmt(failed)} did not)" if failed > 0 else ""
    )
    if not passed and failed <= 0:
        head += f" (stop: {fmt(result.stop_reason)})"
    parts = [f'<p class="verdict {cls}">{e(head)}</p>']
    sub = " · ".join(e(x) for x in (title, f"scale {scale}" if scale else None) if x)
    if sub:
        parts.append(f'<p class="meta">{sub}</p>')
    shows = sc.shows if sc is not None else None
    if shows:
        parts.append(f"<p>{e(shows)}</p>")
    if result.error:
        parts.append(f'<p class="verdict bad">{e("stopped by an error: " + result.error)}</p>')
    return "".join(parts)


def expectations_html(result: Result) -> str:
    """The table of expectations, grouped by step in the order they were checked; a check
    that failed is marked ✗ on a tinted row, a note (a figure the kernel does not promise,
    or the model's prediction) with ·."""
    exps = result.expectations
    if not exps:
        return '<p class="na">This result has no expectations.</p>'
    titles = {s.name: s.title for s in result.steps}
    rows: list[str] = []
    group: object = object()
    for x in exps:
        step = x.step
        if step != group:
            group = step
            label = f"step {step}" if step else "the whole scenario"
            title = titles.get(step, "")
            rows.append(
                f'<tr class="group"><th colspan="4">{e(label)}'
                + (f' <span class="t">{e(title)}</span>' if title else "")
                + "</th></tr>"
            )
        symbol, cls = _mark(x.ok)
        what = e(x.name) + (f'<div class="why">{e(x.why)}</div>' if x.why else "")
        rows.append(
            f'<tr class="{"bad" if cls == "bad" else ""}">'
            f'<td class="mark {cls}">{symbol}</td>'
            f"<td>{what}</td>"
            f"<td>{e(x.expected) if x.expected else '<span class=na>—</span>'}</td>"
            f"<td>{e(x.measured)}</td></tr>"
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


def _step_line(st: Step) -> str:
    parts = [f"client held {fmt(st.held)} of {fmt(st.requested)} asked"]
    server = st.server
    if server is not None and server.held is not None:
        parts.append(f"server held {fmt(server.held)}")
    if st.failures:
        parts.append("failures " + ", ".join(f"{k} ×{fmt(v)}" for k, v in st.failures.items()))
    errors = server.errors_during_step if server is not None else None
    if errors:
        parts.append(
            "server accept() failed " + ", ".join(f"{k} ×{fmt(v)}" for k, v in errors.items())
        )
    if st.stop_reason:
        parts.append(f"stopped: {st.stop_reason}")
    return " · ".join(parts)


def _attribution_html(st: Step) -> str:
    att, ceiling, pred = st.attribution, st.ceiling, st.prediction
    rows: list[tuple[str, object]] = []
    if not ceiling.reached:
        rows.append(("ceiling", "not reached"))
    else:
        errno = ceiling.errno
        rows.append(("ceiling", f"{fmt(ceiling.count)}" + (f" ({errno})" if errno else "")))
    rows.append(("cause", att.cause if att is not None else None))
    rows.append(("side", att.side if att is not None else None))
    rows.append(("evidence", att.evidence if att is not None else None))
    if pred is not None and (pred.count is not None or pred.reason):
        said = (
            f"{fmt(pred.count)} ({fmt(pred.cause)}, {fmt(pred.side)})"
            if pred.count is not None
            else f"none ({fmt(pred.reason)})"
        )
        rows.append(("model", said))
    return _kv_rows([(k, fmt(v)) for k, v in rows], "kv wide")


def _kv_rows(rows: list[tuple[str, str]], cls: str = "kv") -> str:
    """A two-column table, the name in a header cell; '' for no rows."""
    if not rows:
        return ""
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{e(cls)}"><tbody>{body}</tbody></table>'


def _observed_html(st: Step) -> str:
    blocks = []
    for key, value in (st.observed or {}).items():
        label = OBSERVED_LABELS.get(key, key)
        if isinstance(value, Mapping):
            body = _kv_rows([(k, compact(v, key=k)) for k, v in value.items()])
        else:
            body = f"<p>{e(compact(value))}</p>"
        blocks.append(f"<div><h4>{e(label)}</h4>{body or '<p class=na>(empty)</p>'}</div>")
    counters = st.counters
    grown = [(k, v) for k, v in counters.items() if k not in LEVEL_COUNTERS and v]
    levels = [(k, v) for k, v in counters.items() if k in LEVEL_COUNTERS]
    if grown or levels:
        rows = [(k, f"+{fmt(v)}" if v is not None and v > 0 else fmt(v)) for k, v in grown]
        rows += [(f"{k} (at the end)", fmt(v)) for k, v in levels]
        blocks.append(f"<div><h4>kernel counters over the step</h4>{_kv_rows(rows)}</div>")
    if not blocks:
        return ""
    return '<div class="obs">' + "".join(blocks) + "</div>"


def steps_html(result: Result) -> str:
    """Per step: what it did, what the client and the server held, the attribution of its
    ceiling, and what was observed."""
    if not result.steps:
        return '<p class="na">This result has no steps.</p>'
    checks = _checked(result.expectations)
    out = []
    for i, st in enumerate(result.steps, 1):
        mine = [x for x in checks if x.step == st.name]
        good = sum(1 for x in mine if x.ok is True)
        tally = f" · {good} of {len(mine)} checks hold" if mine else ""
        out.append(
            '<div class="step">'
            f"<h3>Step {i}: {e(st.name)}</h3>"
            + (f'<p class="meta">{e(st.title)}</p>' if st.title else "")
            + f"<p>{e(_step_line(st) + tally)}</p>"
            + _attribution_html(st)
            + _observed_html(st)
            + "</div>"
        )
    return "".join(out)
