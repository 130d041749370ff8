"""The engine: worker processes that accept (``ServerPool``) and open (``ClientPool``) TCP
connections at kernel speed, hold them, and count every failure by errno and cause.

See docs/engine.md for the API, the process model and the stats protocol. The names below are
imported on first use, not with the package: a worker process (``python -m
conncap.engine.worker``) imports ``conncap.engine`` too and needs none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conncap.engine.client import ClientPool, ClientStats, PoolCeiling
    from conncap.engine.plan import (
        OpenPlan,
        Target,
        auto_sources,
        auto_workers,
        parse_sources,
        parse_target,
        per_worker_capacity,
    )
    from conncap.engine.server import ServerPool, ServerStats

#: Public name -> the submodule that defines it.
_HOMES: dict[str, str] = {
    "ClientPool": "client",
    "ClientStats": "client",
    "PoolCeiling": "client",
    "OpenPlan": "plan",
    "Target": "plan",
    "auto_sources": "plan",
    "auto_workers": "plan",
    "parse_sources": "plan",
    "parse_target": "plan",
    "per_worker_capacity": "plan",
    "ServerPool": "server",
    "ServerStats": "server",
}

__all__ = [
    "ClientPool",
    "ClientStats",
    "OpenPlan",
    "PoolCeiling",
    "ServerPool",
    "ServerStats",
    "Target",
    "auto_sources",
    "auto_workers",
    "parse_sources",
    "parse_target",
    "per_worker_capacity",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'conncap.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"conncap.engine.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
