"""What a step of ``conncap run`` is compared with. Pure: the measurement loop
(:mod:`conncap.measure`) decides the ceiling; these functions say what its prediction is
compared with.

- For a ceiling on the server's side the comparison is with what the server accepted; when the
  server simply holds fewer than the client (half-open connections), with what it holds
  (:func:`measured`).
- An odd-sized port range may give one port fewer (:func:`odd_range_reason`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from conncap.catalogue import Cause
from conncap.limits import PortRange
from conncap.result import Ceiling
from conncap.run.ports import TCP_LISTEN, SocketRow
from conncap.run.steps import StepSpec

#: Ceilings step 2 can lift: a new (source IP, server port) pair is a fresh pool of ports,
#: and step 2's new client processes have fresh descriptor tables. A server's limits, memory
#: and the network stay where they are, so step 2 is skipped after those.
LIFTABLE = frozenset({Cause.EPHEMERAL_PORTS, Cause.FILE_DESCRIPTORS})


def liftable(ceiling: Ceiling) -> bool:
    """Whether step 2 (new 4-tuples, new client processes) can lift this ceiling."""
    return ceiling.side == "client" and ceiling.cause in LIFTABLE


@dataclass(frozen=True, slots=True)
class Measured:
    """The figure a step's prediction is compared with, what to call it, and why."""

    value: int | None
    what: str = "measured"
    reasons: tuple[str, ...] = field(default=())


def measured(ceiling: Ceiling, *, client_held: int, server_held: int | None) -> Measured:
    """What both ends hold, for the comparison with the model.

    A ceiling on the client's side is the client's count. One on the server's side is what
    the server accepted. Without a ceiling, if the server holds fewer than the client, the
    rest are half-open or queued: the server's count is what is really held."""
    if ceiling.reached:
        held = ceiling.count if ceiling.count is not None else client_held
        if ceiling.side != "server":
            return Measured(held)
        accepted = ceiling.server_held or 0
        why = (
            (f"the client held {held:,}: {held - accepted:,} more that the server never accepted",)
            if accepted < held
            else ()
        )
        return Measured(accepted, "the server accepted", why)
    if server_held is not None and server_held < client_held:
        return Measured(
            server_held,
            "the server holds",
            (
                f"the server holds {server_held:,} of the client's {client_held:,}: the other "
                f"{client_held - server_held:,} are established at the client only (half-open: "
                "with SYN cookies, a final ACK that met a full accept queue is dropped and "
                "nothing resends it) or wait in the server's accept queue",
            ),
        )
    return Measured(client_held)


def odd_range_reason(
    rng: PortRange | None,
    reserved: frozenset[int],
    spec: StepSpec,
    rows: Iterable[SocketRow],
) -> str | None:
    """Why a one-destination step without bind() may get one port fewer than an odd-sized
    range has (None: it cannot). ``__inet_hash_connect`` searches ``high + 1 - low`` ports
    rounded down to an even number, so each search of an odd range misses one end; which end
    moves with the search's offset (docs/scenarios.md, ``article``). ``rows``: the client's
    sockets, to name the unused end."""
    if rng is None or spec.source_ips or len(spec.ports) > 1:
        return None
    lo, hi = rng
    if (hi - lo + 1) % 2 == 0:
        return None
    dests = set(spec.destinations)
    used = {
        r.local_port
        for r in rows
        if (r.remote_ip, r.remote_port) in dests and r.state != TCP_LISTEN
    }
    unused = [p for p in (lo, hi) if p not in used and p not in reserved]
    here = f" (here {unused[0]})" if len(unused) == 1 else ""
    return (
        f"the range {lo}-{hi} has an odd number of ports ({hi - lo + 1:,}): Linux's connect() "
        f"searches an even number of them, so one end of the range can go unused{here}"
    )


def ports_text(ports: list[int]) -> str:
    """``8000-8007`` for a run of consecutive ports, else ``8000, 8002``."""
    if len(ports) > 4 and ports == list(range(ports[0], ports[0] + len(ports))):
        return f"{ports[0]}-{ports[-1]}"
    return ", ".join(map(str, ports))
