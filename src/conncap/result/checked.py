"""A JSON value read one typed field at a time, each problem named by its key path.

:class:`Obj` wraps a JSON object at a key path (``steps[1].ceiling``); each of its readers
(``int_``, ``str_or_none``, ``objs``, ...) checks one key's type and raises :class:`Damaged`
with the path and what was found, which :func:`conncap.result.codec.from_json` turns into its
one error line. :func:`json_value` checks a free-form part (string keys, finite numbers, not
nested deeper than :data:`MAX_DEPTH`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import TypeVar

from conncap.result.model import JsonObject, JsonValue

#: How deep the free-form parts (plan, limits, topology, ...) may nest.
MAX_DEPTH = 64

T = TypeVar("T")


class Damaged(Exception):
    """A problem at a key path; :func:`from_json` turns it into the UsageError line."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)


def show(value: object) -> str:
    """A value as a person reads it in an error line (short)."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: object) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and math.isfinite(v)
    )


def json_value(value: object, path: str, depth: int = 0) -> JsonValue:
    """``value`` checked as JSON (string keys, finite numbers, not too deep)."""
    if depth > MAX_DEPTH:
        raise Damaged(path, f"nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Damaged(path, f"expected a finite number, got {value}")
        return value
    if isinstance(value, list | tuple):
        return [json_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Damaged(path, f"expected string keys, got {show(k)}")
            out[k] = json_value(v, _join(path, k), depth + 1)
        return out
    raise Damaged(path, f"expected a JSON value, got a {type(value).__name__}")


def json_object(value: Mapping[str, object], what: str = "object") -> JsonObject:
    """A writer's free-form part (a plan's or the limits' JSON) checked as a JSON object; a
    value that is not JSON is a bug in the writer (ValueError)."""
    try:
        checked = json_value(value, what)
    except Damaged as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    assert isinstance(checked, Mapping)
    return checked


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Obj:
    """A JSON object at a key path, read one typed field at a time."""

    __slots__ = ("_d", "_path")

    def __init__(self, d: object, path: str) -> None:
        if not isinstance(d, Mapping):
            raise Damaged(path, f"expected an object, got {show(d)}")
        self._d: Mapping[str, object] = d
        self._path = path

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(k for k in self._d if isinstance(k, str))

    def at(self, key: str) -> str:
        return _join(self._path, key)

    def _get(self, key: str, required: bool) -> object:
        if key not in self._d:
            if required:
                raise Damaged(self.at(key), "missing")
            return None
        return self._d[key]

    def _typed(
        self, key: str, ok: Callable[[object], bool], what: str, required: bool, null: bool
    ) -> object:
        v = self._get(key, required)
        if v is None and (null or not required):
            return None
        if not ok(v):
            raise Damaged(self.at(key), f"expected {what}, got {show(v)}")
        return v

    # Each reader: ``key`` must hold that type. ``_or_none``: it may be null (or absent unless
    # ``required``).
    def int_(self, key: str) -> int:
        v = self._typed(key, is_int, "an integer", True, False)
        assert isinstance(v, int)
        return v

    def int_or_none(self, key: str, *, required: bool = False) -> int | None:
        v = self._typed(key, is_int, "an integer", required, True)
        return v if isinstance(v, int) else None

    def num(self, key: str) -> float:
        v = self._typed(key, is_num, "a number", True, False)
        assert isinstance(v, int | float)
        return v

    def num_or_none(self, key: str) -> float | None:
        v = self._typed(key, is_num, "a number", False, True)
        return v if isinstance(v, int | float) else None

    def str_(self, key: str) -> str:
        v = self._typed(key, lambda x: isinstance(x, str), "a string", True, False)
        assert isinstance(v, str)
        return v

    def str_or_none(self, key: str, *, required: bool = False) -> str | None:
        v = self._typed(key, lambda x: isinstance(x, str), "a string", required, True)
        return v if isinstance(v, str) else None

    def bool_(self, key: str) -> bool:
        v = self._typed(key, lambda x: isinstance(x, bool), "true or false", True, False)
        return v is True

    def bool_or_none(self, key: str, *, required: bool = False) -> bool | None:
        v = self._typed(key, lambda x: isinstance(x, bool), "true or false", required, True)
        return v if isinstance(v, bool) else None

    def choice(
        self, key: str, choices: tuple[T, ...], *, null: bool = False, required: bool = True
    ) -> T | None:
        v = self._get(key, required)
        if v is None and (null or (not required and key not in self._d)):
            return None
        for c in choices:
            if v == c and isinstance(v, str):
                return c
        one_of = ", ".join(map(str, choices))
        raise Damaged(self.at(key), f"expected one of {one_of}, got {show(v)}")

    def list_(self, key: str, *, required: bool = False) -> list[tuple[object, str]]:
        """The items of a list and their paths (absent or null: none)."""
        v = self._get(key, required)
        if v is None and not required:
            return []
        if not isinstance(v, list | tuple):
            raise Damaged(self.at(key), f"expected a list, got {show(v)}")
        return [(item, f"{self.at(key)}[{i}]") for i, item in enumerate(v)]

    def strs(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        out: list[str] = []
        for item, path in self.list_(key, required=required):
            if not isinstance(item, str):
                raise Damaged(path, f"expected a string, got {show(item)}")
            out.append(item)
        return tuple(out)

    def ints(self, key: str) -> tuple[int, ...]:
        out: list[int] = []
        for item, path in self.list_(key):
            if not is_int(item):
                raise Damaged(path, f"expected an integer, got {show(item)}")
            assert isinstance(item, int)
            out.append(item)
        return tuple(out)

    def objs(self, key: str, read: Callable[[Obj], T], *, required: bool = False) -> tuple[T, ...]:
        return tuple(read(Obj(item, path)) for item, path in self.list_(key, required=required))

    def obj(self, key: str) -> Obj:
        return Obj(self._get(key, True), self.at(key))

    def obj_or_none(self, key: str) -> Obj | None:
        v = self._get(key, False)
        return None if v is None else Obj(v, self.at(key))

    def counts(self, key: str, *, required: bool = False) -> dict[str, int]:
        """An object of integers (absent or null: empty)."""
        o = self.obj(key) if required else self.obj_or_none(key)
        return {} if o is None else {k: o.int_(k) for k in o.keys}

    def counts_or_none(self, key: str) -> dict[str, int] | None:
        return self.counts(key) if self._get(key, False) is not None else None

    def maybe_counts(self, key: str) -> dict[str, int | None]:
        o = self.obj_or_none(key)
        return {} if o is None else {k: o.int_or_none(k) for k in o.keys}

    def texts(self, key: str) -> dict[str, str]:
        o = self.obj_or_none(key)
        return {} if o is None else {k: o.str_(k) for k in o.keys}

    def json_obj(self, key: str) -> JsonObject | None:
        """A free-form object (an escape hatch), checked as JSON."""
        v = self._get(key, False)
        if v is None:
            return None
        if not isinstance(v, Mapping):
            raise Damaged(self.at(key), f"expected an object, got {show(v)}")
        checked = json_value(v, self.at(key))
        assert isinstance(checked, Mapping)
        return checked

    def rest(self, known: frozenset[str]) -> dict[str, JsonValue]:
        return {k: json_value(self._d[k], self.at(k)) for k in sorted(self.keys - known)}
