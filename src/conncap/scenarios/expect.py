"""What a scenario expects, checked against what it measured. Pure: numbers in, verdicts out.

An :class:`Expectation` is one line of a scenario's outcome: ✓ or ✗, what was expected and
what was measured, both with their numbers. A *note* is printed with "·" and never fails a
scenario: it is for figures the kernel does not promise (how full a backlog gets) and for
the model's prediction where the model is known to differ (it says by how much).

:func:`connect_ports` is the one place that knows how many ports Linux's connect() really
hands out from a range (measured on 6.18, explained below).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from conncap import result
from conncap.result.model import ExpectationKind as Kind


@dataclass(frozen=True, slots=True)
class Expectation:
    """One expected outcome and what was measured (``ok`` None for a note)."""

    name: str
    ok: bool | None
    expected: str
    measured: str
    step: str = ""
    why: str = ""

    @property
    def kind(self) -> Kind:
        return "note" if self.ok is None else "check"

    @property
    def mark(self) -> str:
        return "·" if self.ok is None else ("✓" if self.ok else "✗")

    def line(self) -> str:
        """``✓ name: expected X, measured Y`` (a note: ``· name: X; measured Y``)."""
        head = f"{self.mark} {self.name}"
        if self.ok is None:
            return f"{head}: {self.measured}" + (f" ({self.expected})" if self.expected else "")
        return f"{head}: expected {self.expected}, measured {self.measured}"

    def result(self) -> result.Expectation:
        """The expectation as the result's ``expectations[]`` entry."""
        return result.Expectation(
            name=self.name,
            kind=self.kind,
            ok=self.ok,
            expected=self.expected,
            measured=self.measured,
            step=self.step,
            why=self.why,
        )


def n(value: int | float | None) -> str:
    """1234 -> '1,234'; None -> 'not measured'."""
    if value is None:
        return "not measured"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def equal(
    name: str, expected: int | None, measured: int | None, *, unit: str = "", step: str = ""
) -> Expectation:
    """``measured == expected`` exactly (None never passes)."""
    u = f" {unit}" if unit else ""
    ok = expected is not None and measured is not None and measured == expected
    return Expectation(name, ok, f"{n(expected)}{u}", f"{n(measured)}{u}", step)


def at_least(
    name: str, floor: int, measured: int | None, *, unit: str = "", step: str = ""
) -> Expectation:
    """``measured >= floor`` (for counters the kernel promises to move, not by how much)."""
    u = f" {unit}" if unit else ""
    ok = measured is not None and measured >= floor
    return Expectation(name, ok, f"at least {n(floor)}{u}", f"{n(measured)}{u}", step)


def greater(
    name: str,
    measured: int | None,
    than: int | None,
    *,
    what: str,
    than_what: str,
    step: str = "",
) -> Expectation:
    """``measured > than``, both named: 'client held 212 > server held 195'."""
    ok = measured is not None and than is not None and measured > than
    return Expectation(
        name, ok, f"{what} > {than_what}", f"{what} {n(measured)}, {than_what} {n(than)}", step
    )


def overflow_and_syn_retries(counters: Mapping[str, int | None], *, step: str) -> list[Expectation]:
    """What a full accept queue leaves behind: ListenOverflows on the server and SYN
    retransmits on the client (the ``backlog`` and ``server-fds`` scenarios both check it)."""
    return [
        at_least(
            "the accept queue overflowed (ListenOverflows, server namespace)",
            1,
            counters.get("listen_overflows"),
            step=step,
        ),
        at_least(
            "the client retransmitted SYNs (TCPSynRetrans, client namespace)",
            1,
            counters.get("syn_retrans"),
            step=step,
        ),
    ]


def same(name: str, expected: object, measured: object, *, step: str = "") -> Expectation:
    """Two values (causes, sets, errno names) are equal."""
    return Expectation(name, expected == measured, _show(expected), _show(measured), step)


def holds(name: str, ok: bool, expected: str, measured: str, *, step: str = "") -> Expectation:
    """A condition the caller computed, with both sides in words."""
    return Expectation(name, bool(ok), expected, measured, step)


def note(name: str, measured: str, context: str = "", *, step: str = "") -> Expectation:
    """A figure to show, not to check."""
    return Expectation(name, None, context, measured, step)


def model_note(
    predicted: int | None, cause: str | None, measured: int, *, step: str = "", why: str = ""
) -> Expectation:
    """The model's prediction next to the measurement, as a note (see module docstring)."""
    if predicted is None:
        return note("model", "no prediction (a limit could not be read)", step=step)
    if predicted == measured:
        text = f"predicted {n(predicted)} ({cause}), as measured"
    else:
        diff = measured - predicted
        text = f"predicted {n(predicted)} ({cause}), measured {n(measured)} ({diff:+,})"
    return note("model", text, why, step=step)


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(str(v) for v in value)) + "}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {n(v) if isinstance(v, int) else v}" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return n(value)
    return str(value)


def passed(expectations: Iterable[Expectation]) -> bool:
    """Every check holds (notes do not count)."""
    return all(e.ok for e in expectations if e.ok is not None)


def tally(expectations: Collection[Expectation]) -> tuple[int, int]:
    """(checks that hold, checks)."""
    checks = [e for e in expectations if e.ok is not None]
    return sum(1 for e in checks if e.ok), len(checks)


# --- what the kernel hands out ------------------------------------------------------------------


def range_size(lo: int, hi: int) -> int:
    """Ports in the inclusive range lo-hi."""
    return max(0, hi - lo + 1)


def connect_ports(lo: int, hi: int, reserved: Iterable[int] = ()) -> tuple[int, int]:
    """(fewest, most) local ports Linux's connect() hands out from ``ip_local_port_range``
    lo-hi towards one destination (per source IP with IP_BIND_ADDRESS_NO_PORT).

    ``__inet_hash_connect`` (net/ipv4/inet_hashtables.c) searches ``remaining = hi + 1 - lo``
    ports rounded down to an even number (``remaining &= ~1``), from an even offset into the
    range, first the ports of ``lo``'s parity, then the others, wrapping by ``remaining``.
    With an even-sized range every search covers every port. With an odd-sized one, each
    search covers every port of the second parity but only ``remaining / 2`` of the
    ``remaining / 2 + 1`` ports of ``lo``'s parity: a search from offset 0 misses ``hi``,
    every other one misses ``lo``. Searches start from a perturbed offset that moves after
    each connect, so a run ends with all of the range or all but ``lo`` (or ``hi``) used.
    Measured on 6.18 in a namespace: 1024-5000 (3,977 ports) gave 3,977 in 8 runs of 10
    and 3,976 in 2; 1024-5001 always 3,978; 1024-1026 always 2. A program that binds every
    port itself (``--bind-mode explicit``) gets all of them. Reserved ports are skipped.
    """
    taken = set(reserved)
    usable = sum(1 for p in range(lo, hi + 1) if p not in taken)
    size = range_size(lo, hi)
    if size <= 1 or size % 2 == 0:
        return usable, usable
    if size == 3:
        return usable - 1, usable - 1  # remaining 2: one port per parity, hi never searched
    return usable - 1, usable


def odd_range_misses(lo: int, hi: int) -> frozenset[int]:
    """The ports connect() may leave unused in a range of ``lo``-``hi`` (at most one of them
    is left unused in one run; see :func:`connect_ports`)."""
    size = range_size(lo, hi)
    if size <= 1 or size % 2 == 0:
        return frozenset()
    if size == 3:
        return frozenset({hi})
    return frozenset({lo, hi})
