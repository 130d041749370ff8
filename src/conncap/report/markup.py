"""Small helpers the report's HTML modules share: escaping, cell formatting, and reading a
document's fields without trusting their types."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from typing import Any

from conncap.analysis import num


def e(value: Any) -> str:
    """HTML-escape anything (quotes too)."""
    return html.escape(str(value), quote=True)


def obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def int_or_none(value: Any) -> int | None:
    f = num(value)
    return int(f) if f is not None else None


def steps(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in as_list(doc.get("steps")) if isinstance(s, Mapping)]


def fmt(value: Any) -> str:
    """A JSON value as text for a table cell (not yet escaped)."""
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
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)
