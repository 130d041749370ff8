"""``Topology``: network namespaces joined by veth pairs, made for one run and ALWAYS removed.

Everything lives inside namespaces named ``conncap-<runid>-<role>``: veths are created with
both ends already inside their namespaces (never in the host's), addresses come from
198.18.0.0/15 and 100.64.0.0/10, sysctls and firewall rules are set inside, so deleting the
namespaces undoes all of it. Removal happens on normal exit, on an exception, on Ctrl-C and on
SIGTERM/SIGHUP (turned into :class:`~conncap.netns.signals.Terminated` while a topology is
alive); processes still inside are ended first, by pid. A registry record written before
each namespace lets ``conncap cleanup`` finish the job if the process is killed with -9.

Per-process limits (RLIMIT_NOFILE) are not a namespace property: the engine's worker pools
set ``nofile=`` on the processes they start through :meth:`Topology.exec_prefix`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Interface, IPv4Network
from types import TracebackType
from typing import Any, TypeVar

from conncap.errors import RunFailed, UsageError
from conncap.netns import firewall, layouts, reaper, signals, sysctls
from conncap.netns.iproute import DEFAULT_TIMEOUT, Shell
from conncap.netns.layouts import ClientServer, ManyClients, Nat, Sysctls
from conncap.netns.naming import (
    AddressPool,
    check_allowed,
    check_runid,
    host_addresses,
    namespace_name,
    new_runid,
    parse_interface,
    parse_network,
    prefix_for,
    veth_names,
)
from conncap.netns.registry import Registry, RunRecord
from conncap.netns.support import Support, check_support

T = TypeVar("T")


@dataclass(eq=False)
class Host:
    """One namespace of a topology. ``ifaces`` maps interface name to its primary address."""

    role: str
    name: str
    ifaces: dict[str, IPv4Interface] = field(default_factory=dict)

    @property
    def exec_prefix(self) -> list[str]:
        """Put this before argv to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @property
    def ip(self) -> str:
        """Address of the first interface (the one most layouts give a host)."""
        for iface in self.ifaces.values():
            return str(iface.ip)
        raise UsageError(f"{self.name} has no address yet (link it first)")

    def iface(self, name: str | None = None) -> str:
        """``name`` if this host has it, else its first interface."""
        if name is not None:
            if name not in self.ifaces:
                raise UsageError(f"{self.name} has no interface {name}")
            return name
        for iface in self.ifaces:
            return iface
        raise UsageError(f"{self.name} has no interface yet (link it first)")


@dataclass(frozen=True)
class Lan:
    """A switched subnet: a bridge in ``hub`` with one veth per member."""

    network: IPv4Network
    bridge: str
    hub_ip: str | None
    member_ips: tuple[str, ...]


class Topology:
    """Namespaces, veths, addresses, routes, sysctls and NAT for one run; a context manager.

    Use it in a ``with`` block: leaving the block (however) removes everything it made.
    """

    MAX_HOSTS = 1000
    """A Linux bridge takes at most 1024 ports; namespaces also cost kernel memory."""
    PARALLEL = 8
    """How many hosts are configured at once (see :meth:`each`)."""

    def __init__(
        self,
        *,
        runid: str | None = None,
        shell: Shell | None = None,
        registry: Registry | None = None,
        check: bool = True,
        grace: float = 1.0,
    ) -> None:
        self.runid = check_runid(runid) if runid is not None else new_runid()
        self._runid_given = runid is not None
        self.shell = shell if shell is not None else Shell()
        self.registry = registry if registry is not None else Registry()
        self.hosts: dict[str, Host] = {}
        self.pool = AddressPool()
        self.firewall: str | None = None
        self._check = check
        self._grace = grace
        self._names: list[str] = []
        self._links = 0
        self._children: list[subprocess.Popen[Any]] = []
        self._record: RunRecord | None = None
        self._stack: ExitStack | None = None
        self._owner_pid = 0
        self._open = False

    # ---- life cycle -------------------------------------------------------------------

    def __enter__(self) -> Topology:
        if self._open:
            raise UsageError("this topology is already open")
        if self._check:
            check_support().require()
        self._claim_runid()
        self._owner_pid = os.getpid()
        self._stack = ExitStack()
        try:
            self._stack.enter_context(signals.terminate_raises())
            self._record = RunRecord.for_this_process(self.runid)
            try:
                self.registry.write(self._record)
            except OSError as exc:
                raise RunFailed(
                    f"cannot write the run record in {self.registry.directory} ({exc}); "
                    "set CONNCAP_RUN_DIR to a writable directory"
                ) from exc
        except BaseException:
            self._stack.close()
            raise
        self._open = True
        return self

    def _claim_runid(self) -> None:
        """Make sure no namespace or record already uses this run id: teardown deletes every
        name of its run id, so a collision must never reach ``ip netns add``."""
        existing = self.shell.list_namespaces()
        for _ in range(8):
            taken = any(n.startswith(f"conncap-{self.runid}-") for n in existing)
            if not taken and not self.registry.path(self.runid).exists():
                return
            if self._runid_given:
                raise UsageError(f"run id {self.runid} is already in use")
            self.runid = new_runid()
        raise RunFailed("could not find an unused run id")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(propagating=exc is not None)

    def close(self, propagating: bool = False) -> None:
        """Remove everything; idempotent. Does nothing in a forked child (it owns nothing).

        If removal fails, raises RunFailed naming what is left, unless an exception is
        already on its way out (then the line goes to stderr and that exception wins).
        """
        if not self._open or os.getpid() != self._owner_pid:
            return
        try:
            with signals.held_back() as got:
                problems = self._teardown()
        finally:
            self._open = False
            if self._stack is not None:
                self._stack.close()  # puts back the SIGTERM/SIGHUP handlers of before
        if problems:
            line = f"could not remove {problems}; run `conncap cleanup` as root"
            if propagating:
                sys.stderr.write(f"conncap: {line}\n")
            else:
                raise RunFailed(line)
        pending = signals.exception_for(got)
        if pending is not None and not propagating:
            raise pending

    def _teardown(self) -> str:
        for child in self._children:
            if child.poll() is None:
                child.terminate()
        for child in self._children:
            try:
                child.wait(timeout=self._grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._children.clear()
        names = list(self._names)
        if not names:
            self.registry.forget(self.runid)
            return ""
        try:
            reaper.terminate(reaper.pids_in(names), grace=self._grace)
        except OSError as exc:
            sys.stderr.write(f"conncap: could not scan processes in namespaces: {exc}\n")
        try:
            self.shell.ip_batch((f"netns del {n}" for n in names), force=True)
            left = sorted(set(names) & set(self.shell.list_namespaces()))
        except RunFailed as exc:
            return f"namespaces {', '.join(names)} ({exc})"
        if left:
            return f"namespaces {', '.join(left)}"
        self._names.clear()
        self.registry.forget(self.runid)
        return ""

    def each(self, items: Sequence[T], job: Callable[[T], object]) -> None:
        """Run ``job`` on every item, up to :attr:`PARALLEL` at a time (each job is a few
        short commands; running them side by side makes big layouts several times faster).
        The first failure is raised once all started jobs have finished."""
        if len(items) <= 1:
            for item in items:
                job(item)
            return
        with ThreadPoolExecutor(max_workers=min(self.PARALLEL, len(items))) as pool:
            futures = [pool.submit(job, item) for item in items]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _require_open(self) -> None:
        if not self._open:
            raise UsageError("use the Topology inside its `with` block")

    def _save_record(self) -> None:
        assert self._record is not None
        self._record = self._record.with_namespaces(tuple(self._names))
        self.registry.write(self._record)

    # ---- building blocks --------------------------------------------------------------

    def add_host(self, role: str) -> Host:
        """A new namespace ``conncap-<runid>-<role>`` with loopback up."""
        return self.add_hosts([role])[0]

    def add_hosts(self, roles: Sequence[str]) -> list[Host]:
        """Several namespaces at once (one ``ip -batch`` for all of them)."""
        self._require_open()
        names = [namespace_name(self.runid, r) for r in roles]
        dup = [r for r in roles if r in self.hosts] or [r for r in roles if roles.count(r) > 1]
        if dup:
            raise UsageError(f"namespace role {dup[0]!r} used twice in one topology")
        if len(self._names) + len(names) > self.MAX_HOSTS:
            raise UsageError(f"at most {self.MAX_HOSTS} namespaces per topology")
        self._names.extend(names)
        self._save_record()  # before the namespaces exist, so a crash leaves nothing unnamed
        self.shell.ip_batch(f"netns add {n}" for n in names)
        hosts = [Host(role, name) for role, name in zip(roles, names, strict=True)]
        for host in hosts:
            self.hosts[host.role] = host
        self.each(hosts, lambda h: self.shell._ip("-n", h.name, "link", "set", "lo", "up"))
        return hosts

    def _next_veth(self) -> tuple[str, str]:
        names = veth_names(self.runid, self._links)
        self._links += 1
        return names

    def link(self, a: Host, b: Host, subnet: str | IPv4Network | None = None) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b``; ``a`` gets the first address of ``subnet``
        (default: the next free /30), ``b`` the second. Returns (ip_a, ip_b)."""
        self._require_open()
        net = self._subnet(subnet, 30)
        ip_a, ip_b = host_addresses(net, 2)
        end_a, end_b = self._next_veth()
        self.shell._ip(
            "-n", a.name, "link", "add", "name", end_a, "type", "veth",
            "peer", "name", end_b, "netns", b.name,
        )  # fmt: skip
        for host, end, ip in ((a, end_a, ip_a), (b, end_b, ip_b)):
            iface = IPv4Interface(f"{ip}/{net.prefixlen}")
            self.shell.ip_batch(
                [f"addr add {iface} dev {end}", f"link set {end} up"], netns=host.name
            )
            host.ifaces[end] = iface
        return ip_a, ip_b

    def bridge(
        self,
        hub: Host,
        members: Sequence[Host],
        subnet: str | IPv4Network | None = None,
        *,
        hub_ip: bool = False,
    ) -> Lan:
        """A bridge inside ``hub`` and a veth from it to each member: one switched subnet.
        With ``hub_ip`` the hub takes the first address (it is then the members' gateway)."""
        self._require_open()
        count = len(members) + (1 if hub_ip else 0)
        if not 0 < len(members) <= self.MAX_HOSTS:
            raise UsageError(f"a bridge takes 1 to {self.MAX_HOSTS} members")
        net = self._subnet(subnet, prefix_for(count))
        ips = host_addresses(net, count)
        br = f"br{self.runid}"
        hub_lines = [f"link add name {br} type bridge", f"link set {br} up"]
        gw = ips.pop(0) if hub_ip else None
        if gw is not None:
            hub_lines.insert(1, f"addr add {gw}/{net.prefixlen} dev {br}")
        ends = [self._next_veth() for _ in members]
        for (end_m, end_h), member in zip(ends, members, strict=True):
            hub_lines += [
                f"link add name {end_h} type veth peer name {end_m} netns {member.name}",
                f"link set {end_h} master {br} up",
            ]
        self.shell.ip_batch(hub_lines, netns=hub.name)
        if gw is not None:
            hub.ifaces[br] = IPv4Interface(f"{gw}/{net.prefixlen}")
        jobs: list[tuple[Host, str, IPv4Interface]] = []
        for (end_m, _), member, ip in zip(ends, members, ips, strict=True):
            iface = IPv4Interface(f"{ip}/{net.prefixlen}")
            member.ifaces[end_m] = iface
            jobs.append((member, end_m, iface))
        self.each(
            jobs,
            lambda j: self.shell.ip_batch(
                [f"addr add {j[2]} dev {j[1]}", f"link set {j[1]} up"], netns=j[0].name
            ),
        )
        return Lan(net, br, gw, tuple(ips))

    def _subnet(self, subnet: str | IPv4Network | None, prefixlen: int) -> IPv4Network:
        if subnet is None:
            return self.pool.take(prefixlen)
        net = parse_network(subnet)
        if net.subnet_of(self.pool.block):
            self.pool.claim(net)
        return net

    def add_addresses(self, host: Host, ips: Iterable[str], iface: str | None = None) -> list[str]:
        """Extra addresses on ``iface`` (default: the host's first). An address without a
        prefix gets its subnet's prefix if it lies in the interface's subnet, else /32 (the
        peer then needs a :meth:`route` to it). Returns the plain addresses."""
        self._require_open()
        dev = host.iface(iface)
        net = host.ifaces[dev].network
        lines: list[str] = []
        out: list[str] = []
        for text in ips:
            addr = parse_interface(text)
            if "/" not in text and addr.ip in net:
                addr = IPv4Interface(f"{addr.ip}/{net.prefixlen}")
            lines.append(f"addr add {addr} dev {dev}")
            out.append(str(addr.ip))
        self.shell.ip_batch(lines, netns=host.name)
        return out

    def route(self, host: Host, dst: str, via: str) -> None:
        """``ip route replace DST via VIA`` inside ``host`` (DST may be ``default``)."""
        self._require_open()
        if dst != "default":
            dst = str(parse_network(dst) if "/" in dst else parse_interface(dst).ip)
        check_allowed(parse_interface(via).ip, "gateway")
        self.shell._ip("-n", host.name, "route", "replace", dst, "via", via)

    def sysctl(self, host: Host, key: str, value: sysctls.SysctlValue) -> None:
        """Set one sysctl inside ``host`` only; see :meth:`sysctls_set`."""
        self.sysctls_set(host, {key: value})

    def sysctls_set(self, host: Host, values: Mapping[str, sysctls.SysctlValue]) -> None:
        """Set ``net.*`` sysctls inside ``host`` (one ``ip netns exec NS sysctl -w``).

        Nothing is recorded: the values die with the namespace. As a last guard the host's
        own value of each key is read before and after; if it moved (a kernel that shares
        the key), it is put back and RunFailed is raised.
        """
        self._require_open()
        if not values:
            return
        pairs = {sysctls.check_key(k): sysctls.format_value(v) for k, v in values.items()}
        before = {k: _read_host(k) for k in pairs}
        args = [f"{k}={v}" for k, v in pairs.items()]
        self.shell.in_netns(host.name, ["sysctl", "-q", "-w", *args])
        for key, old in before.items():
            now = _read_host(key)
            if old is not None and now is not None and sysctls.normalise(now) != old:
                sysctls.proc_path(key).write_text(old)
                raise RunFailed(
                    f"sysctl {key} is shared with the host on this kernel: setting it inside "
                    f"{host.name} changed the host's value (put back to {old!r})"
                )

    def enable_forwarding(self, gateway: Host) -> None:
        """``net.ipv4.ip_forward=1`` inside ``gateway`` (per namespace)."""
        self.sysctl(gateway, "net.ipv4.ip_forward", 1)

    def masquerade(
        self, gateway: Host, out_iface: str, ports: tuple[int, int] | None = None
    ) -> str:
        """Source-NAT what leaves ``out_iface`` of ``gateway`` to its address, with source
        ports from ``ports`` if given. Returns the backend used (nft or iptables)."""
        self._require_open()
        self.firewall = firewall.masquerade(
            self.shell, gateway.name, gateway.iface(out_iface), ports
        )
        return self.firewall

    # ---- running things inside --------------------------------------------------------

    def exec_prefix(self, host: Host) -> list[str]:
        """``["ip", "netns", "exec", NAME]``: prefix for process pools' worker commands."""
        return host.exec_prefix

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a one-shot command inside ``host`` (bounded by ``timeout``)."""
        self._require_open()
        return self.shell.in_netns(host.name, argv, stdin=stdin, check=check, timeout=timeout)

    def popen(self, host: Host, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-lived process inside ``host``; it is ended when the topology closes."""
        self._require_open()
        child: subprocess.Popen[Any] = subprocess.Popen([*host.exec_prefix, *argv], **kwargs)
        self._children.append(child)
        return child

    def read_file(self, host: Host, path: str) -> str:
        """A file as seen from inside ``host``: /proc/net/netstat, /proc/net/sockstat and
        /proc/sys/net/* are per namespace."""
        if not path.startswith("/"):
            raise UsageError(f"read_file needs an absolute path, not {path!r}")
        return self.run(host, ["cat", path]).stdout

    # ---- ready-made layouts (conncap.netns.layouts) -----------------------------------

    def client_server(
        self,
        *,
        port_range: tuple[int, int] | None = None,
        somaxconn: int | None = None,
        max_syn_backlog: int | None = None,
        extra_client_ips: int = 0,
        client_extra: Sysctls | None = None,
        server_extra: Sysctls | None = None,
    ) -> ClientServer:
        """Two namespaces ``cli`` and ``srv`` on one veth; see layouts.client_server."""
        return layouts.client_server(
            self,
            port_range=port_range,
            somaxconn=somaxconn,
            max_syn_backlog=max_syn_backlog,
            extra_client_ips=extra_client_ips,
            client_extra=client_extra,
            server_extra=server_extra,
        )

    def many_clients(
        self,
        n: int,
        *,
        port_range: tuple[int, int] | None = None,
        somaxconn: int | None = None,
        max_syn_backlog: int | None = None,
        client_extra: Sysctls | None = None,
        server_extra: Sysctls | None = None,
    ) -> ManyClients:
        """``n`` client namespaces and a server on one bridge; see layouts.many_clients."""
        return layouts.many_clients(
            self,
            n,
            port_range=port_range,
            somaxconn=somaxconn,
            max_syn_backlog=max_syn_backlog,
            client_extra=client_extra,
            server_extra=server_extra,
        )

    def nat(
        self,
        n_clients: int,
        *,
        ports: tuple[int, int] | None = None,
        gateway_port_range: tuple[int, int] | None = None,
        port_range: tuple[int, int] | None = None,
        somaxconn: int | None = None,
        max_syn_backlog: int | None = None,
        client_extra: Sysctls | None = None,
        server_extra: Sysctls | None = None,
    ) -> Nat:
        """Clients -> masquerading gateway -> server; see layouts.nat."""
        return layouts.nat(
            self,
            n_clients,
            ports=ports,
            gateway_port_range=gateway_port_range,
            port_range=port_range,
            somaxconn=somaxconn,
            max_syn_backlog=max_syn_backlog,
            client_extra=client_extra,
            server_extra=server_extra,
        )


def _read_host(key: str) -> str | None:
    """This process's (the host's) value of a sysctl, normalised; None if it has none."""
    try:
        return sysctls.normalise(sysctls.proc_path(key).read_text())
    except OSError:
        return None


def probe_veth(support: Support) -> Support:
    """``support`` with ``veth`` answered: build and remove a throwaway two-namespace topology
    to prove veth pairs work (about 50 ms). Skipped when ``support`` already has a problem."""
    if support.problem is not None:
        return support
    try:
        with Topology(check=False) as topo:
            a, b = topo.add_host("probea"), topo.add_host("probeb")
            topo.link(a, b)
    except RunFailed as exc:
        return replace(support, veth=False, veth_error=str(exc))
    return replace(support, veth=True)
