"""The run registry: one small JSON file per live topology saying which namespaces it made and
which process made them, so ``conncap cleanup`` can remove what a killed run left behind.

A run writes its record *before* it creates a namespace, so every conncap namespace is named
by some record; writes are atomic (a reader sees the old file or the new one).

Directory: ``$CONNCAP_RUN_DIR`` if set, ``/run/conncap`` for root, else
``$XDG_RUNTIME_DIR/conncap``, else ``/tmp/conncap-<uid>``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conncap.netns.naming import check_runid
from conncap.result import JsonValue

SCHEMA = "conncap.netns-run/1"


def default_dir() -> Path:
    """Where records live (see the module docstring for the order)."""
    override = os.environ.get("CONNCAP_RUN_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/conncap")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "conncap"
    return Path(tempfile.gettempdir()) / f"conncap-{os.getuid()}"


def process_start(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None
    if the process is gone or a zombie. Guards against a recycled pid."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rfind(")") + 2 :].split()
    if len(rest) < 20 or rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def process_alive(pid: int, start: int | None, proc: Path = Path("/proc")) -> bool:
    """True if ``pid`` runs and (when ``start`` is known) is the same process as recorded."""
    now = process_start(pid, proc)
    if now is None:
        return False
    return start is None or now == start


@dataclass(frozen=True)
class RunRecord:
    """What one topology made: its run id, its process and its namespace names."""

    runid: str
    pid: int
    pid_start: int | None
    created: float
    namespaces: tuple[str, ...] = field(default=())

    @classmethod
    def for_this_process(cls, runid: str) -> RunRecord:
        pid = os.getpid()
        return cls(check_runid(runid), pid, process_start(pid), time.time())

    def with_namespaces(self, names: tuple[str, ...]) -> RunRecord:
        return RunRecord(self.runid, self.pid, self.pid_start, self.created, names)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "schema": SCHEMA,
            "runid": self.runid,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "created": self.created,
            "namespaces": list(self.namespaces),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunRecord:
        # json.loads's value: every field is converted here; a bad one raises for the caller
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} record")
        start = doc.get("pid_start")
        return cls(
            runid=check_runid(str(doc["runid"])),
            pid=int(doc["pid"]),
            pid_start=None if start is None else int(start),
            created=float(doc.get("created", 0.0)),
            namespaces=tuple(str(n) for n in doc.get("namespaces", [])),
        )


class Registry:
    """Reads and writes run records in one directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_dir()

    def path(self, runid: str) -> Path:
        return self.directory / f"{check_runid(runid)}.json"

    def write(self, record: RunRecord) -> None:
        """Atomically replace the record of ``record.runid``."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{record.runid}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record.to_json(), fh)
                fh.write("\n")
            os.replace(tmp, self.path(record.runid))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def forget(self, runid: str) -> None:
        self.path(runid).unlink(missing_ok=True)

    def records(self) -> tuple[list[RunRecord], list[str]]:
        """All readable records, and one line per file that could not be read."""
        out: list[RunRecord] = []
        bad: list[str] = []
        if not self.directory.is_dir():
            return out, bad
        for p in sorted(self.directory.glob("*.json")):
            try:
                out.append(RunRecord.from_json(json.loads(p.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                bad.append(f"{p}: unreadable run record ({exc})")
        return out, bad
