"""The summary in words, one owner for the prose: :func:`summary_lines` for a ``conncap run``
(the prediction, what each step did, the ceiling and its cause against the prediction, memory
per connection, what to change) and :func:`summarize` for any result (the report's fallback
when a result carries no ``summary``). Pure: a function of the typed
:class:`~conncap.result.Result`, so the terminal, the JSON (``summary``) and the HTML report say
the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from conncap import catalogue
from conncap.analysis import cause_of_name, positive
from conncap.catalogue import Cause
from conncap.result import Ceiling, JsonValue, Memory, Result, Step
from conncap.result.model import PlanJson

_STOPPED = {
    "count": "it reached the requested count",
    "ceiling": "it reached a ceiling",
    "max-duration": "--max-duration ran out",
    "memory-guard": "of the memory guard (MemAvailable fell below the reserve)",
    "interrupted": "it was interrupted (Ctrl-C)",
    "error": "of an error",
}


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def about(n: float) -> str:
    """A rough count for prose: 1_430_000 -> '1.4 million', 28_232 -> '28,000', 3_977 -> '3,977'."""
    if abs(n) >= 1_000_000:
        return f"{n / 1_000_000:.1f} million"
    if abs(n) >= 10_000:
        digits = len(str(int(abs(n)))) - 2
        return f"{round(n, -digits):,.0f}"
    return f"{n:,.0f}"


def _failures(counts: Mapping[str, int]) -> str:
    items = sorted(positive(counts).items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {n:,}" for k, n in items) or "none"


def _plan_int(plan: PlanJson | None, key: str) -> int | None:
    """An integer of a free-form plan (None: absent or not an integer)."""
    v = (plan or {}).get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def step_line(step: Step, number: int, previous: Step | None = None) -> str:
    """One line per step: what it did and how that compares with its prediction.
    ``previous``: the step before, whose connections this one kept."""
    name = step.title or step.name or "?"
    ceiling = step.ceiling
    peak = step.established_peak
    before = step.held_before or 0
    t0, t1 = step.t_start, step.t_ramp_end or step.t_end
    took = f" in {t1 - t0:.1f} s" if t1 is not None else ""
    head = f"Step {number} ({name}): "
    more = f" ({peak - before:+,} on step {number - 1}'s {before:,})" if before else ""
    lifted = ""
    if before and peak > before and previous is not None and previous.ceiling.reached:
        cause = previous.ceiling.cause
        what = "port ceiling" if cause == "ephemeral-ports" else "ceiling"
        lifted = f"the {what} lifted: "
    text = f"{head}{lifted}held {peak:,}{more}{took}"
    if ceiling.reached:
        errno = ceiling.errno
        text += f", then stopped by {ceiling.cause or 'unknown'}" + (f" ({errno})" if errno else "")
        if ceiling.evidence:
            text += f": {ceiling.evidence}"
    comp = step.comparison.text if step.comparison is not None else ""
    if comp:
        text += f". {comp[0].upper()}{comp[1:]}"
    return text + "."


def _reason_lines(mem: Memory) -> list[str]:
    """A figure the data could not support, and why (``analysis.fit_memory``'s words)."""
    out = []
    for what, value, reason in (
        ("Kernel", mem.kernel_bytes_per_conn, mem.kernel_reason),
        ("User", mem.user_bytes_per_conn, mem.user_reason),
    ):
        if value is None and reason:
            out.append(f"{what} memory per connection {reason}.")
    return out


def memory_lines(mem: Memory) -> list[str]:
    """Memory per connection (each figure with the r² of its one fit, or why it is not
    measured) and the memory ceiling it implies."""
    kernel, user = mem.kernel_bytes_per_conn, mem.user_bytes_per_conn
    reasons = _reason_lines(mem)
    if kernel is None and user is None:
        return reasons or ["Memory per connection: not measured (the ramp had too few samples)."]
    parts = []
    if kernel is not None:
        src = mem.kernel_source
        where = {"slabinfo": "/proc/slabinfo", "meminfo": "Slab in /proc/meminfo"}.get(
            src or "", src or ""
        )
        parts.append(f"{format_bytes(kernel)} kernel" + (f" ({where})" if where else ""))
    if user is not None:
        parts.append(f"{format_bytes(user)} user (client + server processes)")
    per = (kernel or 0) + (user or 0)
    fit = f", slope over {mem.samples} samples of one step's ramp" if mem.samples else ""
    r2s = [
        f"{name}r² {r2:.3f}"
        for name, value, r2 in (
            ("kernel " if user is not None else "", kernel, mem.kernel_r2),
            ("user " if kernel is not None else "", user, mem.user_r2),
        )
        if value is not None and r2 is not None
    ]
    fit += f" ({', '.join(r2s)})" if r2s else ""
    both = " (both ends: client and server sockets are on this host)" if mem.both_ends else ""
    total = f" = {format_bytes(per)}" if len(parts) > 1 else ""
    out = [f"Memory per connection{both}: {' + '.join(parts)}{total}{fit}.", *reasons]
    avail, ceiling = mem.mem_available, mem.extrapolated_ceiling
    if avail is not None and ceiling is not None and per > 0:
        out.append(
            f"{format_bytes(avail)} available: at {format_bytes(per)} per connection this host "
            f"holds about {about(ceiling)} before memory binds (WSAENOBUFS 10055 on Windows)."
        )
    guard, g_ceiling, frac = mem.guard_bytes, mem.guard_ceiling, mem.guard_fraction
    if guard is not None and frac is not None and g_ceiling is not None:
        out.append(
            f"conncap's memory guard keeps {frac:.0%} of MemAvailable ({format_bytes(guard)}): "
            f"it would stop a run at about {about(g_ceiling)} connections."
        )
    return out


def persisting(commands: Sequence[str]) -> str | None:
    """The command that keeps the first command's sysctl after a reboot (it writes the same
    name to a file under /etc), or None: the catalogue's other commands are alternatives or
    further steps, not the first one made permanent."""
    if not commands:
        return None
    found = re.search(r"(?<![\w/.-])([a-z_]+(?:\.[a-z0-9_-]+)+)", commands[0])
    if found is None:
        return None
    return next((c for c in commands[1:] if "/etc/" in c and found.group(1) in c), None)


def advice_lines(ceiling: Ceiling, os_name: str) -> list[str]:
    """How to raise the ceiling's limit on this OS, and the Windows equivalent."""
    cause = ceiling.cause
    if not ceiling.reached or not cause:
        return []
    out = []
    knob, commands = ceiling.knob, ceiling.advice
    label = {"linux": "Linux", "darwin": "macOS", "windows": "Windows"}.get(os_name, os_name)
    if knob or commands:
        head = f"To raise it ({cause}) on {label}: {knob or 'see the catalogue'}"
        out.append(head + (f": {commands[0]}" if commands else "") + ".")
        kept = persisting(commands)
        if kept:
            out.append(f"  to keep it after a reboot: {kept}")
    if cause == "ephemeral-ports":
        out.append(
            "  or change the 4-tuple: more source IPs (bind each socket to one) or more "
            "server ports, each pair is a fresh range of ports (step 2 shows it)."
        )
    if ceiling.windows:
        out.append(f"On Windows: {ceiling.windows}.")
    return out


def server_side_lines(result: Result) -> list[str]:
    """What a server conncap does not own did and what was read of its side (``open`` and
    ``run --target``): who closed and how, its words (quoted), the listening process's
    descriptors, the accept queue, firewall rules, where it was read, how sure the ceiling
    is. Empty when the result has neither ``closes`` nor ``target``."""
    from conncap.analysis.closes import lifetime_summary, quoted

    out: list[str] = []
    c = result.closes
    if c is not None:
        if c.closed:
            out.append(
                f"Closed by the server: {c.closed:,} (FIN {c.fin:,}, RST {c.rst:,}); "
                f"lifetimes: {lifetime_summary(c.lifetimes)}."
            )
        msg = quoted(c.messages) or next((m for m in c.messages if m.text), None)
        if msg is not None:
            out.append(
                f'The server said "{msg.text}" to {msg.seen:,} connections '
                f"({msg.closed:,} then closed)."
            )
        if c.icmp:
            out.append("ICMP errors: " + ", ".join(f"{k} ×{n:,}" for k, n in c.icmp.items()) + ".")
        if c.unacked:
            out.append(f"Not acknowledged by the server (held at the client only): {c.unacked:,}.")
    t = result.target
    if t is not None:
        state = {True: "listening", False: "not listening", None: "listening unknown"}[t.listening]
        bits = [state]
        for p in t.processes[:3]:
            fds = f"{p.fds:,}" if p.fds is not None else "?"
            lim = f"{p.nofile:,}" if p.nofile is not None else "?"
            bits.append(f"{p.name} pid {p.pid} ({fds} of {lim} descriptors)")
        if t.accept_queue is not None:
            bits.append(f"accept queue {t.accept_queue:,} of {fmt_int(t.backlog)}")
        if t.rules:
            bits.append(
                f"firewall: {t.rules[0]}" + (f" (+{len(t.rules) - 1})" if len(t.rules) > 1 else "")
            )
        src = f"; read from {', '.join(t.sources)}" if t.sources else ""
        out.append(f"Server side ({t.host}:{t.port}, on this host): {', '.join(bits)}{src}.")
    ceiling = result.ceiling
    if out and ceiling.reached and ceiling.certainty is not None:
        out.append(f"The ceiling's reading is {ceiling.certainty}.")
    return out


def fmt_int(n: int | None) -> str:
    return f"{n:,}" if n is not None else "?"


def _os_name(result: Result) -> str:
    return (result.host.os if result.host is not None else None) or "linux"


def headline(result: Result) -> str:
    """The answer in one line, before any detail: the ceiling, its cause and side and the knob
    that raises it, or that there was none ("No ceiling: reached the requested 100,000")."""
    c = result.ceiling
    if c.reached:
        cause = (c.cause or "unknown cause").replace("-", " ")
        side = f" ({c.side})" if c.side and c.side != "unknown" else ""
        knob = f" — raise with {c.knob}" if c.knob else ""
        count = f"{c.count:,} connections — " if c.count is not None else ""
        return f"Ceiling: {count}{cause}{side}{knob}"
    requested, peak = result.requested, result.established_peak
    if requested and peak >= requested:
        return f"No ceiling: reached the requested {requested:,}"
    stop = result.stop_reason or "?"
    return (
        f"No ceiling reached: held {peak:,} of the requested {requested:,}; "
        f"it ended because {_STOPPED.get(stop, stop)}"
    )


def is_headline(line: str) -> bool:
    """Whether a summary line is :func:`headline`'s (documents before it have none)."""
    return line.startswith(("Ceiling: ", "No ceiling: ", "No ceiling reached: "))


def summary_lines(result: Result) -> list[str]:
    """The whole summary, one sentence a line, after the :func:`headline`."""
    lines: list[str] = [headline(result)]
    where = (result.topology or {}).get("lines")
    isolated = [t for t in where if isinstance(t, str)] if isinstance(where, list) else []
    if isolated:
        lines.append(f"Isolated: {'; '.join(isolated)}.")
    steps = result.steps
    first_pred = steps[0].prediction if steps else result.prediction
    if first_pred is not None and first_pred.line:
        lines.append(f"Prediction: {first_pred.line}.")
    single = first_pred.single_process if first_pred is not None else None
    workers = (_plan_int(steps[0].plan, "workers") if steps else None) or 1
    if single is not None and single.binds_first and workers > 1:
        lines.append(
            f"A single client process would stop first, at {single.count:,} "
            f"(file-descriptors: {single.detail}); step 1 used {workers} client "
            "processes so that the ports bind first."
        )
    for i, step in enumerate(steps, 1):
        lines.append(step_line(step, i, steps[i - 2] if i > 1 else None))

    if result.churn and result.command == "run":
        lines.append(churn_line(result.churn))
    stop = result.stop_reason or "?"
    lines.append(
        f"Run: {result.established_peak:,} connections held at the peak of "
        f"{result.requested:,} requested after {result.duration_s:.1f} s; "
        f"it ended because {_STOPPED.get(stop, stop)}."
    )
    server_bits = []
    for key, label in (
        ("listen_overflows", "ListenOverflows"),
        ("listen_drops", "ListenDrops"),
        ("syn_retrans", "SYN retransmits"),
    ):
        vals = [int(v) for s in result.timeline if (v := s.figure(key)) is not None]
        if vals:
            server_bits.append(f"{label} +{vals[-1] - vals[0]:,}")
    lines.append(
        f"Attempts {result.attempts or 0:,}; failed: {_failures(result.failures)}"
        + (f"; server side: {', '.join(server_bits)}" if server_bits else "")
        + "."
    )
    if result.error:
        lines.append(f"Error: {result.error}.")
    lat = result.latency
    if lat is not None and lat.p50_ms is not None and lat.p99_ms is not None:
        from conncap.latency import format_ms

        lines.append(
            f"Connect latency (connect() to writable, {lat.count:,} connections): p50 "
            f"{format_ms(lat.p50_ms)} ms, p99 {format_ms(lat.p99_ms)} ms"
            + (f", max {format_ms(lat.max_ms)} ms" if lat.max_ms is not None else "")
            + "."
        )
    lines.extend(server_side_lines(result))
    lines.extend(memory_lines(result.memory or Memory()))
    lines.extend(advice_lines(result.ceiling, _os_name(result)))
    return lines


# --- any result ----------------------------------------------------------------------------------


def _advice(cause: str, os_name: str, ceiling: Ceiling) -> tuple[str | None, list[str]]:
    """(knob, commands) for a cause: the catalogue's advice, else the result's own ceiling
    fields (a cause this catalogue does not know, from another version)."""
    try:
        adv = catalogue.advice(Cause(cause), os_name)
    except (ValueError, KeyError, LookupError):
        return ceiling.knob, list(ceiling.advice)
    return adv.knob, [c for c in adv.commands if isinstance(c, str)]


def summarize(result: Result) -> list[str]:
    """The summary in words of any result: prediction, what happened, the ceiling and its
    cause, memory per connection, and what to change (the report's, when a result carries no
    ``summary``)."""
    lines: list[str] = []
    pred, ceiling = result.prediction, result.ceiling
    os_name = _os_name(result)

    p_count, p_cause, p_side = pred.count, pred.cause, pred.side
    if p_count is not None:
        by = f" before {p_cause} binds" if p_cause else ""
        side = f" ({p_side} side)" if p_side else ""
        lines.append(f"Predicted: {p_count:,} connections{by}{side}.")

    requested, peak = result.requested, result.established_peak
    tries = f" after {result.attempts:,} attempts" if result.attempts is not None else ""
    why = f"; stopped by: {result.stop_reason}" if result.stop_reason else ""
    lines.append(
        f"Held {peak:,} of {requested:,} requested connections at the peak "
        f"({result.held_at_end:,} at the end){tries} in {result.duration_s:.1f} s{why}."
    )

    failures = positive(result.failures)
    total = sum(failures.values())
    if total:
        top = sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        parts = [f"{name} {n:,} ({n / total:.0%}, {cause_of_name(name)})" for name, n in top]
        lines.append(f"{total:,} attempts failed: {', '.join(parts)}.")
    else:
        lines.append("No attempt failed.")

    c_count, c_cause = ceiling.count, ceiling.cause
    if ceiling.reached and c_count is not None:
        set_by = f", set by {c_cause}" if c_cause else ""
        errno_part = f" ({ceiling.errno})" if ceiling.errno else ""
        line = f"Ceiling: {c_count:,} connections{set_by}{errno_part}"
        lines.append(line + (f": {ceiling.evidence}." if ceiling.evidence else "."))
        if p_count:
            off = (c_count - p_count) / p_count
            how_far = "exactly right" if abs(off) < 0.0005 else f"{off:+.1%} off"
            lines.append(f"The prediction was {p_count:,} ({how_far}).")
    elif peak >= requested:
        lines.append(f"No ceiling was reached: all {requested:,} requested connections held.")
    else:
        lines.append("No ceiling was reached.")

    for st in result.steps:
        text = f"Step {st.name or '?'}" + (f" ({st.title})" if st.title else "")
        text += f": peak {st.established_peak:,}"
        if st.ceiling.reached:
            text += f", ceiling set by {st.ceiling.cause or 'an unknown cause'}"
        sp = st.prediction
        if sp is not None and sp.count is not None:
            text += f" (predicted {sp.count:,}" + (f", {sp.cause})" if sp.cause else ")")
        lines.append(text + ".")

    lines.extend(server_side_lines(result))
    lines.extend(_brief_memory_lines(result.memory or Memory()))

    cause = c_cause if ceiling.reached else None
    if cause and cause != Cause.UNKNOWN:
        knob, commands = _advice(cause, os_name, ceiling)
        if knob or commands:
            how = f"To raise it: {knob}" if knob else "To raise it"
            lines.append(how + (": " + "; ".join(commands) if commands else "") + ".")
        if ceiling.windows:
            lines.append(f"On Windows: {ceiling.windows}.")
    return lines


_SOURCES = {"slabinfo": "from /proc/slabinfo", "meminfo": "from Slab in /proc/meminfo"}


def _brief_memory_lines(mem: Memory) -> list[str]:
    kernel, user = mem.kernel_bytes_per_conn, mem.user_bytes_per_conn
    if kernel is None and user is None:
        return _reason_lines(mem)
    out: list[str] = []
    parts = []
    if kernel is not None:
        src = mem.kernel_source
        src = _SOURCES.get(src, src) if src else None
        parts.append(f"{format_bytes(kernel)} in the kernel" + (f" ({src})" if src else ""))
    if user is not None:
        parts.append(f"{format_bytes(user)} in user space")
    per_conn = (kernel or 0) + (user or 0)
    over = f", the slope over {mem.samples} samples of the ramp" if mem.samples else ""
    total = f" = {format_bytes(per_conn)}" if len(parts) > 1 else ""
    out.append(f"Memory per connection: {' + '.join(parts)}{total}{over}.")
    out.extend(_reason_lines(mem))
    available, ceiling = mem.mem_available, mem.extrapolated_ceiling
    if available is not None and ceiling is not None and per_conn > 0:
        out.append(
            f"{format_bytes(available)} available: at {format_bytes(per_conn)} per connection "
            f"this host holds about {about(ceiling)} before memory binds "
            "(WSAENOBUFS 10055 on Windows)."
        )
    return out


def churn_line(churn: Mapping[str, JsonValue]) -> str:
    """``run --churn``'s step in one sentence: what it opened, TIME_WAIT, what stopped it,
    and the sustainable rate, predicted against measured."""

    def rate(v: JsonValue) -> str:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        return f"{v:,.1f}/s" if ok else "unknown"

    pred = (
        "no port limit"
        if churn.get("predicted_unbounded") is True
        else rate(churn.get("sustainable_rate_predicted"))
    )
    stopped = churn.get("stopped_by")
    end = f"ports ran out ({stopped})" if stopped else "no failure"
    return (
        f"Churn: {churn.get('opened')} opened at {rate(churn.get('rate'))} with FIN closes, "
        f"TIME_WAIT peak {churn.get('time_wait_peak')}, {end}; sustainable rate predicted "
        f"{pred}, measured {rate(churn.get('sustainable_rate_measured'))} "
        f"({churn.get('sustainable_rate_measured_basis')})."
    )
