"""Show a doctor :class:`Report`: the ``conncap.doctor/1`` JSON document (docs/doctor.md)
and the terminal view (rich), which ``watch`` redraws in place."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from conncap.doctor.verdict import NearCeiling, Report
from conncap.result import JsonValue

if TYPE_CHECKING:
    from rich.console import RenderableType

SCHEMA = "conncap.doctor/1"

_TW_REUSE = {
    0: "off",
    1: "on (TIME_WAIT ports reused after 1 s)",
    2: "loopback only (the default)",
}


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _ceiling_json(c: NearCeiling) -> dict[str, JsonValue]:
    return {
        "cause": c.cause,
        "side": c.side,
        "subject": c.subject,
        "used": c.used,
        "limit": c.limit,
        "fill": _r(c.fill, 4),
        "headroom": c.headroom,
        "conditional": c.conditional,
        "evidence": c.evidence,
        "fix": c.fix.to_json(),
        **({"details": c.details} if c.details else {}),
    }


def to_json(report: Report, top: int = 10) -> dict[str, JsonValue]:
    """The ``conncap.doctor/1`` document (docs/doctor.md)."""
    rd = report.reading
    lim = rd.limits
    out: dict[str, JsonValue] = {
        "schema": SCHEMA,
        "os": rd.os,
        "netns": rd.netns,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rd.taken_at)),
        "read_s": {k: _r(v) for k, v in rd.read_s.items()},
        "verdict": {
            "near": bool([c for c in report.nearest if not c.conditional]),
            "threshold": report.near,
            "text": report.headline,
        },
        "ceilings": [_ceiling_json(c) for c in report.ceilings[:top]],
    }
    s = rd.sockets
    if s is not None:
        from conncap.doctor.sockdiag import TCP_STATES

        out["sockets"] = {
            "total": s.total,
            "ipv4": s.by_family.get(socket.AF_INET, 0),
            "ipv6": s.by_family.get(socket.AF_INET6, 0),
            "by_state": {TCP_STATES[i]: n for i, n in enumerate(s.by_state) if n},
            "read_s": _r(s.read_s),
        }
    else:
        out["sockets"] = None
    p = report.ports
    if p is not None:
        out["ports"] = {
            "range": list(p.port_range),
            "usable": p.usable,
            "listener_ports_in_range": p.listener_ports_in_range,
            "client_sockets": p.client_sockets,
            "server_sockets": p.server_sockets,
            "outside_range": p.outside_range,
            "pool_count": len(p.pools),
            "pools": [
                {
                    "family": f"ipv{pool.family}",
                    "src": pool.src,
                    "dst": pool.dst,
                    "dport": pool.dport,
                    "in_use": pool.in_use,
                    "sockets": pool.sockets,
                    "time_wait": pool.time_wait,
                    "held_by_listeners": pool.held_by_listeners,
                    "usable": pool.usable,
                    "fill": _r(pool.fill, 4),
                    **_trend_json(report, (pool.family, pool.src, pool.dst, pool.dport)),
                }
                for pool in p.pools[:top]
            ],
            "sources": [
                {
                    "family": f"ipv{src.family}",
                    "src": src.src,
                    "ports_in_use": src.ports,
                    "time_wait": src.time_wait,
                    "pools": src.pools,
                    "usable": src.usable,
                    "fill": _r(src.fill, 4),
                }
                for src in p.sources[:top]
            ],
        }
    else:
        out["ports"] = None
    out["time_wait"] = {
        "total": p.time_wait if p is not None else None,
        "seconds": 60,
        "tcp_tw_reuse": lim.tcp_tw_reuse.value,
        "tcp_max_tw_buckets": lim.tcp_max_tw_buckets.value,
        "pools": [
            {
                "src": t.pool.src,
                "dst": t.pool.dst,
                "dport": t.pool.dport,
                "time_wait": t.pool.time_wait,
                "churn_per_s": _r(t.churn_per_s),
                "sustainable_per_s": _r(t.sustainable_per_s),
                "tw_reuse_applies": t.reuse,
                "sustainable_with_reuse_per_s": _r(t.sustainable_with_reuse_per_s),
            }
            for t in report.time_wait[:top]
        ],
    }
    d = rd.descriptors
    out["descriptors"] = {
        "scope": d.scope if d else None,
        "scanned": d.scanned if d else None,
        "unknown": d.unknown if d else None,
        "namespace_unknown": d.outside_unknown if d else None,
        "processes": [
            {
                "pid": x.pid,
                "name": x.name,
                "fds": x.fds,
                "soft": x.soft,
                "hard": x.hard,
                "unlimited": x.unlimited,
                "fill": _r(x.fill, 4),
            }
            for x in (d.processes[:top] if d else ())
        ],
        "file_table": {"open": lim.files_open.value, "max": lim.files_max.value},
    }
    rates = report.rates
    out["listeners"] = {
        "interval_s": _r(rates.interval_s),
        "listen_overflows_per_s": _r(rates.listen_overflows),
        "listen_drops_per_s": _r(rates.listen_drops),
        "sockets": [
            {
                "addr": v.listener.addr,
                "port": v.listener.port,
                "accept_queue": v.listener.accept_queue,
                "backlog": v.listener.backlog,
                "fill": _r(v.fill, 4),
                "pid": v.owner.pid if v.owner else None,
                "process": v.owner.name if v.owner else None,
            }
            for v in report.listeners[:top]
        ],
    }
    out["conntrack"] = {
        "count": rd.conntrack.count,
        "max": rd.conntrack.max,
        "insert_failed_per_s": _r(rates.conntrack_insert_failed),
        "drop_per_s": _r(rates.conntrack_drop),
    }
    tcp_mem = lim.tcp_mem.value
    out["memory"] = {
        "tcp_mem_bytes": rd.tcp_mem_bytes,
        "tcp_mem": list(tcp_mem) if tcp_mem else None,
    }
    out["unknown"] = list(rd.unknown)
    return out


def _trend_json(report: Report, key: tuple[int, str, str, int]) -> dict[str, JsonValue]:
    t = report.trends.get(key)
    if t is None:
        return {}
    return {"per_s": _r(t.per_s), "seconds_to_full": _r(t.seconds_to_full, 1)}


# --- terminal ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.1%}"


def _n(x: int | None) -> str:
    return "unknown" if x is None else f"{x:,}"


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 120:
        return f"{s:,.0f} s"
    if s < 7200:
        return f"{s / 60:,.0f} min"
    return f"{s / 3600:,.1f} h"


def renderables(report: Report, top: int = 10) -> list[RenderableType]:
    """The terminal view, as rich renderables (``watch`` puts them in a Live display)."""
    from rich.table import Table
    from rich.text import Text

    rd = report.reading
    lim = rd.limits
    out: list[RenderableType] = []
    where = f"network namespace {rd.netns}" if rd.netns else "this host"
    took = rd.read_s.get("total", 0.0)
    head = f"conncap doctor: {where}, {time.strftime('%H:%M:%S', time.localtime(rd.taken_at))}"
    if rd.sockets is not None:
        head += f", {rd.sockets.total:,} sockets read in {_secs(rd.sockets.read_s)}"
    head += f" (whole reading {_secs(took)})"
    out.append(Text(head, style="bold"))
    style = "bold red" if any(not c.conditional for c in report.nearest) else "bold green"
    out.append(Text(report.headline, style=style))
    first = next((c for c in report.nearest if not c.conditional), None)
    if first is not None and first.fix.commands:
        out.append(Text(f"  raise {first.fix.knob}:", style="bold"))
        for cmd in first.fix.commands:
            out.append(Text(f"    {cmd}"))
        if first.fix.note:
            out.append(Text(f"  note: {first.fix.note}", style="dim"))

    out.append(Text("nearest ceilings (fill = used ÷ limit):", style="bold"))
    for c in report.ceilings[: min(top, 6)]:
        mark = ", only if bound" if c.conditional else ""
        line = Text(f"  {_pct(c.fill):>6}  ")
        line.append(f"{c.cause}", style="bold")
        line.append(f" ({c.side}{mark}) {c.subject}")
        out.append(line)
        out.append(Text(f"          {c.evidence}", style="dim"))
    p = report.ports
    if p is not None:
        lo, hi = p.port_range
        cap = (
            f"range {lo}-{hi}: {p.usable:,} usable; {len(p.pools):,} "
            f"pool{'' if len(p.pools) == 1 else 's'}, "
            f"{p.client_sockets:,} client sockets ({p.time_wait:,} TIME_WAIT), "
            f"{p.server_sockets:,} server-side, {p.outside_range:,} outside the range"
        )
        pt = Table(title="ephemeral ports per pool", title_justify="left", caption=cap)
        cols = ["pool", "in use", "fill", "TIME_WAIT", "churn/s", "sustainable/s"]
        if report.trends:
            cols += ["filling/s", "full in"]
        for col in cols:
            pt.add_column(col, justify="left" if col == "pool" else "right")
        pressures = {id(x.pool): x for x in report.time_wait}
        for pool in p.pools[:top]:
            tw = pressures.get(id(pool))
            row = [
                pool.label,
                f"{pool.in_use:,} of {pool.usable:,}",
                _pct(pool.fill),
                f"{pool.time_wait:,}",
                f"{tw.churn_per_s:,.1f}" if tw else "0",
                f"{tw.sustainable_per_s:,.1f}" if tw else "—",
            ]
            if report.trends:
                tr = report.trends.get((pool.family, pool.src, pool.dst, pool.dport))
                row += [
                    f"{tr.per_s:+,.1f}" if tr else "—",
                    _duration(tr.seconds_to_full) if tr else "—",
                ]
            pt.add_row(*row)
        out.append(pt)
        reuse = lim.tcp_tw_reuse.value
        reuse_text = _TW_REUSE.get(reuse, str(reuse)) if reuse is not None else "unknown"
        out.append(
            Text(
                f"TIME_WAIT: {p.time_wait:,} client sockets (60 s each); "
                f"net.ipv4.tcp_tw_reuse={reuse if reuse is not None else '?'}: {reuse_text}",
            )
        )

    d = rd.descriptors
    if d is not None:
        dt = Table(
            title=f"descriptors ({d.scope}: {d.scanned:,} processes, {d.unknown:,} unreadable)",
            title_justify="left",
        )
        for col in ("pid", "process", "open", "soft limit", "hard limit", "fill"):
            dt.add_column(col, justify="left" if col == "process" else "right")
        for x in d.processes[: min(top, 5)]:
            soft = "unlimited" if x.unlimited else _n(x.soft)
            hard = "unlimited" if x.hard is None and x.soft is not None else _n(x.hard)
            dt.add_row(str(x.pid), x.name, _n(x.fds), soft, hard, _pct(x.fill))
        out.append(dt)
    out.append(
        Text(
            f"system file table: {_n(lim.files_open.value)} of {_n(lim.files_max.value)} "
            "(fs.file-nr / fs.file-max)"
        )
    )

    if report.listeners:
        lt = Table(title="listeners (accept queue)", title_justify="left")
        for col in ("listener", "queue", "backlog", "fill", "process"):
            lt.add_column(col, justify="left" if col in ("listener", "process") else "right")
        for v in report.listeners[: min(top, 5)]:
            lst = v.listener
            addr = f"[{lst.addr}]" if ":" in lst.addr else lst.addr
            who = f"{v.owner.name} ({v.owner.pid})" if v.owner else ""
            lt.add_row(f"{addr}:{lst.port}", f"{lst.accept_queue:,}", f"{lst.backlog:,}",
                       _pct(v.fill), who)  # fmt: skip
        out.append(lt)
    r = report.rates
    if r.interval_s is not None:
        out.append(
            Text(
                f"ListenOverflows {_rate(r.listen_overflows)}, ListenDrops "
                f"{_rate(r.listen_drops)} over {r.interval_s:.1f} s"
            )
        )
    ct = rd.conntrack
    if ct.max is None:
        out.append(Text("conntrack: nf_conntrack not loaded"))
    else:
        out.append(
            Text(
                f"conntrack: {_n(ct.count)} of {_n(ct.max)} entries; insert_failed "
                f"{_rate(r.conntrack_insert_failed)}, drop {_rate(r.conntrack_drop)}"
            )
        )
    tcp_mem = lim.tcp_mem.value
    if rd.tcp_mem_bytes is not None and tcp_mem:
        out.append(
            Text(
                f"socket memory: {rd.tcp_mem_bytes / 1048576:,.1f} MiB of tcp_mem max "
                f"{tcp_mem[2] / 1048576:,.1f} MiB (pressure from {tcp_mem[1] / 1048576:,.1f} MiB)"
            )
        )
    for missing in rd.unknown:
        out.append(Text(f"unknown: {missing}", style="yellow"))
    return out


def _secs(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _rate(x: float | None) -> str:
    return "unknown" if x is None else f"{x:,.1f}/s"


def print_report(report: Report, top: int = 10) -> None:
    from rich.console import Console

    console = Console()
    for item in renderables(report, top):
        console.print(item)
