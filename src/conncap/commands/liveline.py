"""One status line that ``serve`` and ``open`` redraw while they run: on a terminal a rich
``Live`` display (it clears what it drew, so a shorter line never leaves the tail of a
longer one), elsewhere a plain line every few seconds."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

#: Seconds between plain lines (logs, pipes).
PLAIN_EVERY = 5.0


def elapsed_text(seconds: float) -> str:
    """``12.3 s`` or ``4:05`` (minutes:seconds past a minute)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


class StatusLine:
    """``with StatusLine(console) as line: line.update(text)``; the last text stays."""

    def __init__(self, console: Console, *, plain_every: float = PLAIN_EVERY) -> None:
        self.console = console
        self.plain_every = plain_every
        self._live: Live | None = None
        self._last_plain = 0.0
        self._last = ""

    def __enter__(self) -> StatusLine:
        if self.console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=False)
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

    def update(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` (``force``: also as a plain line now, e.g. the final figures)."""
        self._last = text
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(text), refresh=force)
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_every:
            self._last_plain = now
            self.console.print(text, markup=False, highlight=False)
