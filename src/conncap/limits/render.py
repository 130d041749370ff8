"""Show :class:`HostLimits`: the ``conncap.limits/1`` JSON document and the rich table.

Each fact is shown beside the ceiling it implies on its own ("28,232 connections per (source
IP, destination)"). These texts are deliberately simple and local; the ceiling model that
combines the facts for a plan is ``conncap.model``. The JSON is documented in
docs/limits-schema.md.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from conncap.limits._common import Fact, HostLimits, SockStat
from conncap.limits._facts import NO_LIMIT, is_no_limit
from conncap.model.implied import HUGE, count_text, fmt_bytes, implied
from conncap.result import JsonValue

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

SCHEMA = "conncap.limits/1"

#: Table groups, in order: (title, caption, fact names). Facts not listed go under "system".
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "client side",
        "one source IP to one destination ip:port: every connection spends a local port",
        (
            "port_range",
            "port_range_v6",
            "reserved_ports",
            "port_range_high",
            "max_user_port",
            "source_addresses",
            "extra.time_wait_now",
            "tcp_tw_reuse",
            "extra.tcp_tw_reuse_delay_ms",
            "extra.tcp_timestamps",
            "tcp_timed_wait_delay",
            "extra.tcp_msl_ms",
            "tcp_fin_timeout",
            "tcp_max_tw_buckets",
        ),
    ),
    (
        "server side",
        "one listening port takes every client; each connection costs a descriptor (in the "
        "client's process too) and memory",
        (
            "somaxconn",
            "tcp_max_syn_backlog",
            "nofile_soft",
            "nofile_hard",
            "nofile_can_raise",
            "nofile_max",
            "launchctl_maxfiles",
            "extra.fds_open",
            "nproc_soft",
            "nproc_hard",
            "cgroup_pids_max",
            "extra.maxproc",
            "extra.maxprocperuid",
        ),
    ),
    (
        "system",
        "shared by every process on the host",
        (
            "os_release",
            "windows_version",
            "cpu_count",
            "mem_total",
            "mem_available",
            "cgroup_mem_limit",
            "cgroup_mem_current",
            "files_max",
            "files_open",
            "tcp_num_connections",
            "extra.maxsockets",
            "tcp_mem",
            "tcp_rmem",
            "tcp_wmem",
            "conntrack_max",
            "conntrack_count",
            "sockstat",
            "extra.tcp6_inuse",
            "extra.page_size",
        ),
    ),
)

LABELS: dict[str, str] = {
    "os_release": "OS release",
    "windows_version": "Windows version",
    "cpu_count": "CPUs",
    "port_range": "ephemeral port range",
    "port_range_v6": "ephemeral port range, IPv6",
    "reserved_ports": "reserved / excluded ports",
    "port_range_high": "high port range",
    "max_user_port": "MaxUserPort",
    "tcp_timed_wait_delay": "TcpTimedWaitDelay",
    "tcp_num_connections": "TcpNumConnections",
    "tcp_tw_reuse": "tcp_tw_reuse",
    "tcp_max_tw_buckets": "tcp_max_tw_buckets",
    "tcp_fin_timeout": "tcp_fin_timeout",
    "source_addresses": "source addresses",
    "nofile_soft": "open files, soft",
    "nofile_hard": "open files, hard",
    "nofile_can_raise": "may raise the hard limit",
    "nofile_max": "open files, per-process ceiling",
    "launchctl_maxfiles": "launchctl maxfiles",
    "nproc_soft": "processes per user, soft",
    "nproc_hard": "processes per user, hard",
    "somaxconn": "somaxconn",
    "tcp_max_syn_backlog": "tcp_max_syn_backlog",
    "files_max": "open files, system-wide",
    "files_open": "open files now",
    "tcp_mem": "tcp_mem (min / pressure / max)",
    "tcp_rmem": "tcp_rmem (min / default / max)",
    "tcp_wmem": "tcp_wmem (min / default / max)",
    "conntrack_max": "conntrack table size",
    "conntrack_count": "conntrack entries now",
    "mem_total": "memory, total",
    "mem_available": "memory, available",
    "cgroup_mem_limit": "cgroup memory limit",
    "cgroup_mem_current": "cgroup memory used",
    "cgroup_pids_max": "cgroup pids limit",
    "sockstat": "TCP sockets now",
    "extra.page_size": "page size",
    "extra.fds_open": "descriptors open here",
    "extra.tcp6_inuse": "TCP6 sockets now",
    "extra.tcp_msl_ms": "TCP MSL",
    "extra.time_wait_now": "TIME_WAIT now",
    "extra.tcp_tw_reuse_delay_ms": "tcp_tw_reuse_delay",
    "extra.tcp_timestamps": "tcp_timestamps",
    "extra.maxsockets": "sockets, system-wide",
    "extra.maxproc": "processes, system-wide",
    "extra.maxprocperuid": "processes per user (kernel)",
}

_BYTES = {"mem_total", "mem_available", "cgroup_mem_limit", "cgroup_mem_current"}
_BYTE_TRIPLES = {"tcp_mem", "tcp_rmem", "tcp_wmem"}
_SECONDS = {"tcp_timed_wait_delay", "tcp_fin_timeout"}


# --- the JSON document ----------------------------------------------------------------------


def limits_to_json(h: HostLimits) -> dict[str, JsonValue]:
    """The ``conncap.limits/1`` document (docs/limits-schema.md); json.dumps-able as is."""
    facts: dict[str, JsonValue] = {}
    for name, fact in h.facts().items():
        doc = fact.to_json()
        if dataclasses.is_dataclass(fact.value) and not isinstance(fact.value, type):
            doc["value"] = dataclasses.asdict(fact.value)
        facts[name] = doc
    return {
        "schema": SCHEMA,
        "os": h.os,
        "facts": facts,
        "implied": {name: imp.to_json() for name, imp in implied(h).items()},
    }


# --- values in words ---------------------------------------------------------------------------


def format_value(name: str, fact: Fact[Any], page_size: int | None = None) -> str:
    """The value as the table shows it; ``unknown (reason)`` when it could not be read.

    ``page_size`` turns sockstat's buffer pages into bytes."""
    if fact.value is None:
        if is_no_limit(fact):
            return NO_LIMIT
        return f"unknown ({fact.reason})" if fact.applicable else "n/a"
    v = fact.value
    if name in ("port_range", "port_range_v6", "port_range_high"):
        return f"{v[0]}-{v[1]}"
    if name == "reserved_ports":
        return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in v) or "none"
    if name == "source_addresses":
        return ", ".join(v) or "none"
    if name == "launchctl_maxfiles":
        return " / ".join("unlimited" if x >= HUGE else count_text(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if name in _BYTES or name == "extra.page_size":
        return fmt_bytes(v)
    if name in _BYTE_TRIPLES:
        return " / ".join(fmt_bytes(x) for x in v)
    if name in _SECONDS:
        return f"{v} s"
    if name in ("extra.tcp_msl_ms", "extra.tcp_tw_reuse_delay_ms"):
        return f"{v} ms"
    if isinstance(v, SockStat):
        mem = (
            fmt_bytes(v.tcp_mem_pages * page_size)
            if page_size
            else f"{count_text(v.tcp_mem_pages)} pages"
        )
        return (
            f"in use {count_text(v.tcp_inuse)}, time-wait {count_text(v.tcp_tw)}, "
            f"orphan {count_text(v.tcp_orphan)}, "
            f"allocated {count_text(v.tcp_alloc)}, buffers {mem}"
        )
    if isinstance(v, int):
        return "no practical limit" if v >= HUGE else count_text(v)
    return str(v)


# --- the table ----------------------------------------------------------------------------------


def _grouped(h: HostLimits) -> list[tuple[str, str, list[str]]]:
    facts = h.facts()
    placed: set[str] = set()
    out: list[tuple[str, str, list[str]]] = []
    for title, caption, names in GROUPS:
        shown = [n for n in names if n in facts and facts[n].applicable]
        placed.update(names)
        out.append((title, caption, shown))
    rest = [n for n, f in facts.items() if n not in placed and f.applicable]
    out[-1][2].extend(rest)
    return out


def tables(h: HostLimits) -> list[RenderableType]:
    """One rich table per group: client side, server side, system."""
    from rich.table import Table
    from rich.text import Text

    imp = implied(h)
    page = h.extra.get("page_size")
    page_size = page.value if page is not None else None
    out: list[RenderableType] = []
    for title, caption, names in _grouped(h):
        table = Table(
            title=f"[bold]{title}[/]: {caption}",
            title_justify="left",
            expand=True,
        )
        table.add_column("limit", ratio=3, overflow="fold")
        table.add_column("value", ratio=2, overflow="fold")
        table.add_column("implies", ratio=5)
        for name in names:
            fact = h.facts()[name]
            label = Text(LABELS.get(name, name))
            if fact.source:
                label.append(f"\n{fact.source}", style="dim")
            value = format_value(name, fact, page_size)
            style = "yellow" if fact.value is None and not is_no_limit(fact) else ""
            text = imp[name].text if name in imp else ""
            if is_no_limit(fact) and not text:
                text = (fact.reason or "")[len(NO_LIMIT) + 2 :]
            table.add_row(label, Text(value, style=style), text)
        if not names:
            table.add_row("", Text("nothing known on this OS", style="dim"), "")
        out.append(table)
    return out


def print_limits(h: HostLimits, console: Console | None = None) -> None:
    """Print the three tables (client side, server side, system)."""
    from rich.console import Console

    con = console or Console()
    con.print(f"[bold]Connection limits of this host[/] ({h.os})")
    for table in tables(h):
        con.print(table)
