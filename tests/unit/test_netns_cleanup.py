"""Cleanup planning (pure), the run registry and pid liveness."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conncap.netns.cleanup import plan_cleanup
from conncap.netns.registry import Registry, RunRecord, process_alive, process_start


def _rec(runid: str, pid: int, *roles: str) -> RunRecord:
    return RunRecord(runid, pid, None, 0.0, tuple(f"conncap-{runid}-{r}" for r in roles))


LIVE, DEAD = 100, 200


def _alive(rec: RunRecord) -> bool:
    return rec.pid == LIVE


def test_dead_runs_are_removed_live_runs_kept() -> None:
    plan = plan_cleanup(
        ["conncap-aaaaaa-cli", "conncap-aaaaaa-srv", "conncap-bbbbbb-cli", "mine", "other-ns"],
        ["lo", "eth0"],
        [_rec("aaaaaa", DEAD, "cli", "srv"), _rec("bbbbbb", LIVE, "cli")],
        _alive,
    )
    assert [lo.name for lo in plan.remove] == ["conncap-aaaaaa-cli", "conncap-aaaaaa-srv"]
    assert "pid 200 is gone" in plan.remove[0].why
    assert [lo.name for lo in plan.keep] == ["conncap-bbbbbb-cli"]
    assert "still running" in plan.keep[0].why
    assert plan.forget == ("aaaaaa",)
    assert not plan.empty


def test_live_run_keeps_a_namespace_it_has_not_listed_yet() -> None:
    plan = plan_cleanup(
        ["conncap-bbbbbb-new"], [], [_rec("bbbbbb", LIVE, "cli")], _alive, remove_unrecorded=True
    )
    assert plan.remove == () and [lo.name for lo in plan.keep] == ["conncap-bbbbbb-new"]


def test_unrecorded_namespaces_need_all() -> None:
    plan = plan_cleanup(["conncap-cccccc-cli"], [], [], _alive)
    assert plan.remove == () and "--all" in plan.keep[0].why
    assert plan.empty
    plan = plan_cleanup(
        ["conncap-cccccc-cli", "conncap-weird"], [], [], _alive, remove_unrecorded=True
    )
    assert [lo.name for lo in plan.remove] == ["conncap-cccccc-cli", "conncap-weird"]


def test_stray_veths_of_dead_runs() -> None:
    plan = plan_cleanup(
        [],
        ["eth0", "ccaaaaaaa0", "ccbbbbbbb3", "ccddddddb1"],
        [_rec("aaaaaa", DEAD), _rec("bbbbbb", LIVE)],
        _alive,
    )
    assert [lo.name for lo in plan.remove_links] == ["ccaaaaaaa0"]
    plan = plan_cleanup([], ["ccddddddb1"], [], _alive, remove_unrecorded=True)
    assert [lo.name for lo in plan.remove_links] == ["ccddddddb1"]


def test_records_of_dead_runs_without_namespaces_are_forgotten() -> None:
    plan = plan_cleanup([], [], [_rec("aaaaaa", DEAD, "cli")], _alive)
    assert plan.forget == ("aaaaaa",) and plan.remove == ()


def test_registry_round_trip(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "runs")
    rec = RunRecord.for_this_process("abcdef").with_namespaces(("conncap-abcdef-cli",))
    reg.write(rec)
    assert reg.records() == ([rec], [])
    (tmp_path / "runs" / "junk.json").write_text("{not json")
    records, bad = reg.records()
    assert records == [rec] and len(bad) == 1 and "junk.json" in bad[0]
    reg.forget("abcdef")
    assert not reg.path("abcdef").exists()
    assert list((tmp_path / "runs").glob(".*")) == []  # no temp files left


def test_registry_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNCAP_RUN_DIR", str(tmp_path))
    assert Registry().directory == tmp_path


def test_process_liveness() -> None:
    me = os.getpid()
    start = process_start(me)
    assert start is not None
    assert process_alive(me, start)
    assert not process_alive(me, start + 1)  # same pid, other process (recycled)
    child = subprocess.Popen(["true"])
    child.wait()
    assert not process_alive(child.pid, None)


def test_process_start_parses_odd_command_names(tmp_path: Path) -> None:
    fields = ["S"] + [str(i) for i in range(4, 30)]
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(f"42 (a) b (c) {' '.join(fields)}\n")
    assert process_start(42, tmp_path) == 22
    (tmp_path / "42" / "stat").write_text(f"42 (zombie) Z {' '.join(fields[1:])}\n")
    assert process_start(42, tmp_path) is None


def test_cleanup_command_needs_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conncap.cli import main

    monkeypatch.setattr("conncap.commands.cleanup.os.geteuid", lambda: 1000)
    assert main(["cleanup"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("conncap: cleanup deletes network namespaces, which needs root")
    assert err.count("\n") == 1


def test_all_keeps_an_unrecorded_namespace_a_live_process_uses() -> None:
    """A live run whose record is in another CONNCAP_RUN_DIR: --all never touches it."""
    plan = plan_cleanup(
        ["conncap-dddddd-cli", "conncap-eeeeee-cli"],
        ["ccdddddda0", "cceeeeeea0"],
        [],
        _alive,
        remove_unrecorded=True,
        occupied={"conncap-dddddd-cli": "pid 7 runs in it (parent 6 is alive)"},
    )
    assert [lo.name for lo in plan.remove] == ["conncap-eeeeee-cli"]
    assert [lo.name for lo in plan.keep] == ["conncap-dddddd-cli"]
    assert "pid 7 runs in it" in plan.keep[0].why
    assert [lo.name for lo in plan.remove_links] == ["cceeeeeea0"]
