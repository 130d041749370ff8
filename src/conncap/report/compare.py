"""``conncap report A.json B.json -o cmp.html``: two runs side by side on one self-contained
page (the same CSP as the report: no script, no fetch): what each was (command line, version,
kernel), the headline figures in one table, held connections and connect latency over time
overlaid, the ceilings, memory per connection and the latency percentiles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from conncap import __version__
from conncap.errors import UsageError
from conncap.report.html import CSP, write_text_atomic
from conncap.report.markup import e, fmt
from conncap.report.observe import MEASURES, latency_table, reproduce_html
from conncap.report.plots import plot_compare
from conncap.report.summary import format_bytes
from conncap.result import Latency, Result, load_result

_CSS = """
body { margin:0; color:#1f2328; font: 15px/1.5 system-ui, "DejaVu Sans", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d1d9e0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d1d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.meta, figcaption { color: #59636e; font-size: 0.9em; }
.na { color: #59636e; font-style: italic; }
figure { margin: 12px 0 20px; }
figure svg { width: 100%; height: auto; display: block; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 3px; font-size: 0.92em; }
.runs { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
"""


def _ceiling(r: Result) -> str:
    c = r.ceiling
    if not c.reached:
        return "not reached"
    return f"{fmt(c.count)} ({c.cause}, {c.errno or '?'}, {c.side or '?'})"


def _bytes(v: int | None) -> str:
    return "not measured" if v is None else f"{format_bytes(v)}"


def _lat(x: Latency | None, which: str) -> str:
    if x is None:
        return "not measured"
    v = getattr(x, which)
    return "—" if v is None else f"{v:,.3f} ms"


def _rows(a: Result, b: Result) -> list[tuple[str, str, str]]:
    def both(f: object) -> tuple[str, str]:
        assert callable(f)
        return str(f(a)), str(f(b))

    items: list[tuple[str, object]] = [
        ("command", lambda r: r.command),
        ("requested", lambda r: fmt(r.requested)),
        ("peak held", lambda r: fmt(r.established_peak)),
        ("held at the end", lambda r: fmt(r.held_at_end)),
        ("attempts", lambda r: fmt(r.attempts)),
        ("duration", lambda r: f"{r.duration_s:.1f} s"),
        ("stopped by", lambda r: r.stop_reason or "?"),
        ("ceiling", _ceiling),
        (
            "predicted",
            lambda r: (
                f"{fmt(r.prediction.count)} ({r.prediction.cause})"
                if r.prediction.count is not None
                else "unknown"
            ),
        ),
        (
            "kernel memory / connection",
            lambda r: _bytes(r.memory.kernel_bytes_per_conn if r.memory else None),
        ),
        (
            "user memory / connection",
            lambda r: _bytes(r.memory.user_bytes_per_conn if r.memory else None),
        ),
        ("connect p50", lambda r: _lat(r.latency, "p50_ms")),
        ("connect p99", lambda r: _lat(r.latency, "p99_ms")),
        ("connect max", lambda r: _lat(r.latency, "max_ms")),
        ("conncap", lambda r: r.conncap_version or "?"),
        ("kernel", lambda r: (r.host.kernel if r.host else None) or "?"),
        ("started", lambda r: r.started_at or "?"),
    ]
    return [(name, *both(f)) for name, f in items]


def _figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f'<p class="na">{e(missing)}</p>'
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def _latency_tables(runs: Sequence[tuple[str, Result]]) -> str:
    parts = []
    for label, r in runs:
        rows = [("whole run", r.latency)] if r.latency is not None else []
        rows += [(f"step {s.name}", s.latency) for s in r.steps if s.latency is not None]
        body = (
            latency_table([(n, x) for n, x in rows if x is not None])
            if rows
            else '<p class="na">not measured</p>'
        )
        parts.append(f"<div><h3>{e(label)}</h3>{body}</div>")
    return f'<div class="runs">{"".join(parts)}</div>'


def render_compare(a: Result, b: Result, label_a: str = "A", label_b: str = "B") -> str:
    """The comparison page of two results as one HTML string."""
    runs = [(label_a, a), (label_b, b)]
    head = f"<tr><th></th><th>{e(label_a)}</th><th>{e(label_b)}</th></tr>"
    body = "".join(
        f"<tr><th>{e(name)}</th><td>{e(x)}</td><td>{e(y)}</td></tr>" for name, x, y in _rows(a, b)
    )
    sections = [
        ("The two runs", f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"),
        (
            "Connections held over time",
            _figure(
                plot_compare(runs, "held", "connections held"),
                f"Connections held, {label_a} solid, {label_b} dashed; dotted: each run's "
                "ceiling. Time is measured from each run's own start.",
                "Connections held over time: neither result has two samples.",
            ),
        ),
        (
            "Connect latency over time",
            _figure(
                plot_compare(runs, "latency", "connect latency (ms)", log=True),
                "p50 (thin) and p99 (thick) of the handshakes completed in each sample interval.",
                "Connect latency over time: not measured in either result.",
            )
            + _latency_tables(runs)
            + f'<p class="meta">{e(MEASURES)}</p>',
        ),
        (
            "Kernel memory over time",
            _figure(
                plot_compare(runs, "kernel_bytes", "kernel memory (bytes)"),
                "Kernel memory (slab or MemAvailable, as the run measured it).",
                "Kernel memory over time: not measured in either result (conncap open does not "
                "sample it).",
            ),
        ),
        (
            "How to reproduce each",
            '<div class="runs">'
            + "".join(f"<div><h3>{e(label)}</h3>{reproduce_html(r)}</div>" for label, r in runs)
            + "</div>",
        ),
    ]
    html_body = "".join(f"<section><h2>{e(t)}</h2>{c}</section>" for t, c in sections)
    title = f"conncap comparison: {label_a} and {label_b}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><header><h1>{e(title)}</h1>"
        f'<p class="meta">{e(label_a)}: {e(a.command)} · {e(label_b)}: {e(b.command)}</p>'
        f'</header>{html_body}<footer class="meta">rendered by conncap {e(__version__)}'
        "</footer></main></body></html>\n"
    )


def build_compare(
    a_path: str | os.PathLike[str],
    b_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
) -> Path:
    """Load two results, render their comparison (:mod:`conncap.report.compare`), write it
    atomically (default: A-vs-B.html next to A)."""
    a, b = load_result(a_path), load_result(b_path)
    pa, pb = Path(a_path), Path(b_path)
    out = Path(output) if output is not None else pa.with_name(f"{pa.stem}-vs-{pb.stem}.html")
    if out.resolve() in (pa.resolve(), pb.resolve()):
        raise UsageError(f"{out}: that is one of the results; choose another file with -o")
    la, lb = (pa.name, pb.name) if pa.name != pb.name else (str(pa), str(pb))
    text = render_compare(a, b, la, lb)
    try:
        return write_text_atomic(out, text)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
