"""Reading ``conncap.result/1``: the changes that make a /1 document a /2 one.

/1 did not always say whose limit a ceiling was (``open``'s ceiling, older ``run`` steps), and
``open`` and a scenario without steps wrote ceilings with fewer keys. Here a missing ``side``
is derived from the catalogue (:func:`side_of_cause`), a missing knob, advice and Windows line
come from the catalogue for the document's OS, the other missing ceiling keys are null, and a
missing ``command`` is inferred. Everything else of /1 is /2 already. Works on the raw JSON
before ``codec`` checks it, so it changes only what has the expected type and leaves the rest
for the codec to report.
"""

from __future__ import annotations

from collections.abc import Mapping

from conncap import catalogue
from conncap.catalogue import Cause
from conncap.errors import UsageError
from conncap.result.model import SCHEMA_V2, JsonValue, Side, advice_for

#: The ceiling keys /2 always writes.
CEILING_KEYS = (
    "reached",
    "count",
    "cause",
    "side",
    "errno",
    "op",
    "knob",
    "advice",
    "windows",
    "evidence",
)

#: A server's own resources: when the client's errno does not name them, the evidence that did
#: is the server's accept() errors (``analysis.attribute``).
_SERVER_RESOURCES = (Cause.FILE_DESCRIPTORS, Cause.SYSTEM_FILE_TABLE, Cause.MEMORY)

#: Causes no catalogued code maps to one side (or to any): where ``analysis.attribute`` puts them.
_SIDE_WITHOUT_CODE: dict[Cause, Side] = {
    Cause.SERVER_BACKLOG: "server",
    Cause.CONNTRACK: "network",
    Cause.NETWORK: "network",
    Cause.UNKNOWN: "unknown",
}


def side_of_cause(cause: str, errno: str | None = None, op: str | None = None) -> Side:
    """Whose limit a ceiling with this cause (and the errno and call it stopped on) is.

    The errno's catalogue entry decides when it names this cause (accept()'s resource errors
    are the server's). Otherwise the cause was inferred from other evidence: a server
    resource then came from the server's accept errors; any other cause takes the one side the
    catalogue gives every code of that cause, or where conncap attributes it."""
    try:
        known = Cause(cause)
    except ValueError:
        return "unknown"
    call = op or "connect"
    if errno:
        try:
            entry = catalogue.lookup(errno)
        except UsageError:
            entry = None
        if entry is not None and entry.cause_for(call) is known:
            if call == "accept" and known in _SERVER_RESOURCES:
                return "server"
            return entry.side
        if known in _SERVER_RESOURCES:
            return "server"
    sides = {e.side for e in catalogue.entries() if e.cause is known}
    if len(sides) == 1:
        return sides.pop()
    return _SIDE_WITHOUT_CODE.get(known, "unknown")


def upgrade_ceiling(ceiling: JsonValue, os_name: str | None) -> JsonValue:
    """A /1 ``ceiling`` object with every /2 key (what is not an object is left as it is)."""
    if not isinstance(ceiling, Mapping):
        return ceiling
    out = dict(ceiling)
    reached = out.get("reached") is True
    cause, errno, op = out.get("cause"), out.get("errno"), out.get("op")
    if reached and isinstance(cause, str) and not {"knob", "advice", "windows"} & out.keys():
        knob, commands, windows = advice_for(cause, os_name)
        out.update(knob=knob, advice=list(commands), windows=windows)
    if "side" not in out:
        out["side"] = (
            side_of_cause(
                cause,
                errno if isinstance(errno, str) else None,
                op if isinstance(op, str) else None,
            )
            if reached and isinstance(cause, str)
            else None
        )
    for key in CEILING_KEYS[1:]:  # without "reached": a ceiling that lacks it is damaged
        out.setdefault(key, [] if key == "advice" else None)
    return out


def infer_command(doc: Mapping[str, JsonValue]) -> str:
    """The command that wrote a /1 document that does not say."""
    if "scenario" in doc or "expectations" in doc:
        return "scenario"
    return "run" if "steps" in doc else "open"


def upgrade_v1(doc: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """A ``conncap.result/1`` document as ``conncap.result/2`` JSON."""
    out = dict(doc)
    out["schema"] = SCHEMA_V2
    host = out.get("host")
    os_value = host.get("os") if isinstance(host, Mapping) else None
    os_name = os_value if isinstance(os_value, str) else None
    out.setdefault("command", infer_command(doc))
    if "ceiling" in out:
        out["ceiling"] = upgrade_ceiling(out["ceiling"], os_name)
    steps = out.get("steps")
    if isinstance(steps, list):
        out["steps"] = [
            {**s, "ceiling": upgrade_ceiling(s["ceiling"], os_name)}
            if isinstance(s, Mapping) and "ceiling" in s
            else s
            for s in steps
        ]
    return out
