"""Small helpers every limits reader uses to turn raw text into :class:`Fact` values.

Parsers raise ``ValueError`` with a short message; :func:`parsed` turns that into an unknown
fact whose reason starts with ``malformed:`` and quotes what was read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from conncap.limits._addresses import AddressSource, usable_source_addresses
from conncap.limits._common import Fact, PortRange

T = TypeVar("T")

#: Reason prefix of a fact that has no limit (``max``, ``unlimited``). Its value is None, like an
#: unknown fact (the shape ``HostLimits`` documents for the cgroup limit); the reason tells the
#: two apart. Use :func:`is_no_limit`.
NO_LIMIT = "no limit"


def no_limit(source: str, detail: str) -> Fact[Any]:
    """A fact the system sets no limit for, e.g. cgroup ``memory.max`` = ``max``."""
    return Fact(value=None, source=source, reason=f"{NO_LIMIT}: {detail}")


def is_no_limit(fact: Fact[Any]) -> bool:
    """True when ``fact`` says "no limit" (rather than "could not be read")."""
    return fact.value is None and fact.applicable and (fact.reason or "").startswith(NO_LIMIT)


def shown(raw: str, width: int = 40) -> str:
    """``raw`` quoted and shortened for a reason text."""
    text = raw.strip()
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def parsed(source: str, raw: str, parse: Callable[[str], T]) -> Fact[T]:
    """``Fact.of(parse(raw))``, or unknown with ``malformed: ...`` when ``parse`` refuses."""
    try:
        return Fact.of(parse(raw), source)
    except ValueError as exc:
        return Fact.unknown(source, f"malformed: {exc}")


def parse_int(raw: str) -> int:
    text = raw.strip()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {shown(raw)}") from None


def parse_ints(raw: str, count: int) -> tuple[int, ...]:
    parts = raw.split()
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count:
        raise ValueError(f"expected {count} integers, got {shown(raw)}")
    return values


def check_port_range(lo: int, hi: int, raw: str) -> PortRange:
    if not (0 < lo <= hi <= 65535):
        raise ValueError(f"not a port range (1-65535, low <= high): {shown(raw)}")
    return (lo, hi)


# --- inputs more than one reader shares --------------------------------------------------

#: getrlimit by name ("RLIMIT_NOFILE"); None in the pair means RLIM_INFINITY (unlimited).
Getrlimit = Callable[[str], tuple[int | None, int | None]]


def posix_getrlimit(name: str) -> tuple[int | None, int | None]:
    """This process's (soft, hard) limit; None for RLIM_INFINITY."""
    import resource

    soft, hard = resource.getrlimit(getattr(resource, name))
    inf = resource.RLIM_INFINITY
    return (None if soft == inf else soft, None if hard == inf else hard)


def rlimit_facts(getrlimit: Getrlimit, name: str) -> tuple[Fact[int], Fact[int]]:
    """(soft, hard) facts for one rlimit; unlimited is :func:`no_limit`."""
    source = f"getrlimit({name})"
    try:
        soft, hard = getrlimit(name)
    except (OSError, ValueError, AttributeError) as exc:
        bad: Fact[int] = Fact.unknown(source, f"getrlimit failed: {exc}")
        return bad, bad

    def one(v: int | None, which: str) -> Fact[int]:
        if v is None:
            return no_limit(source, f"{which} limit is unlimited (RLIM_INFINITY)")
        return Fact.of(v, source)

    return one(soft, "soft"), one(hard, "hard")


def psutil_memory() -> tuple[int, int]:
    """(total, available) bytes; on Linux MemTotal and MemAvailable of /proc/meminfo."""
    import psutil

    vm = psutil.virtual_memory()
    return (vm.total, vm.available)


def psutil_cpu_count() -> int | None:
    import psutil

    return psutil.cpu_count(logical=True)


def memory_facts(memory: Callable[[], tuple[int, int]], source: str) -> tuple[Fact[int], Fact[int]]:
    """(total, available) facts from a psutil-shaped memory function."""
    try:
        total, available = memory()
    except Exception as exc:  # psutil failing must not stop `conncap limits`
        bad: Fact[int] = Fact.unknown(source, f"psutil failed: {type(exc).__name__}: {exc}")
        return bad, bad
    return Fact.of(int(total), source), Fact.of(int(available), source)


def cpu_count_fact(cpu_count: Callable[[], int | None]) -> Fact[int]:
    source = "psutil.cpu_count()"
    try:
        n = cpu_count()
    except Exception as exc:  # psutil failing must not stop `conncap limits`
        return Fact.unknown(source, f"psutil failed: {type(exc).__name__}: {exc}")
    return Fact.unknown(source, "psutil could not count CPUs") if n is None else Fact.of(n, source)


def addresses_fact(
    addresses: AddressSource, *, whole_loopback_prefix: bool
) -> Fact[tuple[str, ...]]:
    source = "psutil.net_if_addrs()"
    try:
        found = usable_source_addresses(addresses(), whole_loopback_prefix=whole_loopback_prefix)
    except Exception as exc:  # psutil failing must not stop `conncap limits`
        return Fact.unknown(source, f"psutil failed: {type(exc).__name__}: {exc}")
    return Fact.of(found, source)


#: ``netstat -an -p tcp``: every connection on one line with its state (macOS, Windows).
NETSTAT_TCP = ("netstat", "-an", "-p", "tcp")


def parse_time_wait_count(raw: str) -> int:
    """How many lines of ``netstat -an -p tcp`` are in TIME_WAIT (macOS and Windows print
    the state as a word of its own)."""
    if "Proto" not in raw:
        raise ValueError(f"no 'Proto' header in netstat output: {shown(raw, 60)}")
    return sum(1 for line in raw.splitlines() if "TIME_WAIT" in line.split())
