"""The model written as ``conncap.result/2`` JSON: :func:`to_json`, :func:`part_to_json`.

Every field a class requires and the optional ones that do not hold their default (an absent
key reads back as the default, :mod:`conncap.result.codec`); ``from_json(to_json(r)) == r``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from conncap.result import model as m
from conncap.result.model import JsonValue


def _encode(value: object) -> JsonValue:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_object(value)
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} in a result")


def _encode_object(obj: object) -> dict[str, JsonValue]:
    """Every field without a default, and the others unless they hold their default (an
    absent key reads back as the default); a sample's ``extra`` keys go beside its typed
    ones."""
    out: dict[str, JsonValue] = {}
    extra: Mapping[str, JsonValue] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(obj, m.Sample) and f.name == "extra":
            extra = value
            continue
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        out[f.name] = _encode(value)
    for k, v in extra.items():
        out.setdefault(k, _encode(v))
    return out


def part_to_json(part: object) -> JsonValue:
    """One part of the model (a :class:`ServerFigures`, a :class:`Sample`, ...) as the result
    writes it, for a document of another schema that embeds it (``conncap.serve/1``)."""
    return _encode(part)


def to_json(result: m.Result) -> dict[str, JsonValue]:
    """The ``conncap.result/2`` document of ``result`` (``json.dump`` it)."""
    doc = _encode_object(result)
    doc.pop("schema", None)
    return {"schema": result.schema, **doc}  # always, and first
