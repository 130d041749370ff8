"""The engine: worker processes that accept (``ServerPool``) and open (``ClientPool``) TCP
connections at kernel speed, hold them, and count every failure by errno and cause.

See docs/engine.md for the API, the process model and the stats protocol.
"""

from __future__ import annotations

from conncap.engine.client import Ceiling, ClientPool, ClientStats
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

__all__ = [
    "Ceiling",
    "ClientPool",
    "ClientStats",
    "OpenPlan",
    "ServerPool",
    "ServerStats",
    "Target",
    "auto_sources",
    "auto_workers",
    "parse_sources",
    "parse_target",
    "per_worker_capacity",
]
