"""The server's side in a result: its own figures, what it did to connections as the client
saw it, and what this host shows of a target it does not own (docs/result-schema.md).

Frozen dataclasses like the rest of :mod:`conncap.result.model` (which uses them in ``Step``
and ``Result``); re-exported from :mod:`conncap.result`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ServerCloses", "ServerFigures", "ServerMessage", "ServerProcess", "TargetSide"]


@dataclass(frozen=True, slots=True)
class ServerFigures:
    """The server's own stats (``server``; a scenario step's ``server``)."""

    held: int | None = None
    accepted: int | None = None
    closed: int | None = None
    resets: int | None = None
    errors: Mapping[str, int] = field(default_factory=dict)
    """accept() errors by cause id."""
    errors_by_errno: Mapping[str, int] = field(default_factory=dict)
    per_source_ip: Mapping[str, int] = field(default_factory=dict)
    workers: int | None = None
    ports: tuple[int, ...] = ()
    rss_bytes: int | None = None
    backoffs: int | None = None
    closed_first: int | None = None
    """Churn: connections the server closed first (`serve --close-after`)."""
    errors_during_step: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """The first bytes a server sent on a connection (at most 256, escaped), how many
    connections got them, and how many of those the server then closed. ``text`` "" is every
    message beyond the eight a worker keeps."""

    text: str
    seen: int
    closed: int


@dataclass(frozen=True, slots=True)
class ServerCloses:
    """What the server (or the path to it) did to connections, as the client saw it: closed
    after the handshake with a FIN (``fin``) or an RST (``rst``), their lifetimes (a log-bucket
    histogram: bucket 0 under 1 ms, bucket k [2^(k-1), 2^k) ms), the server's first bytes,
    ICMP errors behind failed connects (``{"icmp 3/13": n}``) and, with ``open --send``, first
    messages never acknowledged (``unacked``: connections that existed only at the client)."""

    fin: int = 0
    rst: int = 0
    lifetimes: tuple[int, ...] = ()
    messages: tuple[ServerMessage, ...] = ()
    icmp: Mapping[str, int] = field(default_factory=dict)
    unacked: int = 0

    @property
    def closed(self) -> int:
        return self.fin + self.rst


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """A process that holds the target's listening socket (read on this host)."""

    pid: int
    name: str
    fds: int | None = None
    nofile: int | None = None


@dataclass(frozen=True, slots=True)
class TargetSide:
    """The server's side read on this host when the target is local (loopback, an address of
    this namespace): whether something listens, who (``processes``), the listener's accept
    queue (``accept_queue`` of ``backlog``), the server-side sockets of that port
    (``established``, ``syn_recv``), netfilter rules that drop or reject the port (``rules``)
    and where each fact came from (``sources``); ``problems``: facts it could not read."""

    host: str
    port: int
    listening: bool | None = None
    processes: tuple[ServerProcess, ...] = ()
    accept_queue: int | None = None
    backlog: int | None = None
    established: int | None = None
    syn_recv: int | None = None
    rules: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
