"""The report's section "The server's side" (issue 9): what a server conncap does not own did
to the connections, as the client saw it (:class:`~conncap.result.ServerCloses`: its first
bytes, quoted; who closed and how; the lifetimes; ICMP; unacknowledged messages) and what was
read of its side on this host (:class:`~conncap.result.TargetSide`: the listener, its
processes' descriptors against their limit, the accept queue, firewall rules, where each fact
came from), with how sure the ceiling's reading is. Every string is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence

from conncap.analysis.closes import bucket_text, lifetime_summary, read_closes
from conncap.report.markup import e, fmt
from conncap.result import Result, ServerCloses, TargetSide

#: What ``certain`` and ``likely`` mean, in words (the result model's ``Certainty``).
CERTAINTY_TEXT = {
    "certain": "certain: the evidence names it (the client's own errno, the server's words, "
    "an ICMP code, a full queue or descriptor table read on this host)",
    "likely": "likely: the most likely reading of what the client saw (a timeout behind which "
    "a firewall, a full SYN queue or a lost route look the same)",
}


def has_server_side(result: Result) -> bool:
    """The result carries what the server did or its side (``open``/``run --target``)."""
    return result.closes is not None or result.target is not None


def _rows(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _table(headers: tuple[str, ...], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{e(fmt(v))}</td>'
            if isinstance(v, int) and not isinstance(v, bool)
            else f"<td>{e(fmt(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def said_html(c: ServerCloses) -> str:
    """The server's first bytes, quoted, with how many connections got them."""
    if not c.messages:
        return '<p class="na">The server sent nothing before closing (or closed nothing).</p>'
    rows = [
        ('"' + m.text + '"' if m.text else "(other messages)", m.seen, m.closed) for m in c.messages
    ]
    return "<h3>What the server said</h3>" + _table(
        ("first bytes (escaped, at most 256)", "connections", "then closed"), rows
    )


def closes_html(c: ServerCloses) -> str:
    """Who closed and how (FIN or RST), the lifetimes as a small table, ICMP, unacked."""
    parts: list[str] = []
    reading = read_closes(c)
    if c.closed:
        parts.append(
            f"<p>Closed by the server after the handshake: {e(fmt(c.closed))} "
            f"(FIN {e(fmt(c.fin))}, RST {e(fmt(c.rst))}); {e(lifetime_summary(c.lifetimes))}.</p>"
        )
    else:
        parts.append("<p>The server closed no connection after its handshake.</p>")
    if reading is not None:
        parts.append(f"<p>Reading ({e(reading.certainty)}): {e(reading.text)}.</p>")
    total = sum(c.lifetimes)
    if total:
        rows: list[tuple[object, ...]] = [
            (bucket_text(k), n, f"{n / total:.0%}") for k, n in enumerate(c.lifetimes) if n
        ]
        parts.append("<h3>Lifetimes</h3>" + _table(("lifetime", "closed", "share"), rows))
    parts.append(said_html(c))
    if c.icmp:
        rows = [(k, n) for k, n in sorted(c.icmp.items())]
        parts.append("<h3>ICMP errors behind failed connects</h3>" + _table(("ICMP", "n"), rows))
    if c.unacked:
        parts.append(
            f"<p>First messages never acknowledged (connections held at the client only): "
            f"{e(fmt(c.unacked))}.</p>"
        )
    return "".join(parts)


def target_html(t: TargetSide) -> str:
    """The listener, its processes' descriptors, the accept queue, rules, sources."""
    state = {True: "yes", False: "no", None: "unknown"}[t.listening]
    queue = (
        f"{fmt(t.accept_queue)} of {fmt(t.backlog)}" if t.accept_queue is not None else "not read"
    )
    rows = [
        ("target", e(f"{t.host}:{t.port}")),
        ("listening", e(state)),
        ("accept queue", e(queue)),
        ("established on the port", e(fmt(t.established))),
        ("SYN_RECV on the port", e(fmt(t.syn_recv))),
    ]
    out = "<h3>The target on this host</h3>" + _rows(rows)
    if t.processes:
        prows: list[tuple[object, ...]] = []
        for p in t.processes:
            fill = (
                f"{p.fds / p.nofile:.0%}"
                if p.fds is not None and p.nofile is not None and p.nofile > 0
                else "—"
            )
            prows.append((p.name, p.pid, p.fds, p.nofile, fill))
        out += "<h3>Listening processes</h3>" + _table(
            ("process", "pid", "descriptors", "limit (RLIMIT_NOFILE)", "fill"), prows
        )
    if t.rules:
        out += (
            "<h3>Firewall rules for the port</h3><ul>"
            + "".join(f"<li><code>{e(r)}</code></li>" for r in t.rules)
            + "</ul>"
        )
    else:
        out += "<p>No firewall rule drops or rejects the port.</p>"
    if t.sources:
        out += (
            "<p>Read on this host from: "
            + ", ".join(f"<code>{e(s)}</code>" for s in t.sources)
            + ".</p>"
        )
    if t.problems:
        out += '<p class="na">Could not read: ' + "; ".join(e(p) for p in t.problems) + ".</p>"
    return out


def server_html(result: Result) -> str:
    """The whole section: the ceiling's certainty, what the server did, its side."""
    parts: list[str] = []
    c = result.ceiling
    if c.reached and c.certainty is not None:
        parts.append(
            f"<p>The ceiling ({e(c.cause or '?')}, {e(c.side or '?')} side) is "
            f"<strong>{e(c.certainty)}</strong>: "
            f"{e(CERTAINTY_TEXT.get(c.certainty, c.certainty))}.</p>"
        )
    if result.closes is not None:
        parts.append(closes_html(result.closes))
    if result.target is not None:
        parts.append(target_html(result.target))
    else:
        parts.append(
            '<p class="na">The server\'s side was not read: the target is not on this host.</p>'
        )
    return "".join(parts)
