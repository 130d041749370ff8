"""What ``conncap cleanup`` removes: namespaces (and any stray veth) left by runs that died.

:func:`plan_cleanup` is a pure function of what exists, what the registry says and which
runs are alive; :func:`carry_out` does it. A namespace of a run that is still running is
never touched. A ``conncap-*`` namespace no record names is removed only with ``--all``.
Processes still inside a leftover namespace were started there by conncap; they are ended by
pid (SIGTERM, then SIGKILL) before the namespace is deleted, or it would live on unnamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
) -> CleanupPlan:
    """Decide what to remove. Pure: everything it knows is passed in."""
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
        elif remove_unrecorded:
            remove.append(Leftover(name, "no record of the run that made it (--all)"))
        else:
            keep.append(
                Leftover(
                    name, "no record of the run that made it; `conncap cleanup --all` removes it"
                )
            )
    stray: list[Leftover] = []
    for link in links:
        rid = veth_runid(link)
        if rid is None or rid in live:
            continue
        if rid in dead or remove_unrecorded:
            stray.append(Leftover(link, f"veth of run {rid}, left in this namespace"))
    return CleanupPlan(tuple(remove), tuple(stray), tuple(keep), tuple(sorted(dead)))


def survey(shell: Shell, registry: Registry, *, remove_unrecorded: bool = False) -> CleanupPlan:
    """Look at this machine and plan."""
    records, bad = registry.records()
    plan = plan_cleanup(
        shell.list_namespaces(),
        shell.list_links(),
        records,
        lambda r: process_alive(r.pid, r.pid_start),
        remove_unrecorded=remove_unrecorded,
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
