"""The ceiling model: which limit will stop a plan, and at how many connections, and what each
limit implies. Pure functions of :class:`~conncap.limits.HostLimits` and a :class:`Plan`; no
I/O (h11's habit). docs/model.md gives the semantics per OS.

- :mod:`.plan`: the :class:`Plan`, the bind-mode vocabulary and :func:`worker_plan`, the one
  builder of a plan for conncap's own workers;
- :mod:`.predict`: :func:`predict` -> :class:`Prediction` (a :class:`PredictedCeiling` per side);
- :mod:`.sides`: :func:`two_sided`/:func:`predict_sides` when each side has its own limits;
- :mod:`.implied`: what each limit implies (``conncap limits``'s "implies" column).
"""

from __future__ import annotations

from conncap.model.implied import Implied, implied, usable_ports
from conncap.model.plan import (
    BIND_MODES,
    DEFAULT_PORT_RANGE,
    KERNEL_BYTES_PER_SOCKET,
    Bind,
    OsName,
    Plan,
    Side,
    bind_for,
    worker_plan,
)
from conncap.model.predict import (
    Bound,
    PredictedCeiling,
    Prediction,
    describe,
    port_pool_size,
    predict,
    stored,
    to_json,
)
from conncap.model.sides import predict_sides, two_sided

__all__ = [
    "BIND_MODES",
    "DEFAULT_PORT_RANGE",
    "KERNEL_BYTES_PER_SOCKET",
    "Bind",
    "Bound",
    "Implied",
    "OsName",
    "Plan",
    "PredictedCeiling",
    "Prediction",
    "Side",
    "bind_for",
    "describe",
    "implied",
    "port_pool_size",
    "predict",
    "predict_sides",
    "stored",
    "to_json",
    "two_sided",
    "usable_ports",
    "worker_plan",
]
