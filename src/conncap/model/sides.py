"""The prediction when client and server have their own limits (two namespaces, two hosts, or
a server worker with other descriptors than the client's): each side's ceiling from its own
limits. Pure."""

from __future__ import annotations

from conncap import result
from conncap.limits._common import HostLimits
from conncap.model.plan import Plan
from conncap.model.predict import Prediction, predict, stored


def two_sided(
    client_limits: HostLimits,
    server_limits: HostLimits,
    plan: Plan,
    server_plan: Plan | None = None,
) -> Prediction:
    """The model's prediction when client and server have their own limits: the client's
    ceiling from ``client_limits``, the server's from ``server_limits`` (with ``server_plan``
    when the server's processes keep other descriptors than the client's, e.g. listeners),
    the overall the lower of the two (the client on a tie)."""
    c = predict(client_limits, plan)
    s = predict(server_limits, server_plan or plan)
    overall = s.server if _lower(s.server.count, c.client.count) else c.client
    # The backlog note is about the server's listener: take it from the server's limits.
    notes = tuple(x for x in c.notes if not x.startswith("backlog")) + tuple(
        x for x in s.notes if x.startswith("backlog")
    )
    return Prediction(c.client, s.server, overall, notes)


def predict_sides(
    client_limits: HostLimits, server_limits: HostLimits, plan: Plan
) -> result.Prediction:
    """The model's prediction as a result stores it when client and server are different
    hosts: :func:`two_sided`."""
    return stored(two_sided(client_limits, server_limits, plan))


def _lower(a: int | None, b: int | None) -> bool:
    return a is not None and (b is None or a < b)
