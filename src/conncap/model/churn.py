"""The churn model: how many *new* connections per second a host can open for ever, and when a
faster rate runs out of ports. Pure functions of :class:`~conncap.limits.HostLimits`, a
:class:`conncap.model.Plan` (source IPs, destinations, bind mode: the port pools) and a
:class:`Churn` (rate, lifetime, how connections close); no I/O. docs/model.md ("Churn") has
the semantics per OS.

A client port is busy while its connection is open and, when the client closed first with a
FIN, for as long as the socket stays in TIME_WAIT afterwards. So::

    sustainable rate = usable ports × pools ÷ (lifetime + the time a closed port stays taken)

where that time is TIME_WAIT (Linux 60 s, Windows TcpTimedWaitDelay, macOS 2 × MSL), the
reuse delay when Linux's ``tcp_tw_reuse`` lets connect() take a TIME_WAIT port back, or 0 when
the close was an RST or the server closed first (then TIME_WAIT is the server's, and costs the
server no port).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.limits._common import Fact, HostLimits
from conncap.model.plan import Plan
from conncap.model.plan import os_name as _os_name
from conncap.model.predict import host_os, pools_for, port_pool_size
from conncap.result import JsonValue

Close = Literal["fin", "rst"]
Closer = Literal["client", "server"]
Holder = Literal["client", "server", "none"]

CLOSE_MODES: tuple[str, ...] = ("fin", "rst")
CLOSERS: tuple[str, ...] = ("client", "server")

#: Linux TCP_TIMEWAIT_LEN (include/net/tcp.h: 60*HZ): fixed, not a sysctl. tcp_fin_timeout is
#: how long an orphaned socket may sit in FIN-WAIT-2, not TIME_WAIT.
LINUX_TIME_WAIT_S = 60.0
#: Linux net.ipv4.tcp_tw_reuse_delay default (ms; per namespace, since 6.14). Before it,
#: connect() could reuse a TIME_WAIT port once the seconds clock had ticked past the last
#: timestamp update on it: up to 1 s, modelled as 1 s.
LINUX_TW_REUSE_DELAY_MS = 1000
#: Linux default net.ipv4.tcp_tw_reuse: 2 = for loopback connections only (since 4.19).
LINUX_TW_REUSE_DEFAULT = 2
#: Windows TcpTimedWaitDelay: 120 s by default since Server 2003 (NT 5.2), 240 s before;
#: values outside 30-300 are not accepted.
WINDOWS_TIME_WAIT_S = 120.0
WINDOWS_OLD_TIME_WAIT_S = 240.0
WINDOWS_TIME_WAIT_RANGE = (30, 300)
#: macOS net.inet.tcp.msl default (ms); TIME_WAIT lasts 2 × MSL = 30 s.
MACOS_MSL_MS = 15000

#: What the engine reports for a port failure: TIME_WAIT is the cause when, at the failure,
#: the client's namespace had more sockets in TIME_WAIT than connections held (the ports were
#: mostly waiting out TIME_WAIT, not holding live connections).
TW_DOMINANCE = 1.0

_LABEL = {"linux": "Linux", "darwin": "macOS", "windows": "Windows"}


@dataclass(frozen=True, slots=True)
class Churn:
    """Open ``rate`` new connections per second, each closed ``lifetime`` s after its handshake,
    with a FIN (``fin``: a normal close) or an RST (``rst``: SO_LINGER 0); ``closer`` says
    which side closes first. ``duration``: how long the run lasts (None: for ever)."""

    rate: float
    lifetime: float = 0.0
    close: Close = "fin"
    closer: Closer = "client"
    duration: float | None = None

    def __post_init__(self) -> None:
        check_churn_values(self.rate, self.lifetime, self.duration)
        if self.close not in CLOSE_MODES:
            raise UsageError(f"--close must be fin or rst, not {self.close!r}")
        if self.closer not in CLOSERS:
            raise UsageError(f"churn: closer must be client or server, not {self.closer!r}")

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "rate": self.rate,
            "lifetime": self.lifetime,
            "close": self.close,
            "closer": self.closer,
            "duration": self.duration,
        }


def check_churn_values(rate: float, lifetime: float, duration: float | None) -> None:
    """UsageError (one line, exit 2) for a rate that is not a positive finite number, a
    negative or infinite lifetime, or a duration that is not positive and finite."""
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise UsageError(f"--rate must be a positive number of connections per second, not {rate}")
    if not (isinstance(lifetime, int | float) and math.isfinite(lifetime) and lifetime >= 0):
        raise UsageError(f"--lifetime must be 0 or more seconds, not {lifetime}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UsageError(f"--duration must be a positive number of seconds, not {duration}")


@dataclass(frozen=True, slots=True)
class TimeWait:
    """How long a socket closed first by this OS stays in TIME_WAIT (``seconds`` None:
    unknown, ``detail`` says why)."""

    seconds: float | None
    detail: str
    estimate: bool = False
    knob: str = ""

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "seconds": self.seconds,
            "detail": self.detail,
            "estimate": self.estimate,
            "knob": self.knob,
        }


@dataclass(frozen=True, slots=True)
class Reuse:
    """Whether connect() takes a client's TIME_WAIT port back early, and after how long."""

    reuses: bool
    delay_s: float | None
    detail: str
    estimate: bool = False


@dataclass(frozen=True, slots=True)
class ChurnPrediction:
    """The model's answer for one churn plan. ``sustainable_rate`` None: ``unbounded`` (ports
    never run out at any rate) or unknown (``detail`` says which fact was missing)."""

    churn: Churn
    os: str | None
    holder: Holder
    time_wait: TimeWait
    reuse: Reuse
    ports: int | None
    pools: int
    port_hold_s: float | None
    sustainable_rate: float | None
    unbounded: bool
    exhausts: bool | None
    time_to_exhaustion_s: float | None
    exhausts_within_run: bool | None
    time_wait_peak: int | None
    cause: Cause
    detail: str
    estimate: bool
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "churn": self.churn.to_json(),
            "os": self.os,
            "holder": self.holder,
            "time_wait_s": self.time_wait.seconds,
            "time_wait": self.time_wait.to_json(),
            "tw_reuse": self.reuse.reuses,
            "tw_reuse_delay_s": self.reuse.delay_s,
            "tw_reuse_detail": self.reuse.detail,
            "ports": self.ports,
            "pools": self.pools,
            "port_hold_s": self.port_hold_s,
            "sustainable_rate": _round(self.sustainable_rate),
            "unbounded": self.unbounded,
            "exhausts": self.exhausts,
            "time_to_exhaustion_s": _round(self.time_to_exhaustion_s),
            "exhausts_within_run": self.exhausts_within_run,
            "time_wait_peak": self.time_wait_peak,
            "cause": str(self.cause),
            "detail": self.detail,
            "estimate": self.estimate,
            "notes": list(self.notes),
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


# --- TIME_WAIT length and reuse, per OS ---------------------------------------------------------


def _windows_version(limits: HostLimits) -> tuple[int, int] | None:
    v = limits.windows_version.value
    if not v:
        return None
    parts = v.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def time_wait_length(limits: HostLimits, os_name: str | None = None) -> TimeWait:
    """TIME_WAIT on ``os_name`` (default the host's): Linux a fixed 60 s; Windows
    TcpTimedWaitDelay (120 s when not set, 240 s before Server 2003, kept within 30-300);
    macOS 2 × net.inet.tcp.msl. Modelling another OS than the host's uses its default
    (estimate)."""
    os = _os_name(os_name) if os_name else host_os(limits)
    if os is None:
        return TimeWait(None, f"no TIME_WAIT model for OS {limits.os!r}")
    same = os == host_os(limits)
    if os == "linux":
        return TimeWait(
            LINUX_TIME_WAIT_S,
            "Linux TIME_WAIT is a fixed 60 s (TCP_TIMEWAIT_LEN; tcp_fin_timeout is FIN-WAIT-2)",
            knob="none (compiled in): pool connections, or tcp_tw_reuse for outgoing ones",
        )
    if os == "darwin":
        knob = "net.inet.tcp.msl"
        fact: Fact[Any] = limits.extra.get("tcp_msl_ms", Fact.na("darwin"))
        if same and fact.value is not None:
            msl = int(fact.value)
            return TimeWait(
                2 * msl / 1000, f"macOS TIME_WAIT = 2 × net.inet.tcp.msl {msl} ms", knob=knob
            )
        if same:
            return TimeWait(
                None, f"net.inet.tcp.msl unknown: {fact.reason or 'not read'}", knob=knob
            )
        return TimeWait(
            2 * MACOS_MSL_MS / 1000,
            f"macOS default TIME_WAIT = 2 × MSL {MACOS_MSL_MS} ms (not read from this host)",
            estimate=True,
            knob=knob,
        )
    knob = "TcpTimedWaitDelay"
    version = _windows_version(limits) if same else None
    default = WINDOWS_TIME_WAIT_S
    era = "since Server 2003"
    if version is not None and version < (5, 2):
        default, era = WINDOWS_OLD_TIME_WAIT_S, "before Server 2003"
    fact = limits.tcp_timed_wait_delay
    if same and fact.value is not None:
        lo, hi = WINDOWS_TIME_WAIT_RANGE
        value = min(max(int(fact.value), lo), hi)
        clamp = f" (outside {lo}-{hi}: Windows uses {value})" if value != fact.value else ""
        return TimeWait(float(value), f"TcpTimedWaitDelay {fact.value} s{clamp}", knob=knob)
    if same and fact.reason and "not set" in fact.reason:
        return TimeWait(
            default, f"TcpTimedWaitDelay not set: the default {default:g} s ({era})", knob=knob
        )
    if same:
        return TimeWait(None, f"TcpTimedWaitDelay unknown: {fact.reason or 'not read'}", knob=knob)
    return TimeWait(
        default,
        f"Windows default TIME_WAIT {default:g} s (TcpTimedWaitDelay not read from this host)",
        estimate=True,
        knob=knob,
    )


def tw_reuse(limits: HostLimits, plan: Plan, os_name: str | None = None) -> Reuse:
    """Whether connect() may take back a port the client holds in TIME_WAIT. Linux only:
    ``tcp_tw_reuse`` 1 = always, 2 (the default) = loopback connections only, 0 = never;
    it needs TCP timestamps (``tcp_timestamps``, on by default) and waits
    ``tcp_tw_reuse_delay`` ms (1000; a fixed 1 s before the sysctl existed)."""
    os = _os_name(os_name) if os_name else host_os(limits)
    if os != "linux":
        label = _LABEL.get(os or "", str(os))
        return Reuse(False, None, f"{label}: connect() does not reuse ports in TIME_WAIT")
    same = os == host_os(limits)
    est = False
    value = limits.tcp_tw_reuse.value if same else None
    if value is None:
        value, est = LINUX_TW_REUSE_DEFAULT, True
        why = (limits.tcp_tw_reuse.reason or "not read") if same else "not read from this host"
        src = f"tcp_tw_reuse unknown ({why}): the default 2 assumed"
    else:
        src = f"tcp_tw_reuse {value}"
    stamps: Fact[Any] = limits.extra.get("tcp_timestamps", Fact.na("linux"))
    delay_fact: Fact[Any] = limits.extra.get("tcp_tw_reuse_delay_ms", Fact.na("linux"))
    if same and delay_fact.value is not None:
        delay = int(delay_fact.value) / 1000
        dtext = f"after tcp_tw_reuse_delay {int(delay_fact.value)} ms"
    else:
        delay = LINUX_TW_REUSE_DELAY_MS / 1000
        dtext = "after up to 1 s (kernels before 6.14 have no tcp_tw_reuse_delay)"
    if value == 0:
        return Reuse(False, None, f"{src}: connect() never reuses a TIME_WAIT port", est)
    if value == 2 and not plan.loopback:
        return Reuse(
            False, None, f"{src}: reuse for loopback only, and these destinations are not", est
        )
    if value not in (1, 2):
        return Reuse(False, None, f"{src}: not a value Linux knows (0, 1, 2)", est)
    if same and stamps.value == 0:
        return Reuse(False, None, f"{src}, but tcp_timestamps 0: reuse needs TCP timestamps", est)
    scope = "for loopback connections" if value == 2 else "for outgoing connections"
    return Reuse(True, delay, f"{src}: connect() reuses TIME_WAIT ports {scope} {dtext}", est)


# --- the prediction ---------------------------------------------------------------------------


def predict_churn(limits: HostLimits, plan: Plan, churn: Churn) -> ChurnPrediction:
    """The sustainable rate of new connections for ``plan`` under ``churn``, whether ``rate``
    exhausts the client's ports and when, and who holds TIME_WAIT."""
    os = _os_name(plan.os) if plan.os else host_os(limits)
    tw = time_wait_length(limits, os)
    reuse = tw_reuse(limits, plan, os)
    notes: list[str] = []
    r, life = churn.rate, churn.lifetime

    holder: Holder
    if churn.close == "rst":
        holder = "none"
        notes.append(
            "RST closes (SO_LINGER 0) leave no TIME_WAIT: the port is free at once; the peer "
            "sees a reset, and data still in flight is lost"
        )
    elif churn.closer == "server":
        holder = "server"
        notes.append(
            "the server closes first, so TIME_WAIT is on the server's side, keyed by the "
            "client's address and port: it costs the server no port and the client's ports "
            "are free once the close completes"
        )
    else:
        holder = "client"

    if os is None:
        return _unknown(churn, os, holder, tw, reuse, f"no port model for OS {limits.os!r}")
    pool = port_pool_size(limits, os_name=os, family=plan.family)
    pools, rule = pools_for(os, plan)
    if pool.count is None:
        return _unknown(churn, os, holder, tw, reuse, pool.detail)
    ports = max(0, pool.count - plan.ports_in_use) * pools
    in_use = f", {plan.ports_in_use:,} already in use" if plan.ports_in_use else ""
    ports_text = f"{pool.detail}{in_use} × {pools} pool{'s' if pools != 1 else ''} ({rule})"

    # How long each connection keeps its client port after the close.
    after: float | None
    estimate = pool.estimate
    if holder != "client":
        after, after_text = 0.0, "0 s (no TIME_WAIT on the client)"
    elif reuse.reuses:
        after = reuse.delay_s
        after_text = f"{after:g} s until connect() may reuse it (tcp_tw_reuse)"
        estimate = estimate or reuse.estimate
        notes.append(
            "tcp_tw_reuse applies to connect() only: TIME_WAIT sockets still exist (and "
            "count in /proc/net/sockstat) until their port is reused or 60 s pass"
        )
    else:
        after = tw.seconds
        after_text = f"{tw.seconds:g} s TIME_WAIT" if after is not None else ""
        estimate = estimate or tw.estimate or reuse.estimate
        if os == "linux":
            notes.append(reuse.detail)
    if after is None:
        return _unknown(churn, os, holder, tw, reuse, tw.detail, ports=ports, pools=pools)
    hold = life + after
    buckets = limits.tcp_max_tw_buckets.value if os == "linux" else None
    tw_peak: int | None = None
    if holder != "none":
        per_s = tw.seconds
        if per_s is not None:
            n = r * per_s
            if holder == "client" and reuse.reuses:
                n = min(n, max(0.0, ports - r * life))
            if holder == "server":
                # a new SYN on the same 4-tuple takes over the server's TIME_WAIT socket
                # (tcp_timewait_state_process): at most one per client port
                n = min(n, float(ports))
            if buckets is not None:
                n = min(n, float(buckets))
            tw_peak = int(n)
    else:
        tw_peak = 0

    cause = Cause.TIME_WAIT if holder == "client" and after > 0 else Cause.EPHEMERAL_PORTS
    unbounded = False
    sustainable: float | None
    tw_only_hold = holder == "client" and not reuse.reuses
    if hold <= 0:
        sustainable, unbounded = None, True
        detail = f"{ports_text}; each port is free again at once: no port limit on the rate"
    elif tw_only_hold and buckets is not None and buckets < ports * after / hold:
        # tcp_max_tw_buckets: TIME_WAIT sockets beyond it are destroyed at once, so at most
        # `buckets` ports wait out TIME_WAIT; the rest of the range turns over with lifetime.
        notes.append(
            f"tcp_max_tw_buckets {buckets:,} is below the ports TIME_WAIT would hold: closes "
            "beyond it skip TIME_WAIT (dmesg: 'TCP: time wait bucket table overflow')"
        )
        if life <= 0 or ports <= buckets:
            sustainable = None if ports > buckets else 0.0
            unbounded = ports > buckets
            detail = (
                f"{ports_text}; at most {buckets:,} in TIME_WAIT (tcp_max_tw_buckets), so "
                "the ports never run out from TIME_WAIT"
                if unbounded
                else f"{ports_text}; every port can be held in TIME_WAIT"
            )
        else:
            sustainable = (ports - buckets) / life
            cause = Cause.EPHEMERAL_PORTS
            detail = (
                f"({ports:,} ports − {buckets:,} tcp_max_tw_buckets) ÷ {life:g} s lifetime = "
                f"{sustainable:,.1f} new connections/s ({ports_text})"
            )
    else:
        sustainable = ports / hold
        life_part = f"{life:g} s lifetime + " if life else ""
        detail = (
            f"{ports:,} ports ÷ ({life_part}{after_text}) = {sustainable:,.1f} new "
            f"connections/s ({ports_text})"
        )
        if holder == "client" and after > 0 and life >= after:
            cause = Cause.EPHEMERAL_PORTS  # the lifetime, not TIME_WAIT, holds most ports

    exhausts: bool | None
    t_exh: float | None = None
    within: bool | None = None
    if unbounded:
        exhausts = False
    elif sustainable is None:
        exhausts = None
    else:
        exhausts = r > sustainable
        if exhausts:
            t_exh = ports / r
            if churn.duration is not None:
                within = t_exh <= churn.duration
        elif churn.duration is not None:
            within = False
    if holder == "server" and tw.seconds is not None:
        notes.append(
            f"up to {tw_peak or 0:,} sockets in TIME_WAIT on the server ({r:g}/s × "
            f"{tw.seconds:g} s, at most one per client port: a new SYN from the same port "
            "takes over its TIME_WAIT socket): memory, not ports"
        )
    return ChurnPrediction(
        churn=churn,
        os=os,
        holder=holder,
        time_wait=tw,
        reuse=reuse,
        ports=ports,
        pools=pools,
        port_hold_s=hold,
        sustainable_rate=sustainable,
        unbounded=unbounded,
        exhausts=exhausts,
        time_to_exhaustion_s=t_exh,
        exhausts_within_run=within,
        time_wait_peak=tw_peak,
        cause=cause,
        detail=detail,
        estimate=estimate,
        notes=tuple(notes),
    )


def _unknown(
    churn: Churn,
    os: str | None,
    holder: Holder,
    tw: TimeWait,
    reuse: Reuse,
    why: str,
    *,
    ports: int | None = None,
    pools: int = 1,
) -> ChurnPrediction:
    return ChurnPrediction(
        churn=churn,
        os=os,
        holder=holder,
        time_wait=tw,
        reuse=reuse,
        ports=ports,
        pools=pools,
        port_hold_s=None,
        sustainable_rate=None,
        unbounded=False,
        exhausts=None,
        time_to_exhaustion_s=None,
        exhausts_within_run=None,
        time_wait_peak=None,
        cause=Cause.UNKNOWN,
        detail=f"unknown: {why}",
        estimate=False,
    )


def to_json(p: ChurnPrediction) -> dict[str, JsonValue]:
    """The churn prediction as JSON (the ``churn.prediction`` object of conncap.result/1)."""
    return p.to_json()


def describe(p: ChurnPrediction) -> str:
    """One line: the sustainable rate, its arithmetic, and what ``rate`` will do."""
    c = p.churn
    how = {"fin": "FIN", "rst": "RST"}[c.close]
    head = f"at {c.rate:g}/s, {how} closes by the {c.closer}, lifetime {c.lifetime:g} s:"
    if p.unbounded:
        return f"{head} no port limit on the rate ({p.detail})"
    if p.sustainable_rate is None:
        return f"{head} sustainable rate {p.detail}"
    est = " (estimate)" if p.estimate else ""
    line = f"{head} sustainable {p.sustainable_rate:,.1f}/s{est}: {p.detail}"
    if p.exhausts and p.time_to_exhaustion_s is not None:
        line += (
            f"; {c.rate:g}/s runs out of ports after ≈ {p.time_to_exhaustion_s:,.1f} s "
            f"({p.ports:,} connections), cause {p.cause}"
        )
    elif p.exhausts is False:
        line += f"; {c.rate:g}/s does not exhaust the ports"
    return line


def time_wait_dominates(time_wait: int | None, held: int) -> bool:
    """Evidence for a port failure (EADDRNOTAVAIL on connect()): were the ports mostly in
    TIME_WAIT? True when the client's namespace had more TIME_WAIT sockets than connections
    held at the failure (so cause ``time-wait``, not ``ephemeral-ports``)."""
    return time_wait is not None and time_wait > 0 and time_wait > TW_DOMINANCE * held


def sustainable_rate(limits: HostLimits, plan: Plan, lifetime: float = 0.0) -> ChurnPrediction:
    """The prediction for client FIN closes at a nominal 1/s: its ``sustainable_rate`` is what
    ``conncap limits`` shows for a plan."""
    return predict_churn(limits, plan, Churn(rate=1.0, lifetime=lifetime))
