"""Shared test set-up: skip markers for namespace and browser tests, and leak checks."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _netns_missing() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root for `ip netns`"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def _browser_missing() -> str | None:
    if shutil.which("chromium") is None and not os.path.exists("/usr/bin/chromium"):
        return "needs Debian's chromium (scripts/install-test-deps installs it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    netns_reason = _netns_missing()
    browser_reason = _browser_missing()
    for item in items:
        if netns_reason and "netns" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=netns_reason))
        if browser_reason and "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=browser_reason))


def _conncap_namespaces() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith("conncap")}


@pytest.fixture(autouse=True, scope="session")
def _no_leaked_namespaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This session must leave no conncap namespace behind (STYLE.md: no leaks).

    Every run records itself in the registry before it creates a namespace, so the session
    gets a registry directory of its own (inherited by the ``conncap`` processes it starts):
    a record left there, or a namespace named by one, is this session's leak. Namespaces made
    by other processes on the machine meanwhile are not ours and are not counted."""
    run_dir = tmp_path_factory.mktemp("conncap-run-dir")
    previous = os.environ.get("CONNCAP_RUN_DIR")
    os.environ["CONNCAP_RUN_DIR"] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CONNCAP_RUN_DIR", None)
        else:
            os.environ["CONNCAP_RUN_DIR"] = previous
    records = sorted(p.stem for p in run_dir.glob("*.json"))
    leaked = sorted(
        ns for ns in _conncap_namespaces() if any(ns.startswith(f"conncap-{r}-") for r in records)
    )
    assert not records, f"tests left run records {records} (namespaces still there: {leaked})"
