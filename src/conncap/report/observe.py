"""The report's sections about what a run's observability records: connect latency (a
percentile table per step and the plot over time) and how to reproduce the run (the command
line, the version, the kernel and the limits that mattered)."""

from __future__ import annotations

from conncap import latency as lat
from conncap.report.markup import e, fmt
from conncap.result import Latency, Result

#: What the latency figures measure, in words (the same as docs/result-schema.md).
MEASURES = (
    "Connect latency is measured per connection by the client workers, from just before "
    "connect() to the epoll wake-up that reports the socket writable: the kernel's handshake "
    "plus the wait until the worker polls again (after each batch of up to 128 connects, which "
    "dominates on loopback). Time queued behind --rate is not included; failed connects are "
    "not counted. Resolution: " + lat.resolution_text() + "."
)

_HEAD = ("", "connections", "p50 (ms)", "p90 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)")


def _ms(v: float | None) -> str:
    return "—" if v is None else lat.format_ms(v)


def latency_row(name: str, x: Latency) -> str:
    cells = [
        f"<td>{e(name)}</td>",
        f'<td class="num">{e(fmt(x.count))}</td>',
        *(
            f'<td class="num">{e(_ms(v))}</td>'
            for v in (x.p50_ms, x.p90_ms, x.p99_ms, x.p999_ms, x.max_ms)
        ),
    ]
    return f"<tr>{''.join(cells)}</tr>"


def latency_table(rows: list[tuple[str, Latency]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in _HEAD)
    body = "".join(latency_row(name, x) for name, x in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def latency_html(result: Result, plot: str | None) -> str:
    """The percentile table (the whole run and each step) and the plot over time."""
    rows: list[tuple[str, Latency]] = []
    if result.latency is not None:
        rows.append(("whole run", result.latency))
    rows += [(f"step {s.name}", s.latency) for s in result.steps if s.latency is not None]
    if not rows:
        return (
            '<p class="na">Connect latency: none in this result (written by a conncap from '
            "before it was measured, or no connection was established).</p>"
        )
    out = latency_table(rows)
    if plot is not None:
        out += (
            f"<figure>{plot}<figcaption>p50 and p99 of the handshakes completed in each sample "
            "interval (log scale).</figcaption></figure>"
        )
    return out + f'<p class="meta">{e(MEASURES)}</p>'


#: Limits worth naming beside the command line: those that set connection ceilings.
MATTERING = (
    "port_range",
    "reserved_ports",
    "tcp_tw_reuse",
    "tcp_fin_timeout",
    "nofile_soft",
    "nofile_hard",
    "nofile_max",
    "files_max",
    "somaxconn",
    "tcp_max_syn_backlog",
    "tcp_mem",
    "conntrack_max",
    "mem_available",
    "cgroup_mem_limit",
    "max_user_port",
)


def _limits_that_mattered(result: Result) -> list[tuple[str, str]]:
    facts = (result.limits or {}).get("facts")
    if not isinstance(facts, dict):
        return []
    out = []
    for name in MATTERING:
        f = facts.get(name)
        if isinstance(f, dict) and f.get("value") is not None:
            out.append((name, fmt(f.get("value"))))
    return out


def reproduce_html(result: Result) -> str:
    """The command line, the version, the host's kernel and the limits that mattered."""
    host = result.host
    argv = " ".join(_quote(a) for a in result.argv) if result.argv else ""
    rows = [
        (
            "command line",
            f"<code>{e(argv)}</code>"
            if argv
            else '<span class="na">not recorded (written by an older conncap)</span>',
        ),
        ("conncap", e(result.conncap_version or "unknown")),
        (
            "kernel",
            e(
                " ".join(x for x in ((host.os or ""), (host.kernel or "")) if x)
                if host is not None
                else "unknown"
            ),
        ),
        ("CPUs", e(fmt(host.cpu_count)) if host is not None else "unknown"),
        ("started", e(result.started_at or "unknown")),
    ]
    rows += [(name, e(value)) for name, value in _limits_that_mattered(result)]
    body = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
