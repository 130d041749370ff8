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
from collections.abc import Mapping
from typing import Literal, NotRequired, TypedDict

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


def encode(kind: str, fields: Mapping[str, object]) -> bytes:
    """One protocol line (``kind`` goes in ``k``)."""
    doc: dict[str, object] = {"k": kind}
    doc.update(fields)
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict[str, object] | None:
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


# ---- the shapes on the wire ------------------------------------------------------------------
# A config is what the parent passes as CONFIG_JSON; a snapshot is what a worker's ``s`` and
# ``end`` lines carry (without ``k``). Snapshots are ``total=False``: the parent holds ``{}``
# for a worker that has not reported yet and reads every counter with a default.


class ClientConfig(TypedDict):
    """A client worker's CONFIG_JSON (``role: client``), built by ``ClientPool._config``."""

    role: Literal["client"]
    #: [source IP or null, host, port] per pair (a JSON array each).
    pairs: list[tuple[str | None, str, int]]
    quota: int
    rate: float | None
    window: int
    timeout: float
    bind_mode: str
    #: [this worker's index, number of workers].
    slice: list[int]
    #: [first, last] local port, or null: the host's ip_local_port_range.
    port_range: list[int] | None
    streak: int
    nofile: int | None
    autostart: bool
    lifetime: float | None
    close: str
    #: ``--send``: the first message of every connection, hex (absent: send nothing).
    send: NotRequired[str]
    #: Hold at most this many connections from the start (not sent by ClientPool).
    cap: NotRequired[int]
    #: The descriptor limit the worker took (set by the worker itself, not sent).
    _nofile: NotRequired[int]


class ServerConfig(TypedDict):
    """A server worker's CONFIG_JSON (``role: server``), built by ``ServerPool._config``."""

    role: Literal["server"]
    bind: str
    ports: list[int]
    backlog: int | None
    mode: str
    nofile: int | None
    reuseport: bool
    #: The first worker on a port binds it without SO_REUSEPORT first: a port another
    #: process listens on is refused, never shared.
    exclusive: NotRequired[bool]
    coalesce: NotRequired[float]
    close_after: NotRequired[float]
    #: The descriptor limit the worker took (set by the worker itself, not sent).
    _nofile: NotRequired[int]


class CeilingReport(TypedDict):
    """A client worker's ceiling: the failure that kept happening, and what was held."""

    errno: int
    op: str
    held: int
    evidence: str
    #: Sockets in TIME_WAIT in the worker's namespace when the ceiling was hit (None: unread).
    time_wait: int | None


class ClientSnapshot(TypedDict, total=False):
    """A client worker's stats line (``Connector.stats``); the churn keys only with a
    ``lifetime``."""

    t: float
    t_go: float
    phase: str
    quota: int
    held: int
    ok: int
    peak: int
    attempts: int
    inflight: int
    #: errno (as a string) -> count.
    failures: dict[str, int]
    dropped: dict[str, int]
    ceiling: CeilingReport | None
    rss: int
    closed: int
    tw: int
    tw_peak: int
    first_fail: float | None
    first_fail_errno: int
    #: Connections the server closed, by lifetime: bucket k holds [2^(k-1), 2^k) ms.
    life: list[int]
    #: The server's first bytes: [text, seen, then closed] ("" text: other messages).
    msgs: list[list[str | int]]
    #: ICMP errors seen on connect ("icmp 3/13" -> count).
    icmp: dict[str, int]
    #: ``--send``: first messages never acknowledged within the timeout.
    unacked: int
    #: Connect latency (``conncap.latency``): bucket counts, sum and max in nanoseconds.
    lat: list[int]
    lat_sum: int
    lat_max: int


class ServerSnapshot(TypedDict, total=False):
    """A server worker's stats line (``Acceptor.stats``); ``expired`` only with
    ``close_after``."""

    t: float
    held: int
    accepted: int
    closed: int
    resets: int
    #: errno (as a string) -> count.
    errors: dict[str, int]
    #: source IP -> connections held.
    per_ip: dict[str, int]
    backoffs: int
    paused: bool
    rss: int
    expired: int


class Ready(TypedDict):
    """A worker's ``ready`` line: it listens (server, on ``ports``) or may connect."""

    pid: int
    ports: list[int]
