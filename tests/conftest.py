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
def _no_leaked_namespaces() -> Iterator[None]:
    """The whole session must leave no conncap namespace behind (STYLE.md: no leaks)."""
    before = _conncap_namespaces()
    yield
    leaked = _conncap_namespaces() - before
    assert not leaked, f"tests leaked network namespaces: {sorted(leaked)}"
