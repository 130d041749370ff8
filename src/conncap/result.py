"""The result document ``conncap.result/1``: its one writer (atomic) and its one loader.

Written by ``conncap open``, ``conncap run`` and ``conncap scenario``; read by
``conncap report``. The fields are documented in docs/result-schema.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from conncap.errors import UsageError

SCHEMA = "conncap.result/1"

#: Keys every conncap.result/1 document has (the loader checks them).
REQUIRED_KEYS: tuple[str, ...] = (
    "schema",
    "requested",
    "established_peak",
    "held_at_end",
    "failures",
    "ceiling",
    "prediction",
    "timeline",
    "duration_s",
)


def write_atomic(path: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Write ``doc`` as JSON so that a reader never sees a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a result is meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a result document; any problem is a one-line :class:`UsageError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: cannot read it as text ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{p}: not a conncap result (invalid JSON at line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{p}: not a conncap result (a JSON {type(doc).__name__}, not an object)")
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise UsageError(f"{p}: not a conncap result (schema is {schema!r}, expected {SCHEMA!r})")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise UsageError(f"{p}: damaged conncap result (missing {', '.join(missing)})")
    if not isinstance(doc["timeline"], list) or not isinstance(doc["failures"], dict):
        raise UsageError(f"{p}: damaged conncap result (timeline or failures has the wrong type)")
    return doc
