"""The summary in words, one owner for the prose: :func:`summary_lines` for a ``conncap run``
(the prediction, what each step did, the ceiling and its cause against the prediction, memory
per connection, what to change) and :func:`summarize` for any result document (the report's
fallback when a document carries no ``summary``). Pure: a function of the result document, so
the terminal, the JSON (``summary``) and the HTML report say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conncap import catalogue
from conncap.analysis import cause_of_name, num
from conncap.analysis.values import as_int, counts
from conncap.catalogue import Cause

_STOPPED = {
    "count": "it reached the requested count",
    "ceiling": "it reached a ceiling",
    "max-duration": "--max-duration ran out",
    "memory-guard": "of the memory guard (MemAvailable fell below the reserve)",
    "interrupted": "it was interrupted (Ctrl-C)",
    "error": "of an error",
}


#: Below this fit quality the memory slope is not extrapolated (a short ramp is noise).
MIN_R2 = 0.9


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


def _obj(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


_int = as_int


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _failures(counts: Mapping[str, Any]) -> str:
    items = sorted(
        ((k, n) for k, v in counts.items() if (n := _int(v)) is not None and n > 0),
        key=lambda kv: (-kv[1], kv[0]),
    )
    return ", ".join(f"{k} {n:,}" for k, n in items) or "none"


def step_line(
    step: Mapping[str, Any], number: int, previous: Mapping[str, Any] | None = None
) -> str:
    """One line per step: what it did and how that compares with its prediction.
    ``previous``: the step before, whose connections this one kept."""
    name = _str(step.get("title")) or _str(step.get("name")) or "?"
    ceiling = _obj(step.get("ceiling"))
    comparison = _obj(step.get("comparison"))
    peak = _int(step.get("established_peak"))
    before = _int(step.get("held_before")) or 0
    t0, t1 = num(step.get("t_start")), num(step.get("t_ramp_end") or step.get("t_end"))
    took = f" in {t1 - t0:.1f} s" if t0 is not None and t1 is not None else ""
    head = f"Step {number} ({name}): "
    if peak is None:
        return head + "did not run."
    more = f" ({peak - before:+,} on step {number - 1}'s {before:,})" if before else ""
    lifted = ""
    prev_ceiling = _obj(_obj(previous).get("ceiling"))
    if before and peak > before and prev_ceiling.get("reached") is True:
        what = "port ceiling" if prev_ceiling.get("cause") == "ephemeral-ports" else "ceiling"
        lifted = f"the {what} lifted: "
    text = f"{head}{lifted}held {peak:,}{more}{took}"
    if ceiling.get("reached") is True:
        errno = _str(ceiling.get("errno"))
        cause = _str(ceiling.get("cause")) or "unknown"
        evidence = _str(ceiling.get("evidence"))
        text += f", then stopped by {cause}" + (f" ({errno})" if errno else "")
        if evidence:
            text += f": {evidence}"
    comp = _str(comparison.get("text"))
    if comp:
        text += f". {comp[0].upper()}{comp[1:]}"
    return text + "."


def memory_lines(mem: Mapping[str, Any]) -> list[str]:
    """Memory per connection and the memory ceiling it implies."""
    kernel = num(mem.get("kernel_bytes_per_conn"))
    user = num(mem.get("user_bytes_per_conn"))
    if kernel is None and user is None:
        return ["Memory per connection: not measured (the ramp had too few samples)."]
    parts = []
    if kernel is not None:
        src = _str(mem.get("kernel_source"))
        where = {"slabinfo": "/proc/slabinfo", "meminfo": "Slab in /proc/meminfo"}.get(
            src or "", src or ""
        )
        parts.append(f"{format_bytes(kernel)} kernel" + (f" ({where})" if where else ""))
    if user is not None:
        parts.append(f"{format_bytes(user)} user (client + server processes)")
    per = (kernel or 0.0) + (user or 0.0)
    samples = _int(mem.get("samples"))
    r2 = num(mem.get("kernel_r2"))
    fit = f", slope over {samples} samples of the ramp" if samples else ""
    fit += f" (r² {r2:.3f})" if r2 is not None else ""
    both = (
        " (both ends: client and server sockets are on this host)" if mem.get("both_ends") else ""
    )
    total = f" = {format_bytes(per)}" if len(parts) > 1 else ""
    out = [f"Memory per connection{both}: {' + '.join(parts)}{total}{fit}."]
    avail = num(mem.get("mem_available"))
    ceiling = _int(mem.get("extrapolated_ceiling"))
    if r2 is not None and r2 < MIN_R2:
        out.append(
            f"Too few or too noisy samples (r² {r2:.2f}) to extrapolate a memory ceiling: "
            "a longer ramp (a larger --count) measures it."
        )
        return out
    if avail is not None and ceiling is not None and per > 0:
        out.append(
            f"{format_bytes(avail)} available: at {format_bytes(per)} per connection this host "
            f"holds about {about(ceiling)} before memory binds (WSAENOBUFS 10055 on Windows)."
        )
    guard = _int(mem.get("guard_bytes"))
    g_ceiling = _int(mem.get("guard_ceiling"))
    frac = num(mem.get("guard_fraction"))
    if guard is not None and frac is not None and g_ceiling is not None:
        out.append(
            f"conncap's memory guard keeps {frac:.0%} of MemAvailable ({format_bytes(guard)}): "
            f"it would stop a run at about {about(g_ceiling)} connections."
        )
    return out


def advice_lines(ceiling: Mapping[str, Any], os_name: str) -> list[str]:
    """How to raise the ceiling's limit on this OS, and the Windows equivalent."""
    cause = _str(ceiling.get("cause"))
    if ceiling.get("reached") is not True or cause is None:
        return []
    out = []
    knob = _str(ceiling.get("knob"))
    commands = [c for c in ceiling.get("advice") or [] if isinstance(c, str)]
    label = {"linux": "Linux", "darwin": "macOS", "windows": "Windows"}.get(os_name, os_name)
    if knob or commands:
        head = f"To raise it ({cause}) on {label}: {knob or 'see the catalogue'}"
        out.append(head + (f": {commands[0]}" if commands else "") + ".")
        if len(commands) > 1:
            out.append(f"  to keep it after a reboot: {commands[1]}")
    if cause == "ephemeral-ports":
        out.append(
            "  or change the 4-tuple: more source IPs (bind each socket to one) or more "
            "server ports, each pair is a fresh range of ports (step 2 shows it)."
        )
    windows = _str(ceiling.get("windows"))
    if windows:
        out.append(f"On Windows: {windows}.")
    return out


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """The whole summary, one sentence a line."""
    lines: list[str] = []
    topology = _obj(doc.get("topology"))
    where = [t for t in topology.get("lines") or [] if isinstance(t, str)]
    if where:
        lines.append(f"Isolated: {'; '.join(where)}.")
    steps = [s for s in doc.get("steps") or [] if isinstance(s, Mapping)]
    first_pred = _obj(steps[0].get("prediction")) if steps else _obj(doc.get("prediction"))
    pline = _str(first_pred.get("line"))
    if pline:
        lines.append(f"Prediction: {pline}.")
    single = _obj(first_pred.get("single_process"))
    plan = _obj(steps[0].get("plan")) if steps else {}
    workers = _int(plan.get("workers")) or 1
    if single.get("binds_first") is True and _int(single.get("count")) is not None and workers > 1:
        lines.append(
            f"A single client process would stop first, at {_int(single.get('count')):,} "
            f"(file-descriptors: {_str(single.get('detail'))}); step 1 used {workers} client "
            "processes so that the ports bind first."
        )
    for i, step in enumerate(steps, 1):
        lines.append(step_line(step, i, steps[i - 2] if i > 1 else None))

    requested = _int(doc.get("requested"))
    peak = _int(doc.get("established_peak"))
    stop = _str(doc.get("stop_reason")) or "?"
    duration = num(doc.get("duration_s"))
    took = f" after {duration:.1f} s" if duration is not None else ""
    run = (
        f"Run: {peak or 0:,} connections held at the peak of {requested or 0:,} requested{took}; "
        f"it ended because {_STOPPED.get(stop, stop)}."
    )
    lines.append(run)
    failures = _obj(doc.get("failures"))
    attempts = _int(doc.get("attempts"))
    tl = [s for s in doc.get("timeline") or [] if isinstance(s, Mapping)]
    server_bits = []
    for key, label in (
        ("listen_overflows", "ListenOverflows"),
        ("listen_drops", "ListenDrops"),
        ("syn_retrans", "SYN retransmits"),
    ):
        vals = [v for s in tl if (v := _int(s.get(key))) is not None]
        if vals:
            server_bits.append(f"{label} +{vals[-1] - vals[0]:,}")
    lines.append(
        f"Attempts {attempts or 0:,}; failed: {_failures(failures)}"
        + (f"; server side: {', '.join(server_bits)}" if server_bits else "")
        + "."
    )
    if _str(doc.get("error")):
        lines.append(f"Error: {doc['error']}.")
    lines.extend(memory_lines(_obj(doc.get("memory"))))
    host = _obj(doc.get("host"))
    lines.extend(advice_lines(_obj(doc.get("ceiling")), _str(host.get("os")) or "linux"))
    return lines


# --- any result document ---------------------------------------------------------------------


def _advice(cause: str, os_name: str, ceiling: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(knob, commands) for a cause: the catalogue's advice, else the result's own ceiling
    fields (a cause this catalogue does not know, from another version)."""
    try:
        adv = catalogue.advice(Cause(cause), os_name)
    except (ValueError, KeyError, LookupError):
        commands = ceiling.get("advice")
        return _str(ceiling.get("knob")), [
            c for c in (commands if isinstance(commands, list) else []) if isinstance(c, str)
        ]
    return adv.knob, [c for c in adv.commands if isinstance(c, str)]


def summarize(doc: Mapping[str, Any]) -> list[str]:
    """The summary in words: prediction, what happened, the ceiling and its cause, memory per
    connection, and what to change. Tolerates any missing field."""
    lines: list[str] = []
    pred = _obj(doc.get("prediction"))
    ceiling = _obj(doc.get("ceiling"))
    host = _obj(doc.get("host"))
    os_name = _str(host.get("os")) or "linux"

    p_count, p_cause, p_side = (
        _int(pred.get("count")),
        _str(pred.get("cause")),
        _str(pred.get("side")),
    )
    if p_count is not None:
        by = f" before {p_cause} binds" if p_cause else ""
        side = f" ({p_side} side)" if p_side else ""
        lines.append(f"Predicted: {p_count:,} connections{by}{side}.")

    requested, peak = _int(doc.get("requested")), _int(doc.get("established_peak"))
    at_end, attempts = _int(doc.get("held_at_end")), _int(doc.get("attempts"))
    duration, stop = num(doc.get("duration_s")), _str(doc.get("stop_reason"))
    if peak is not None:
        of = f" of {requested:,} requested" if requested is not None else ""
        end_part = f" ({at_end:,} at the end)" if at_end is not None else ""
        tries = f" after {attempts:,} attempts" if attempts is not None else ""
        took = f" in {duration:.1f} s" if duration is not None else ""
        why = f"; stopped by: {stop}" if stop else ""
        lines.append(f"Held {peak:,}{of} connections at the peak{end_part}{tries}{took}{why}.")

    failures = counts(doc.get("failures"))
    total = sum(failures.values())
    if total:
        top = sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        parts = [f"{name} {n:,} ({n / total:.0%}, {cause_of_name(name)})" for name, n in top]
        lines.append(f"{total:,} attempts failed: {', '.join(parts)}.")
    elif isinstance(doc.get("failures"), Mapping):
        lines.append("No attempt failed.")

    c_count, c_cause = _int(ceiling.get("count")), _str(ceiling.get("cause"))
    if ceiling.get("reached") is True and c_count is not None:
        errno_name = _str(ceiling.get("errno"))
        set_by = f", set by {c_cause}" if c_cause else ""
        errno_part = f" ({errno_name})" if errno_name else ""
        evidence = _str(ceiling.get("evidence"))
        line = f"Ceiling: {c_count:,} connections{set_by}{errno_part}"
        lines.append(line + (f": {evidence}." if evidence else "."))
        if p_count:
            off = (c_count - p_count) / p_count
            how_far = "exactly right" if abs(off) < 0.0005 else f"{off:+.1%} off"
            lines.append(f"The prediction was {p_count:,} ({how_far}).")
    elif ceiling:
        if requested is not None and peak is not None and peak >= requested:
            lines.append(f"No ceiling was reached: all {requested:,} requested connections held.")
        else:
            lines.append("No ceiling was reached.")

    steps = doc.get("steps")
    for step in steps if isinstance(steps, list) else []:
        st = _obj(step)
        name = _str(st.get("name")) or "?"
        title = _str(st.get("title"))
        s_peak = _int(st.get("established_peak"))
        s_ceiling, s_pred = _obj(st.get("ceiling")), _obj(st.get("prediction"))
        text = f"Step {name}" + (f" ({title})" if title else "")
        text += f": peak {s_peak:,}" if s_peak is not None else ": no peak recorded"
        if s_ceiling.get("reached") is True:
            text += f", ceiling set by {_str(s_ceiling.get('cause')) or 'an unknown cause'}"
        sp = _int(s_pred.get("count"))
        if sp is not None:
            text += f" (predicted {sp:,}" + (
                f", {s_pred['cause']})" if _str(s_pred.get("cause")) else ")"
            )
        lines.append(text + ".")

    lines.extend(_brief_memory_lines(_obj(doc.get("memory"))))

    cause = c_cause if ceiling.get("reached") is True else None
    if cause and cause != Cause.UNKNOWN:
        knob, commands = _advice(cause, os_name, ceiling)
        if knob or commands:
            how = f"To raise it: {knob}" if knob else "To raise it"
            lines.append(how + (": " + "; ".join(commands) if commands else "") + ".")
        windows = _str(ceiling.get("windows"))
        if windows:
            lines.append(f"On Windows: {windows}.")
    return lines


_SOURCES = {"slabinfo": "from /proc/slabinfo", "meminfo": "from Slab in /proc/meminfo"}


def _brief_memory_lines(mem: Mapping[str, Any]) -> list[str]:
    kernel = num(mem.get("kernel_bytes_per_conn"))
    user = num(mem.get("user_bytes_per_conn"))
    if kernel is None and user is None:
        return []
    out: list[str] = []
    parts = []
    if kernel is not None:
        src = _str(mem.get("kernel_source"))
        src = _SOURCES.get(src, src) if src else None
        parts.append(f"{format_bytes(kernel)} in the kernel" + (f" ({src})" if src else ""))
    if user is not None:
        parts.append(f"{format_bytes(user)} in user space")
    per_conn = (kernel or 0.0) + (user or 0.0)
    samples = _int(mem.get("samples"))
    over = f", the slope over {samples} samples of the ramp" if samples else ""
    total = f" = {format_bytes(per_conn)}" if len(parts) > 1 else ""
    out.append(f"Memory per connection: {' + '.join(parts)}{total}{over}.")
    available = num(mem.get("mem_available"))
    ceiling = _int(mem.get("extrapolated_ceiling"))
    if available is not None and ceiling is not None and per_conn > 0:
        out.append(
            f"{format_bytes(available)} available: at {format_bytes(per_conn)} per connection "
            f"this host holds about {about(ceiling)} before memory binds "
            "(WSAENOBUFS 10055 on Windows)."
        )
    return out
