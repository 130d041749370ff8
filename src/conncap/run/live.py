"""What the terminal shows while ``conncap run`` works: a rich Live panel on a terminal (step,
held, rate, failures by cause, kernel memory), plain lines otherwise, nothing with ``--quiet``.
Events (the prediction, a step's start and outcome) are printed above the panel and stay.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conncap.latency import format_ms
from conncap.report.summary import format_bytes
from conncap.run.config import Progress

#: Seconds between two plain progress lines when stdout is not a terminal.
PLAIN_EVERY = 5.0


def _failures(p: Progress) -> str:
    items = sorted(((k, v) for k, v in p.failures_by_cause.items() if v), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:,}" for k, v in items) or "none"


def _kernel(p: Progress) -> str:
    if p.kernel_bytes is None:
        return "not measured"
    text = format_bytes(p.kernel_bytes)
    if p.kernel_bytes_start is not None:
        text += f" ({format_bytes(p.kernel_bytes - p.kernel_bytes_start)} more than at the start)"
    return text


def _latency(p: Progress) -> str:
    if p.latency_p50_ms is None or p.latency_p99_ms is None:
        return "none completed"
    return f"p50 {format_ms(p.latency_p50_ms)} ms, p99 {format_ms(p.latency_p99_ms)} ms"


def render(p: Progress) -> Table:
    """The live panel for one progress snapshot."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("step", f"{p.step_index + 1}/{p.step_count} {p.step_title} ({p.phase})")
    share = p.held / p.count if p.count else 0.0
    table.add_row(
        "held", f"{p.held:,} of {p.count:,} ({share:.0%}); server holds {p.server_held:,}"
    )
    table.add_row("rate", f"{p.rate:,.0f} connections/s")
    if p.latency_p50_ms is not None and p.latency_p99_ms is not None:
        table.add_row("connect latency", _latency(p))
    table.add_row("failures", _failures(p))
    table.add_row("kernel memory", _kernel(p))
    if p.mem_available is not None:
        guard = f", guard at {format_bytes(p.guard_bytes)}" if p.guard_bytes else ""
        table.add_row("available", f"{format_bytes(p.mem_available)}{guard}")
    table.add_row("time", f"{p.elapsed:.1f} s of at most {p.max_duration:.0f} s")
    return table


class LiveView:
    """An :class:`~conncap.run.experiment.Observer` for the terminal.

    ``mode``: "live" (rich Live, refreshed 4 times a second), "plain" (a line every
    :data:`PLAIN_EVERY` seconds and every event) or "quiet" (nothing).
    """

    def __init__(self, console: Console, mode: str) -> None:
        if mode not in ("live", "plain", "quiet"):
            raise ValueError(f"unknown live view mode {mode!r}")
        self.console = console
        self.mode = mode
        self._live: Live | None = None
        self._last: Progress | None = None
        self._last_plain = 0.0

    def __enter__(self) -> LiveView:
        if self.mode == "live":
            self._live = Live(
                Group(Text("starting…")),
                console=self.console,
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def event(self, text: str) -> None:
        if self.mode == "quiet":
            return
        self.console.print(text, markup=False, highlight=False)

    def progress(self, p: Progress) -> None:
        self._last = p
        if self._live is not None:
            self._live.update(render(p))
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last_plain >= PLAIN_EVERY:
                self._last_plain = now
                self.console.print(plain_line(p), markup=False, highlight=False)


def plain_line(p: Progress) -> str:
    """The panel as one line (for logs and pipes)."""
    return (
        f"[{p.elapsed:5.1f} s] step {p.step_index + 1}/{p.step_count} {p.step_name}: "
        f"held {p.held:,}/{p.count:,}, {p.rate:,.0f}/s, connect {_latency(p)}, "
        f"failures {_failures(p)}, kernel {_kernel(p)}"
    )


def print_summary(console: Console, lines: list[str], **_: Any) -> None:
    """The summary after the run: a heading and one line per sentence."""
    console.print()
    console.print("Summary", style="bold")
    for line in lines:
        style = "green" if "✓" in line else None
        console.print(line, markup=False, highlight=False, style=style)
