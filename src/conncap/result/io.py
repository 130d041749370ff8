"""The result document on disk: its one writer (atomic) and its one loader.

Written by ``conncap open``, ``conncap run`` and ``conncap scenario``; read by
``conncap report``. The fields are documented in docs/result-schema.md. The loader bounds
what it reads (size, nesting, integer length, only finite numbers), so a hostile or damaged
file gives one :class:`UsageError` line (exit 2), never a traceback or a hang.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from conncap.errors import UsageError
from conncap.result import codec, encode
from conncap.result.model import SCHEMA_V2, JsonValue, Result

#: The schema conncap writes (every writer builds a :class:`Result`).
SCHEMA = SCHEMA_V2

#: Keys every result document has (the loader checks them).
REQUIRED_KEYS = codec.REQUIRED_KEYS

#: The largest result :func:`load` reads. A long run's timeline is a few MB.
MAX_BYTES = 256 * 1024 * 1024


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> float:
    raise _NotFinite(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} is too large for a number")
    return value


def _non_finite_path(doc: JsonValue, path: str = "") -> str | None:
    """The key path of the first NaN or infinity in ``doc`` (None: there is none)."""
    stack: list[tuple[object, str]] = [(doc, path)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return at or "(the document)"
        if isinstance(value, Mapping):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(value))
    return None


def write_atomic(path: str | os.PathLike[str], doc: Result | Mapping[str, JsonValue]) -> Path:
    """Write a result (or, until every writer builds a :class:`Result`, its JSON) so that a
    reader never sees a half-written file. A NaN or infinity is refused (ValueError) before
    anything is written: JSON has no such numbers."""
    data = encode.to_json(doc) if isinstance(doc, Result) else doc
    bad = _non_finite_path(data)
    if bad is not None:
        raise ValueError(f"{path}: a result cannot hold a non-finite number (at {bad})")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a result is meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_json(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> JsonValue:
    """The JSON value in ``path``, bounded: at most ``max_bytes`` are read (checked before
    reading a regular file; a device or a pipe is read up to one byte more), nesting is
    limited by the parser's recursion limit, NaN and Infinity are refused."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{p}: is a directory, not a conncap result")
            if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
                raise UsageError(
                    f"{p}: {st.st_size:,} bytes, larger than a conncap result can be "
                    f"({max_bytes:,} bytes at most)"
                )
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{p}: is a directory, not a conncap result") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise UsageError(f"{p}: larger than a conncap result can be ({max_bytes:,} bytes at most)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{p}: not a conncap result (not UTF-8 text: {exc.reason})") from None
    try:
        value: JsonValue = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{p}: not a conncap result (invalid JSON at line {exc.lineno}: {exc.msg})"
        ) from None
    except _NotFinite as exc:
        raise UsageError(f"{p}: not a conncap result (invalid JSON: {exc})") from None
    except RecursionError:
        raise UsageError(f"{p}: not a conncap result (JSON nested too deeply)") from None
    except ValueError as exc:  # an integer longer than int() converts (4,300 digits)
        raise UsageError(f"{p}: not a conncap result (invalid JSON: {exc})") from None
    return value


def load_result(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Result:
    """Load and check a result document (/2, or /1 upgraded); any problem is a one-line
    :class:`UsageError`."""
    return codec.from_json(read_json(path, max_bytes=max_bytes), source=str(path))


def load(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> dict[str, JsonValue]:
    """:func:`load_result` as ``conncap.result/2`` JSON, for the readers that still take a
    dict (a /1 file comes back upgraded)."""
    return encode.to_json(load_result(path, max_bytes=max_bytes))
