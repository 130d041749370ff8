"""What a step of ``conncap run`` reached, and what its prediction is compared with. Pure: the
experiment reads the pools, the server and the sockets, and these functions decide.

- The client's ceiling is what its workers report (:func:`ceiling_json` fills in the advice).
- A server's own ceiling: the client got its quota, but the server's accept() failed for lack
  of descriptors, file table or memory and it holds fewer (:func:`server_ceiling`).
- For a ceiling on the server's side the comparison is with what the server accepted; when the
  server simply holds fewer than the client (half-open connections), with what it holds
  (:func:`measured`).
- An odd-sized port range may give one port fewer (:func:`odd_range_reason`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conncap.catalogue import Cause
from conncap.engine import classify as cl
from conncap.limits import PortRange
from conncap.run.ports import TCP_LISTEN, SocketRow
from conncap.run.steps import StepSpec

#: The server's own resources: accept() failing for one of them bounds what it holds.
SERVER_RESOURCE_CAUSES = (Cause.FILE_DESCRIPTORS, Cause.SYSTEM_FILE_TABLE, Cause.MEMORY)

#: Ceilings step 2 can lift: a new (source IP, server port) pair is a fresh pool of ports,
#: and step 2's new client processes have fresh descriptor tables. A server's limits, memory
#: and the network stay where they are, so step 2 is skipped after those.
LIFTABLE = frozenset({Cause.EPHEMERAL_PORTS, Cause.FILE_DESCRIPTORS})


def liftable(ceiling: Mapping[str, Any]) -> bool:
    """Whether step 2 (new 4-tuples, new client processes) can lift this ceiling."""
    return ceiling.get("side") == "client" and ceiling.get("cause") in LIFTABLE


def ceiling_json(
    *,
    count: int,
    cause: str,
    side: str,
    errno: str | None,
    op: str | None,
    evidence: str | None,
    server_held: int | None,
) -> dict[str, Any]:
    """A reached ceiling as the result's ``ceiling`` object, with this OS's advice."""
    adv = cl.advice(Cause(cause))
    return {
        "reached": True,
        "count": count,
        "cause": str(cause),
        "side": side,
        "errno": errno,
        "op": op,
        "knob": adv.knob or None,
        "advice": list(adv.commands),
        "windows": adv.windows or None,
        "evidence": evidence,
        "server_held": server_held,
    }


def server_ceiling(
    *,
    client_held: int,
    server_held: int,
    errors_by_cause: Mapping[str, int],
    errors_by_errno: Mapping[str, int],
) -> dict[str, Any] | None:
    """The server's ceiling when the client reached its quota (None: there is none).

    ``errors_*`` are the server's accept() errors during the step. If one of them is a lack
    of a resource and the server holds fewer than the client, the server stopped there: the
    kernel kept completing handshakes into its accept queue (and, once that was full, with SYN
    cookies, half-open ones only the client knows)."""
    if server_held >= client_held:
        return None
    cause = next((c for c in SERVER_RESOURCE_CAUSES if errors_by_cause.get(c)), None)
    if cause is None:
        return None
    errno = (
        min(errors_by_errno.items(), key=lambda kv: (-kv[1], kv[0]))[0] if errors_by_errno else None
    )
    return ceiling_json(
        count=client_held,
        cause=cause,
        side="server",
        errno=errno,
        op="accept",
        evidence=(
            f"server accept() failed ×{errors_by_cause[cause]:,} ({errno or cause}) while the "
            f"client's connects still succeeded: the server holds {server_held:,}, the client "
            f"{client_held:,}; the others completed their handshake into the server's accept "
            "queue or, once it was full, are half-open (established at the client only)"
        ),
        server_held=server_held,
    )


@dataclass(frozen=True, slots=True)
class Measured:
    """The figure a step's prediction is compared with, what to call it, and why."""

    value: int | None
    what: str = "measured"
    reasons: tuple[str, ...] = field(default=())


def measured(ceiling: Mapping[str, Any], *, client_held: int, server_held: int | None) -> Measured:
    """What both ends hold, for the comparison with the model.

    A ceiling on the client's side is the client's count. One on the server's side is what
    the server accepted. Without a ceiling, if the server holds fewer than the client, the
    rest are half-open or queued: the server's count is what is really held."""
    if ceiling.get("reached"):
        count = ceiling.get("count")
        held = int(count) if isinstance(count, int) else client_held
        if ceiling.get("side") != "server":
            return Measured(held)
        accepted = int(ceiling.get("server_held") or 0)
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
