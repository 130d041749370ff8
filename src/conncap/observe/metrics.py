"""``--metrics ADDR:PORT``: the live figures for Prometheus (docs/metrics.md), through the
official ``prometheus-client`` library, an optional extra (``pip install 'conncap[metrics]'``).

Only this module imports ``prometheus_client``, and only a command given ``--metrics`` imports
this module. A custom collector reads the latest :class:`~conncap.observe.figures.Figures` at
each scrape, in a fresh registry (nothing is registered globally); the HTTP server binds
loopback unless another address is given, and is shut down when the command ends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

from conncap import __version__
from conncap.doctor.sockdiag import TCP_TIME_WAIT
from conncap.errors import UsageError
from conncap.latency import BOUNDS_NS, cumulative

INSTALL = "pip install 'conncap[metrics]'"


def require() -> None:
    """prometheus-client is installed, else one UsageError line saying how to get it."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError(
            "--metrics needs the prometheus-client library, which is not installed: "
            f"{INSTALL} (or pip install prometheus-client)"
        ) from None


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT`` or ``PORT`` (loopback) as (host, port); one line if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--metrics {text}: expected ADDR:PORT, e.g. 127.0.0.1:9464") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--metrics {text}: the port must be 0-65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(
                f"--metrics {text}: {host!r} is not an IP address (give one, or localhost)"
            ) from None
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def families(figures: Any) -> Iterator[Any]:
    """The metric families of one :class:`Figures` (docs/metrics.md lists them)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
    )

    f = figures
    yield InfoMetricFamily(
        "conncap",
        "conncap's version and the command running",
        {"version": __version__, "command": f.command},
    )
    if f.held is not None:
        yield GaugeMetricFamily(
            "conncap_connections_held", "Client connections held now", value=f.held
        )
    if f.established is not None:
        yield CounterMetricFamily(
            "conncap_connections_established",
            "Client connections whose handshake completed",
            value=f.established,
        )
    if f.attempts is not None:
        yield CounterMetricFamily(
            "conncap_connect_attempts", "connect() attempts made", value=f.attempts
        )
        fails = CounterMetricFamily(
            "conncap_connect_failures",
            "Failed connect attempts by the catalogue's cause",
            labels=["cause"],
        )
        for cause, n in sorted(f.failures_by_cause.items()):
            fails.add_metric([cause], n)
        yield fails
    if f.server_held is not None:
        yield GaugeMetricFamily(
            "conncap_server_connections_held",
            "Connections the server holds now",
            value=f.server_held,
        )
    if f.accepted is not None:
        yield CounterMetricFamily(
            "conncap_server_accepts", "Connections the server accepted", value=f.accepted
        )
    if f.server_errors_by_cause is not None:
        errs = CounterMetricFamily(
            "conncap_server_accept_errors",
            "Failed accept() calls by the catalogue's cause",
            labels=["cause"],
        )
        for cause, n in sorted(f.server_errors_by_cause.items()):
            errs.add_metric([cause], n)
        yield errs
    if f.time_wait is not None:
        yield GaugeMetricFamily(
            "conncap_time_wait_sockets",
            "Sockets in TIME_WAIT in the client's network namespace (/proc/net/sockstat)",
            value=f.time_wait,
        )
    if f.latency is not None:
        h = f.latency
        run = cumulative(h.counts)
        buckets = [(_le(b), run[i]) for i, b in enumerate(BOUNDS_NS)]
        buckets.append(("+Inf", run[-1]))
        yield HistogramMetricFamily(
            "conncap_connect_latency_seconds",
            "From connect() to the epoll wake-up that reported the handshake complete",
            buckets=buckets,
            sum_value=h.sum_ns / 1e9,
        )
    if f.memory_bytes:
        mem = GaugeMetricFamily(
            "conncap_memory_bytes",
            "Memory by part: client/server workers' resident memory, kernel socket memory",
            labels=["part"],
        )
        for part, n in sorted(f.memory_bytes.items()):
            mem.add_metric([part], n)
        yield mem


def _le(ns: int) -> str:
    return repr(ns / 1e9)


def pool_label(src: str, dst: str, dport: int) -> str:
    """A pool as a label value: ``SRC->DST:PORT`` (ASCII, for PromQL; ``[V6]`` bracketed)."""
    return f"{src}->{f'[{dst}]' if ':' in dst else dst}:{dport}"


def doctor_families(report: Any, top: int) -> Iterator[Any]:
    """The metric families of one judged doctor reading (``conncap watch --metrics``;
    docs/metrics.md): the ``top`` fullest pools, processes, listeners and ceilings, the file
    table; a figure the reading could not read is left out. ``report`` None: only
    ``conncap_info`` (before the first reading)."""
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

    yield InfoMetricFamily(
        "conncap",
        "conncap's version and the command running",
        {"version": __version__, "command": "watch"},
    )
    if report is None:  # before the first reading
        return
    reading = report.reading
    ports = report.ports
    if ports is not None:
        pools = ports.pools[:top]
        in_use = GaugeMetricFamily(
            "conncap_pool_ports_in_use",
            "Ephemeral ports in use in a (source IP, destination IP, destination port) pool, "
            "TIME_WAIT and ports held by listeners included",
            labels=["pool"],
        )
        tw = GaugeMetricFamily(
            "conncap_pool_time_wait",
            "Client sockets of a pool in TIME_WAIT (their ports are still taken)",
            labels=["pool"],
        )
        rate = GaugeMetricFamily(
            "conncap_pool_ports_per_second",
            "Ports a pool gained per second since the previous reading",
            labels=["pool"],
        )
        for p in pools:
            label = [pool_label(p.src, p.dst, p.dport)]
            in_use.add_metric(label, p.in_use)
            tw.add_metric(label, p.time_wait)
            trend = report.trends.get((p.family, p.src, p.dst, p.dport))
            if trend is not None:
                rate.add_metric(label, trend.per_s)
        yield in_use
        yield GaugeMetricFamily(
            "conncap_pool_ports_usable",
            "Usable ephemeral ports of every pool (ip_local_port_range less reserved ports)",
            value=ports.usable,
        )
        yield tw
        yield rate
    if reading.sockets is not None:
        yield GaugeMetricFamily(
            "conncap_time_wait_sockets",
            "Sockets in TIME_WAIT in the network namespace read (sock_diag)",
            value=reading.sockets.by_state[TCP_TIME_WAIT],
        )
    d = reading.descriptors
    if d is not None:
        fds = GaugeMetricFamily(
            "conncap_process_fds", "Open file descriptors of a process", labels=["pid", "name"]
        )
        lim = GaugeMetricFamily(
            "conncap_process_fds_limit",
            "A process's soft RLIMIT_NOFILE (left out when unlimited)",
            labels=["pid", "name"],
        )
        for proc in d.processes[:top]:
            who = [str(proc.pid), proc.name]
            if proc.fds is not None:
                fds.add_metric(who, proc.fds)
            if proc.soft is not None:
                lim.add_metric(who, proc.soft)
        yield fds
        yield lim
    limits = reading.limits
    if limits.files_open.value is not None:
        yield GaugeMetricFamily(
            "conncap_file_table_used",
            "Files open system-wide (fs.file-nr)",
            value=limits.files_open.value,
        )
    if limits.files_max.value is not None:
        yield GaugeMetricFamily(
            "conncap_file_table_max", "The system file table's size (fs.file-max)",
            value=limits.files_max.value,
        )  # fmt: skip
    if report.listeners:
        queue = GaugeMetricFamily(
            "conncap_listener_accept_queue",
            "Connections waiting in a listener's accept queue",
            labels=["addr", "port"],
        )
        backlog = GaugeMetricFamily(
            "conncap_listener_backlog", "A listener's backlog", labels=["addr", "port"]
        )
        for view in report.listeners[:top]:
            where = [view.listener.addr, str(view.listener.port)]
            queue.add_metric(where, view.listener.accept_queue)
            backlog.add_metric(where, view.listener.backlog)
        yield queue
        yield backlog
    if report.ceilings:
        fill = GaugeMetricFamily(
            "conncap_nearest_ceiling_fill",
            "How full each of the nearest ceilings is, used / limit (0-1)",
            labels=["cause", "side", "subject"],
        )
        for c in report.ceilings[:top]:
            fill.add_metric([c.cause, c.side, c.subject], c.fill)
        yield fill


class Exporter:
    """The ``/metrics`` endpoint over ``figures`` (a function that returns the latest)."""

    def __init__(
        self,
        figures: Callable[[], Any],
        host: str,
        port: int,
        collect: Callable[[Any], Iterator[Any]] = families,
    ) -> None:
        """``collect``: the metric families of what ``figures`` returns (default: a run's
        :class:`~conncap.observe.figures.Figures`)."""
        self._figures = figures
        self._collect = collect
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> str:
        """Listen; the URL to scrape. An address that cannot be bound is a UsageError line."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.registry import Collector

        figures, collect = self._figures, self._collect

        class _Collector(Collector):
            def collect(self) -> Iterator[Any]:
                yield from collect(figures())

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=registry
            )
        except OSError as exc:
            raise UsageError(
                f"--metrics {self.host}:{self.port}: cannot listen there ({exc.strerror or exc})"
            ) from None
        self.port = int(self._server.server_port)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
