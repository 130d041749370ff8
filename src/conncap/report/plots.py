"""The report's plots: matplotlib figures rendered to inline SVG strings (None when the result
lacks the data). Text in the SVG is escaped by matplotlib; mathtext is off, so names from the
result are drawn as they are. matplotlib is imported when a plot is drawn, not before.
"""

from __future__ import annotations

import functools
import io
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from conncap import analysis
from conncap.report.summary import format_bytes
from conncap.result import Result

# Fixed colours per cause so that every plot and report agrees.
_CAUSE_COLOURS = {
    "ephemeral-ports": "#1f77b4",
    "file-descriptors": "#d62728",
    "system-file-table": "#9467bd",
    "memory": "#8c564b",
    "server-backlog": "#ff7f0e",
    "server-refused": "#e377c2",
    "server-closed": "#bcbd22",
    "conntrack": "#17becf",
    "timeout": "#7f7f7f",
    "network": "#2ca02c",
    "permission": "#393b79",
    "unknown": "#aaaaaa",
}
_OFF_SCALE = 1.6  # a prediction above 1.6 x the data is noted, not drawn


def _series(result: Result, key: str) -> tuple[list[float], list[float]]:
    """The times and values of a timeline figure, as two lists."""
    pts = result.series(key)
    return [t for t, _ in pts], [v for _, v in pts]


def _figure(height: float = 3.3) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(9.6, height), layout="constrained")


#: matplotlib settings for every plot (set while the figure is built, not only when saved).
_RC: Any = {
    "svg.fonttype": "none",  # real <text>, escaped by matplotlib; smaller than glyph paths
    "text.parse_math": False,  # '$' in a hostname is text, not mathtext
    "font.size": 9,
}

_Plot = Callable[[Result], str | None]


def _plotting(fn: _Plot) -> _Plot:
    """Build the plot under :data:`_RC`."""

    @functools.wraps(fn)
    def wrapper(result: Result) -> str | None:
        import matplotlib

        # absurd values (1e308 connections) make matplotlib warn on stderr: the plot is
        # still drawn, and the tables show the values as they are
        with matplotlib.rc_context(_RC), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(result)

    return wrapper


def _svg(fig: Any, name: str, label: str) -> str:
    import matplotlib

    salt: Any = {"svg.hashsalt": f"conncap-{name}"}  # deterministic ids, distinct per plot
    with matplotlib.rc_context(salt):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    # scale with the page: drop the fixed pt size, keep the viewBox
    svg = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", svg, count=1)
    return svg.replace("<svg", f'<svg role="img" aria-label="{escape(label, quote=True)}"', 1)


def _style_axes(ax: Any) -> None:
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _short(text: str, limit: int = 32) -> str:
    """Labels inside a plot are cut, so that a long name cannot squeeze the axes away."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _step_lines(ax: Any, result: Result) -> None:
    """Each step as a shaded bar across the plot with its number at the top (names would
    overlap when steps are short); the numbers are named in the plot's title line."""
    steps = [st for st in result.steps if st.name]
    if not steps:
        return
    end = result.timeline[-1].t if result.timeline else None
    names = []
    for i, st in enumerate(steps, start=1):
        t0 = st.t_start
        t1 = st.t_end if st.t_end is not None else end
        if t1 is not None and t1 > t0:
            ax.axvspan(t0, t1, color="#e5e7eb" if i % 2 else "#f3f4f6", zorder=0, linewidth=0)
            mid = (t0 + t1) / 2
        else:
            mid = t0
        ax.axvline(t0, color="#6b7280", linewidth=0.8, linestyle=":", zorder=1)
        ax.annotate(
            str(i),
            (mid, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -3),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=8,
            fontweight="bold",
            color="#374151",
        )
        names.append(f"{i} {_short(st.name)}")
    ax.set_title("steps: " + " · ".join(names), fontsize=8, loc="left", color="#4b5563")


def _knees(result: Result) -> list[tuple[float, int, str]]:
    """(t, held, cause) where a ceiling was hit: per step when steps say so, else overall."""
    out: list[tuple[float, int, str]] = []
    timeline = result.timeline
    for st in result.steps:
        t0, t1 = st.t_start, st.t_end
        if not st.ceiling.reached or t1 is None:
            continue
        idx = [i for i, s in enumerate(timeline) if t0 <= s.t <= t1]
        if idx:
            knee = analysis.find_knee(timeline, start=idx[0], end=idx[-1] + 1)
            if knee:
                out.append((knee.t, knee.held, st.ceiling.cause or "?"))
            elif st.ceiling.count is not None:
                # no plateau to find (the step ended as it reached the ceiling): mark the
                # first sample that holds the ceiling's count, as the caption promises
                at = next((timeline[i] for i in idx if timeline[i].held >= st.ceiling.count), None)
                if at is not None:
                    out.append((at.t, st.ceiling.count, st.ceiling.cause or "?"))
    if not out and result.ceiling.reached:
        knee = analysis.find_knee(timeline)
        if knee:
            out.append((knee.t, knee.held, result.ceiling.cause or "?"))
    return out


@_plotting
def plot_held(result: Result) -> str | None:
    """Connections held over time, with predictions, step boundaries and ceilings marked."""
    ts, held = _series(result, "held")
    if len(ts) < 2:
        return None
    fig = _figure(3.6)
    ax = fig.add_subplot()
    _style_axes(ax)
    ax.plot(ts, held, color="#1f4e8c", linewidth=1.8, label="held")
    top = max(held) if held else 1.0
    pred = result.prediction
    p_count = pred.count
    notes: list[str] = []
    step_preds = [
        (float(st.prediction.count), st.t_start, st.t_end)
        for st in result.steps
        if st.prediction is not None and st.prediction.count is not None and st.t_end is not None
    ]
    if step_preds:  # each step has its own: draw those, not the run's over every step
        for i, (sp, t0, t1) in enumerate(step_preds):
            if sp <= _OFF_SCALE * max(top, 1.0):
                label = "predicted (per step)" if i == 0 else None
                ax.hlines(sp, t0, t1, colors="#b45309", linestyles="--", linewidth=1.3, label=label)
            else:
                notes.append(f"step prediction {sp:,.0f} off scale")
    elif p_count is not None:
        label = f"predicted {p_count:,.0f} ({_short(pred.cause or '?')})"
        if p_count <= _OFF_SCALE * max(top, 1.0):
            ax.axhline(p_count, color="#b45309", linestyle="--", linewidth=1.2, label=label)
        else:
            notes.append(label + ", off scale")
    requested = result.requested
    if requested <= _OFF_SCALE * max(top, 1.0):
        ax.axhline(requested, color="#9ca3af", linestyle="-.", linewidth=1.0, label="requested")
    _step_lines(ax, result)
    for i, (t, h, cause) in enumerate(_knees(result)):
        ax.axvline(t, color="#b42318", linewidth=1.1, linestyle="--", zorder=2)
        ax.plot([t], [h], "o", color="#b42318", label="ceiling" if i == 0 else None, zorder=3)
        ax.annotate(
            f"{h:,} ({_short(cause)})",
            (t, h),
            xytext=(6, -14),
            textcoords="offset points",
            fontsize=8,
            color="#b42318",
        )
    if notes:
        ax.set_title("; ".join(notes), fontsize=9, color="#b45309", loc="right")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("connections held")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_thousands())
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _svg(fig, "held", "connections held over time")


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:,.0f}")


@_plotting
def plot_rate(result: Result) -> str | None:
    """Connects per second over time."""
    ts, rate = _series(result, "rate")
    if len(ts) < 2:
        return None
    fig = _figure(2.6)
    ax = fig.add_subplot()
    _style_axes(ax)
    ax.plot(ts, rate, color="#0f766e", linewidth=1.4)
    ax.fill_between(ts, rate, color="#0f766e", alpha=0.12)
    _step_lines(ax, result)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("connects / s")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_thousands())
    return _svg(fig, "rate", "connect rate over time")


@_plotting
def plot_churn(result: Result) -> str | None:
    """Churn: new connections per second (above) and sockets in TIME_WAIT (below) over time,
    with the churn model's sustainable rate marked (``result.churn``). None without a churn
    object or with fewer than 2 samples that read TIME_WAIT."""
    churn = result.churn
    rows = [(x.t, x.rate, x.time_wait) for x in result.timeline if x.time_wait is not None]
    if not churn or len(rows) < 2:
        return None
    ts = [t for t, _, _ in rows]
    rate = [r for _, r, _ in rows]
    tw = [float(w or 0) for _, _, w in rows]
    predicted = churn.get("sustainable_rate_predicted")
    fig = _figure(4.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    for ax in (top, bottom):
        _style_axes(ax)
        _step_lines(ax, result)
    top.plot(ts, rate, color="#0f766e", linewidth=1.4, label="new connections / s (measured)")
    top.fill_between(ts, rate, color="#0f766e", alpha=0.12)
    if isinstance(predicted, int | float) and not isinstance(predicted, bool):
        peak = max(rate, default=0.0)
        label = f"sustainable (predicted): {predicted:,.1f}/s"
        if peak <= 0 or predicted <= _OFF_SCALE * peak:
            top.axhline(predicted, color="#b91c1c", linestyle="--", linewidth=1.2, label=label)
        else:
            top.plot([], [], color="#b91c1c", linestyle="--", label=f"{label} (off scale)")
    elif churn.get("predicted_unbounded") is True:
        top.plot([], [], color="#b91c1c", linestyle="--", label="sustainable: no port limit")
    top.set_ylabel("new connections / s")
    top.set_ylim(bottom=0)
    top.yaxis.set_major_formatter(_thousands())
    top.legend(loc="upper right", fontsize=8, frameon=False)
    bottom.plot(ts, tw, color="#7c3aed", linewidth=1.4)
    bottom.fill_between(ts, tw, color="#7c3aed", alpha=0.12)
    bottom.set_ylabel("sockets in TIME_WAIT")
    bottom.set_xlabel("time (s)")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_formatter(_thousands())
    return _svg(fig, "churn", "new connections per second and TIME_WAIT over time")


@_plotting
def plot_failures(result: Result) -> str | None:
    """Cumulative failures by cause over time, stacked."""
    rows = [(s.t, s.failures_by_cause) for s in result.timeline]
    causes: dict[str, float] = {}
    for _, by in rows:
        for cause, n in by.items():
            if n > 0:
                causes[cause] = max(causes.get(cause, 0.0), float(n))
    if len(rows) < 2 or not causes:
        return None
    order = sorted(causes, key=lambda c: -causes[c])
    ts = [t for t, _ in rows]
    ys = [[float(by.get(c, 0)) for _, by in rows] for c in order]
    fig = _figure(2.8)
    ax = fig.add_subplot()
    _style_axes(ax)
    colours = [_CAUSE_COLOURS.get(c, "#4b5563") for c in order]
    ax.stackplot(ts, ys, labels=[_short(c) for c in order], colors=colours, alpha=0.85)
    _step_lines(ax, result)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("failed attempts (cumulative)")
    ax.yaxis.set_major_formatter(_thousands())
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _svg(fig, "failures", "failures by cause over time")


def _quoted(
    result: Result, name: str, fit: analysis.MemoryFit
) -> tuple[float | None, float | None, str | None]:
    """(bytes per connection, r², reason) of a figure as the result's ``memory`` has them (the
    summary and the table quote the same), else as ``analysis.memory_fits`` judged them."""
    mem = result.memory
    if mem is None:
        return fit.bytes_per_conn, fit.r2, fit.reason
    if name == "kernel":
        return mem.kernel_bytes_per_conn, mem.kernel_r2, mem.kernel_reason
    return mem.user_bytes_per_conn, mem.user_r2, mem.user_reason


def _wrap(text: str, width: int = 60) -> str:
    return "\n".join(textwrap.wrap(text, width))


@_plotting
def plot_memory(result: Result) -> str | None:
    """Kernel and user memory against connections held (one panel each, as they differ by an
    order of magnitude): the samples of the fitted step's ramp, the slope line and its value
    and r² as the result's ``memory`` quotes them, or why the figure is not measured."""
    timeline = result.timeline
    fits = {k: f for k, f in analysis.memory_fits(timeline).items() if f.fit is not None}
    if not fits:
        return None
    titles = {
        "kernel": "kernel memory (slab caches + socket buffers)",
        "user": "user memory of the client and server processes",
    }
    if "user" in fits and len(fits["user"].keys) < 2:
        titles["user"] = "user memory"
    colours = {"kernel": "#7c3aed", "user": "#059669"}
    fig = _figure(3.4)
    axes = fig.subplots(1, len(fits), squeeze=False)[0]
    for ax, (name, mf) in zip(axes, fits.items(), strict=True):
        assert mf.fit is not None
        _style_axes(ax)
        xs: list[float] = []
        ys: list[float] = []
        for i in mf.indices:
            v = analysis.sample_value(timeline[i], mf.keys)
            if v is not None:
                xs.append(float(timeline[i].held))
                ys.append(v - mf.fit.intercept)
        span = max((abs(y) for y in ys), default=1.0)
        unit, scale = ("MiB", 1024.0**2) if span >= 4 * 1024**2 else ("KiB", 1024.0)
        ax.plot(xs, [y / scale for y in ys], ".", color=colours[name], markersize=3, alpha=0.5)
        value, r2, reason = _quoted(result, name, mf)
        lo, hi = min(xs, default=0.0), max(xs, default=0.0)
        if value is not None:
            ax.plot(
                [lo, hi],
                [value * lo / scale, value * hi / scale],
                color=colours[name],
                linewidth=1.6,
                label=f"{format_bytes(value)} per connection\n"
                + (f"(r² {r2:.3f}, {mf.fit.n} ramp samples)" if r2 is not None else ""),
            )
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        else:
            ax.text(
                0.02,
                0.98,
                _wrap(reason or "not measured"),
                transform=ax.transAxes,
                va="top",
                fontsize=7.5,
                color="#b91c1c",
            )
        ax.set_title(titles[name], fontsize=9, loc="left")
        ax.set_xlabel("connections held (one step's ramp)")
        ax.set_ylabel(f"{unit} above the fit's intercept")
        ax.xaxis.set_major_formatter(_thousands())
    return _svg(fig, "memory", "kernel and user memory against connections held")


@_plotting
def plot_nodes(result: Result) -> str | None:
    """``open --cluster``: each node's connections held over time (its own samples), its
    stop marked, and the cluster's total."""
    nodes = [n for n in result.nodes if len(n.timeline) >= 2]
    if not nodes:
        return None
    fig = _figure(3.6)
    ax = fig.add_subplot()
    _style_axes(ax)
    ts, held = _series(result, "held")
    if len(ts) >= 2:
        ax.plot(ts, held, color="#9ca3af", linewidth=1.2, linestyle="--", label="cluster total")
    first = result.first_stop
    for i, n in enumerate(nodes):
        colour = f"C{i % 10}"
        label = _short(f"{n.address}{' (lost)' if n.lost else ''}")
        ax.plot(
            [s.t for s in n.timeline],
            [s.held for s in n.timeline],
            color=colour,
            linewidth=1.6,
            label=label,
        )
        if n.stopped_at_s is not None and n.ceiling.reached:
            mark = "*" if first is not None and first.node_id == n.node_id else "o"
            ax.plot([n.stopped_at_s], [n.ceiling.count or n.held], mark, color=colour, zorder=3)
    _step_lines(ax, result)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("connections held")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_thousands())
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _svg(fig, "nodes", "connections held over time per node")


def plot_latency(result: Result) -> str | None:
    """Connect latency over time: p50 and p99 of each sample interval (log scale)."""
    t50, p50 = _series(result, "latency_p50_ms")
    t99, p99 = _series(result, "latency_p99_ms")
    if len(t50) < 2 and len(t99) < 2:
        return None
    fig = _figure(2.8)
    ax = fig.add_subplot()
    _style_axes(ax)
    ax.plot(t99, p99, color="#b45309", linewidth=1.3, marker=".", markersize=3, label="p99")
    ax.plot(t50, p50, color="#1f4e8c", linewidth=1.3, marker=".", markersize=3, label="p50")
    _step_lines(ax, result)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("connect latency (ms)")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _svg(fig, "latency", "connect latency over time")


def _rc_call(fn: Callable[[], str | None]) -> str | None:
    import matplotlib

    with matplotlib.rc_context(_RC), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


#: The two runs of a comparison: A solid blue, B dashed orange.
_RUN_STYLE = (("#1f4e8c", "-"), ("#c2410c", "--"))


def plot_compare(
    runs: Sequence[tuple[str, Result]], key: str, ylabel: str, *, log: bool = False
) -> str | None:
    """One timeline figure of every run overlaid (a comparison page); None when no run has
    two samples of it. ``key`` ``latency``: p50 and p99 of each."""

    def draw() -> str | None:
        keys = ("latency_p50_ms", "latency_p99_ms") if key == "latency" else (key,)
        series = [
            (label, k, _series(r, k)) for label, r in runs for k in keys if len(r.series(k)) >= 2
        ]
        if not series:
            return None
        fig = _figure(3.0)
        ax = fig.add_subplot()
        _style_axes(ax)
        labels = [label for label, _ in runs]
        for label, k, (ts, vs) in series:
            colour, style = _RUN_STYLE[labels.index(label) % 2]
            tail = " p99" if k.endswith("p99_ms") else " p50" if k.endswith("p50_ms") else ""
            width = 0.9 if tail == " p50" else 1.5
            ax.plot(
                ts, vs, color=colour, linestyle=style, linewidth=width, label=_short(label) + tail
            )
        for i, (label, r) in enumerate(runs):
            c = r.ceiling
            if key == "held" and c.reached and c.count is not None:
                colour, _ = _RUN_STYLE[i % 2]
                ax.axhline(
                    c.count,
                    color=colour,
                    linestyle=":",
                    linewidth=1.0,
                    label=f"{_short(label)} ceiling {c.count:,} ({_short(c.cause or '?')})",
                )
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(_thousands())
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", fontsize=8, frameon=False)
        return _svg(fig, f"compare-{key}", f"{ylabel} over time, runs overlaid")

    return _rc_call(draw)
