"""What the model is asked about: a :class:`Plan` (how many source IPs, destinations and
processes, which bind mode, ...), the vocabulary of bind modes, and the one builder of a plan for
conncap's own workers (:func:`worker_plan`). Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from conncap.engine.protocol import CLIENT_WORKER_FDS
from conncap.errors import UsageError
from conncap.limits._common import PortRange
from conncap.result import JsonValue

Bind = Literal["none", "bind", "bind-no-port", "explicit"]
BIND_MODES: tuple[str, ...] = ("none", "bind", "bind-no-port", "explicit")
Side = Literal["client", "server"]
OsName = Literal["linux", "darwin", "windows"]

#: Kernel bytes one idle TCP socket costs (estimate=True): Linux slabs TCP 2,368 +
#: sock_inode_cache 832 + filp 192 + dentry 192 + eventpoll_epi 128 ≈ 3.7 KB (6.18, x86-64),
#: rounded to 4 KiB; macOS and Windows are given the same order (docs/model.md says why).
KERNEL_BYTES_PER_SOCKET: dict[str, int] = {"linux": 4096, "darwin": 4096, "windows": 4096}

#: Ranges an OS uses when nobody changed them (used only to model another OS than the host's).
DEFAULT_PORT_RANGE: dict[str, PortRange] = {
    "linux": (32768, 60999),
    "darwin": (49152, 65535),
    "windows": (49152, 65535),
}
#: Before Vista (NT 6.0) Windows took ports 1025..MaxUserPort, 5000 when the value is not set.
WINDOWS_OLD_FIRST_PORT = 1025
WINDOWS_OLD_MAX_USER_PORT = 5000

OS_LABEL = {"linux": "Linux", "darwin": "macOS", "windows": "Windows"}


@dataclass(frozen=True, slots=True)
class Plan:
    """What the run will do: how many source IPs, destinations and processes, and how sockets
    get their local port. Counts are validated (UsageError) so bad flags never reach a
    traceback."""

    source_ips: int = 1
    """Distinct source addresses the client uses (more than one needs bind)."""
    destinations: int = 1
    """Distinct (destination IP, destination port) endpoints."""
    dst_ips: int = 1
    """How many distinct destination IPs among them."""
    client_processes: int = 1
    server_processes: int = 1
    bind: Bind = "none"
    """none: connect() picks; bind: bind(ip, 0) then connect(); bind-no-port: the same with
    IP_BIND_ADDRESS_NO_PORT (Windows: SO_REUSE_UNICASTPORT); explicit: the client picks each
    port itself (SO_REUSEADDR; SO_REUSEPORT on macOS)."""
    loopback: bool = True
    """Client and server on this same host: each connection costs both ends here."""
    bytes_per_conn: float | None = None
    """Measured kernel + user bytes per connection on this host (both ends when loopback)."""
    ports_in_use: int = 0
    """Local ports already taken in each pool (other sockets, TIME_WAIT)."""
    fds_in_use_per_process: int = CLIENT_WORKER_FDS
    """Descriptors each client process keeps besides its connections (stdio, pipes, an
    epoll; a listener). Default: what conncap's client worker keeps
    (``conncap.engine.protocol.CLIENT_WORKER_FDS``)."""
    server_fds_in_use_per_process: int | None = None
    """The same for each server process (conncap's server worker: its own plus one per
    listening port, ``conncap.engine.protocol.server_worker_fds``); None:
    ``fds_in_use_per_process``."""
    os: str | None = None
    """Model another OS's semantics (linux, darwin, windows); default ``limits.os``."""
    family: Literal["ipv4", "ipv6"] = "ipv4"
    raise_nofile: bool = False
    """Each process raises its soft RLIMIT_NOFILE to the hard limit (conncap's workers do)."""
    listen_backlog: int | None = None
    """The backlog the server passes to listen(); None: as large as somaxconn allows."""

    def __post_init__(self) -> None:
        for name in ("source_ips", "destinations", "dst_ips", "client_processes"):
            if getattr(self, name) < 1:
                raise UsageError(f"plan: {name} must be at least 1, not {getattr(self, name)}")
        if self.server_processes < 1:
            raise UsageError(
                f"plan: server_processes must be at least 1, not {self.server_processes}"
            )
        if self.dst_ips > self.destinations:
            raise UsageError(
                f"plan: {self.dst_ips} destination IPs but only {self.destinations} destinations"
            )
        if self.bind not in BIND_MODES:
            raise UsageError(
                f"plan: bind must be one of {', '.join(BIND_MODES)}, not {self.bind!r}"
            )
        if self.ports_in_use < 0 or self.fds_in_use_per_process < 0 or self.server_fds_in_use < 0:
            raise UsageError("plan: ports and descriptors in use cannot be negative")
        if self.bytes_per_conn is not None and not self.bytes_per_conn > 0:
            raise UsageError(
                f"plan: bytes per connection must be positive, not {self.bytes_per_conn}"
            )
        if self.listen_backlog is not None and self.listen_backlog < 0:
            raise UsageError("plan: the listen backlog cannot be negative")
        if self.family not in ("ipv4", "ipv6"):
            raise UsageError(f"plan: family must be ipv4 or ipv6, not {self.family!r}")
        if self.os is not None:
            os_name(self.os)  # raises UsageError for an unknown OS

    @property
    def server_fds_in_use(self) -> int:
        """Descriptors each server process keeps besides its connections."""
        s = self.server_fds_in_use_per_process
        return self.fds_in_use_per_process if s is None else s

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "source_ips": self.source_ips,
            "destinations": self.destinations,
            "dst_ips": self.dst_ips,
            "client_processes": self.client_processes,
            "server_processes": self.server_processes,
            "bind": self.bind,
            "loopback": self.loopback,
            "bytes_per_conn": self.bytes_per_conn,
            "ports_in_use": self.ports_in_use,
            "fds_in_use_per_process": self.fds_in_use_per_process,
            "server_fds_in_use_per_process": self.server_fds_in_use,
            "os": self.os,
            "family": self.family,
            "raise_nofile": self.raise_nofile,
            "listen_backlog": self.listen_backlog,
        }


def os_name(name: str) -> OsName:
    """``name`` as the model's OS name; UsageError for an OS it cannot model."""
    n = name.strip().lower()
    if n.startswith("linux"):
        return "linux"
    if n in ("darwin", "macos", "mac", "osx"):
        return "darwin"
    if n.startswith("win"):
        return "windows"
    raise UsageError(f"plan: cannot model OS {name!r}: linux, darwin (macos) or windows")


def bind_for(port_choice: str, *, sources: bool, linux: bool = True) -> Bind:
    """The model's bind mode for conncap's ``--bind-mode`` (``kernel`` or ``explicit``) with or
    without source IPs: kernel with sources binds each socket to its IP (Linux: with
    IP_BIND_ADDRESS_NO_PORT); without, connect() picks the port."""
    if port_choice == "explicit":
        return "explicit"
    if sources:
        return "bind-no-port" if linux else "bind"
    return "none"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def worker_plan(
    destinations: Iterable[tuple[str, int]],
    *,
    source_ips: int = 0,
    client_processes: int = 1,
    server_processes: int = 1,
    port_choice: str = "kernel",
    linux: bool = True,
    same_machine: bool | None = None,
    ports_in_use: int = 0,
    bytes_per_conn: float | None = None,
) -> Plan:
    """The one builder of a :class:`Plan` for conncap's own client workers (``open``, ``run``'s
    steps, scenarios): ``destinations`` are (IP, port) pairs, ``source_ips`` how many source
    addresses the workers bind. ``same_machine``: both ends cost this machine's memory and file
    table (the model's ``loopback``); default: every destination is a loopback address."""
    dests = list(destinations)
    hosts = {h for h, _ in dests}
    if same_machine is None:
        same_machine = bool(dests) and all(_is_loopback(h) for h in hosts)
    return Plan(
        source_ips=max(1, source_ips),
        destinations=max(1, len(dests)),
        dst_ips=max(1, len(hosts)),
        client_processes=client_processes,
        server_processes=server_processes,
        bind=bind_for(port_choice, sources=source_ips > 0, linux=linux),
        loopback=same_machine,
        bytes_per_conn=bytes_per_conn,
        ports_in_use=ports_in_use,
        fds_in_use_per_process=CLIENT_WORKER_FDS,
        family="ipv6" if any(":" in h for h in hosts) else "ipv4",
        raise_nofile=True,
    )
