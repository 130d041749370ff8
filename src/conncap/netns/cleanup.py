"""What ``conncap cleanup`` removes: namespaces (and any stray veth) left by runs that died.

:func:`plan_cleanup` is a pure function of what exists, what the registry says and which
runs are alive; :func:`carry_out` does it. A namespace of a run that is still running is
never touched. A ``conncap-*`` namespace no record names is removed only with ``--all``.
Processes still inside a leftover namespace were started there by conncap; they are ended by
pid (SIGTERM, then SIGKILL) before the namespace is deleted, or it would live on unnamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from conncap.errors import RunFailed
from conncap.netns import reaper
from conncap.netns.iproute import Shell
from conncap.netns.naming import PREFIX, parse_namespace, veth_runid
from conncap.netns.registry import Registry, RunRecord, process_alive


@dataclass(frozen=True)
class Leftover:
    name: str
    why: str


@dataclass(frozen=True)
class CleanupPlan:
    remove: tuple[Leftover, ...] = ()
    """Namespaces to delete."""
    remove_links: tuple[Leftover, ...] = ()
    """conncap veths found in this (the host's) namespace, which no run should leave."""
    keep: tuple[Leftover, ...] = ()
    """conncap namespaces left alone, with why."""
    forget: tuple[str, ...] = ()
    """Run ids whose records go (their run is dead)."""
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (self.remove or self.remove_links or self.forget)


def plan_cleanup(
    namespaces: Iterable[str],
    links: Iterable[str],
    records: Iterable[RunRecord],
    alive: Callable[[RunRecord], bool],
    *,
    remove_unrecorded: bool = False,
    occupied: Mapping[str, str] | None = None,
) -> CleanupPlan:
    """Decide what to remove. Pure: everything it knows is passed in. ``occupied``: namespaces
    a live process still uses (why, in words): kept even with ``--all``, since the run that
    made them may keep its record in another directory (``CONNCAP_RUN_DIR``)."""
    occupied = occupied or {}
    existing = [n for n in namespaces if n.startswith(PREFIX)]
    live: dict[str, RunRecord] = {}
    dead: dict[str, RunRecord] = {}
    for record in records:
        (live if alive(record) else dead)[record.runid] = record
    remove: list[Leftover] = []
    keep: list[Leftover] = []
    for name in existing:
        parsed = parse_namespace(name)
        runid = parsed[0] if parsed else None
        owner = next((r for r in live.values() if name in r.namespaces), None)
        if owner is None and runid is not None:
            owner = live.get(runid)
        if owner is not None:
            keep.append(Leftover(name, f"run {owner.runid} (pid {owner.pid}) is still running"))
            continue
        rec = next((r for r in dead.values() if name in r.namespaces), None)
        if rec is None and runid is not None:
            rec = dead.get(runid)
        if rec is not None:
            remove.append(Leftover(name, f"run {rec.runid}: pid {rec.pid} is gone"))
        elif name in occupied:
            keep.append(Leftover(name, f"no record here, but {occupied[name]}: kept"))
        elif remove_unrecorded:
            remove.append(Leftover(name, "no record of the run that made it (--all)"))
        else:
            keep.append(
                Leftover(
                    name, "no record of the run that made it; `conncap cleanup --all` removes it"
                )
            )
    stray: list[Leftover] = []
    in_use = {p[0] for n in occupied if (p := parse_namespace(n)) is not None}
    for link in links:
        rid = veth_runid(link)
        if rid is None or rid in live or rid in in_use:
            continue
        if rid in dead or remove_unrecorded:
            stray.append(Leftover(link, f"veth of run {rid}, left in this namespace"))
    return CleanupPlan(tuple(remove), tuple(stray), tuple(keep), tuple(sorted(dead)))


def _other_live_records(registry: Registry) -> list[RunRecord]:
    """Live runs recorded in the other places a run may keep its record (another user's
    or session's ``CONNCAP_RUN_DIR`` default): their namespaces are never ours to remove."""
    import os
    import tempfile
    from pathlib import Path

    dirs = {Path("/run/conncap"), Path(tempfile.gettempdir()) / f"conncap-{os.getuid()}"}
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        dirs.add(Path(xdg) / "conncap")
    out: list[RunRecord] = []
    for d in dirs - {registry.directory}:
        records, _ = Registry(d).records()
        out.extend(r for r in records if process_alive(r.pid, r.pid_start))
    return out


def occupied_namespaces(names: Iterable[str]) -> dict[str, str]:
    """Namespaces with a process inside whose parent lives outside it: the run that made
    them is alive (its workers die with it: PR_SET_PDEATHSIG), wherever its record is."""
    from pathlib import Path

    from conncap.netns.registry import process_start

    out: dict[str, str] = {}
    for name, pids in reaper.pids_in(names).items():
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid > 1 and process_start(ppid) is not None and ppid not in pids:
                out[name] = f"pid {pid} runs in it (parent {ppid} is alive)"
                break
    return out


def survey(shell: Shell, registry: Registry, *, remove_unrecorded: bool = False) -> CleanupPlan:
    """Look at this machine and plan."""
    records, bad = registry.records()
    records = [*records, *_other_live_records(registry)]
    namespaces = shell.list_namespaces()
    occupied: dict[str, str] = {}
    if remove_unrecorded:
        recorded = {n for r in records for n in r.namespaces}
        occupied = occupied_namespaces(
            n for n in namespaces if n.startswith(PREFIX) and n not in recorded
        )
    plan = plan_cleanup(
        namespaces,
        shell.list_links(),
        records,
        lambda r: process_alive(r.pid, r.pid_start),
        remove_unrecorded=remove_unrecorded,
        occupied=occupied,
    )
    if bad:
        plan = CleanupPlan(plan.remove, plan.remove_links, plan.keep, plan.forget, tuple(bad))
    return plan


def carry_out(
    plan: CleanupPlan, shell: Shell, registry: Registry, *, dry_run: bool
) -> tuple[list[str], list[str]]:
    """Do the plan (or, with ``dry_run``, say what it would do). Returns one line per action
    and one line per thing that could not be removed."""
    verb = "would remove" if dry_run else "removed"
    lines: list[str] = []
    failed: list[str] = []
    names = [lo.name for lo in plan.remove]
    inside = reaper.pids_in(names) if names else {}
    for lo in plan.remove:
        pids = inside.get(lo.name, [])
        if pids and not dry_run:
            reaper.terminate({lo.name: pids})
        ended = ""
        if pids:
            ended = f"; {'would end' if dry_run else 'ended'} pids {', '.join(map(str, pids))}"
        if not dry_run:
            try:
                shell._ip("netns", "del", lo.name)
            except RunFailed as exc:
                failed.append(f"{lo.name}: {exc}")
                continue
        lines.append(f"{verb} namespace {lo.name} ({lo.why}{ended})")
    for lo in plan.remove_links:
        if not dry_run:
            try:
                shell._ip("link", "del", lo.name)
            except RunFailed as exc:
                failed.append(f"{lo.name}: {exc}")
                continue
        lines.append(f"{verb} link {lo.name} ({lo.why})")
    if not dry_run and not failed:
        for runid in plan.forget:
            registry.forget(runid)
    lines.extend(f"kept namespace {lo.name} ({lo.why})" for lo in plan.keep)
    lines.extend(plan.notes)
    return lines, failed
