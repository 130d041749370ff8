"""The wire between a pool (parent) and its worker processes. No sockets, no I/O.

A worker is started as ``python -m conncap.engine.worker CONFIG_JSON`` (optionally behind
``ip netns exec NAME``). It talks back on its **stdout**, one JSON object per line:

``{"k": "ready", "pid": P, "ports": [...]}``
    once: the worker listens (server) or is ready to connect (client).
``{"k": "s", ...counters}``
    stats, at most every :data:`STATS_INTERVAL` seconds while something changes and at least
    every :data:`IDLE_INTERVAL`; every counter is cumulative or a current level, so a reader
    may keep only the last line.
``{"k": "end", ...counters}``
    the last line, after everything is closed.
``{"k": "err", "errno": N | null, "msg": "..."}``
    a fatal error before or instead of ``ready`` (e.g. the port cannot be bound).

The parent talks to the worker on its **stdin**, one word per line:
``go`` (client: start connecting), ``stop``, ``pause``, ``resume``, ``cap N`` (client: hold at
most N connections; ``cap -1`` removes the cap). EOF on stdin means "parent gone": stop.
"""

from __future__ import annotations

import json
from typing import Any

#: Seconds between two stats lines while counters change.
STATS_INTERVAL = 0.2
#: Seconds between two stats lines when nothing changes (a heartbeat).
IDLE_INTERVAL = 0.5

#: Linux ``IP_BIND_ADDRESS_NO_PORT`` (include/uapi/linux/in.h); ``socket`` may lack it.
IP_BIND_ADDRESS_NO_PORT = 24

#: Who picks a client socket's local port (``conncap open --bind-mode``): ``kernel``: connect()
#: does (with source IPs: bind(ip, 0) with IP_BIND_ADDRESS_NO_PORT first), or ``explicit``: the
#: worker chooses every port itself. The model's vocabulary for what the OS is asked to do
#: (none, bind, bind-no-port, explicit) is :data:`conncap.model.BIND_MODES`;
#: :func:`conncap.model.bind_for` maps one to the other.
PORT_CHOICES = ("kernel", "explicit")

#: Descriptors a client worker keeps besides its connections, counted on a ready worker
#: (tests/integration/test_worker_fds.py): stdin (commands), stdout (stats), stderr, its epoll.
#: ``conncap limits``, every prediction and the workers' own capacity use this one figure.
CLIENT_WORKER_FDS = 4


def server_worker_fds(listeners: int) -> int:
    """Descriptors a server worker keeps besides its connections: a client worker's own
    (:data:`CLIENT_WORKER_FDS`) plus one per listening socket."""
    return CLIENT_WORKER_FDS + max(0, listeners)


def encode(kind: str, fields: dict[str, Any]) -> bytes:
    """One protocol line (``kind`` goes in ``k``)."""
    doc = {"k": kind}
    doc.update(fields)
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict[str, Any] | None:
    """Parse one protocol line; None for a line that is not a protocol object."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("k"), str):
        return None
    return doc


def parse_command(line: str) -> tuple[str, int | None]:
    """A control line -> (word, argument or None). Unknown words come back as they are."""
    parts = line.strip().split()
    if not parts:
        return "", None
    arg: int | None = None
    if len(parts) > 1:
        try:
            arg = int(parts[1])
        except ValueError:
            arg = None
    return parts[0], arg


class ControlBuffer:
    """Splits the bytes read from the control pipe into commands (partial lines kept)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[tuple[str, int | None]]:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        out = []
        for raw in lines:
            word, arg = parse_command(raw.decode("ascii", "replace"))
            if word:
                out.append((word, arg))
        return out
