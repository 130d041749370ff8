"""Small helpers the report's HTML modules share: escaping and cell formatting."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping


def e(value: object) -> str:
    """HTML-escape anything (quotes too)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A value (typed or JSON) as text for a table cell (not yet escaped)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value) if value else "(none)"
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, ensure_ascii=False, default=str)
    return str(value)
