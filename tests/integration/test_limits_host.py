"""``conncap limits`` on THIS machine, cross-checked against the system's own tools:
``sysctl -n``, ``ulimit`` (via ``sh -c``), ``getconf``, ``ip addr``, ``ss -s`` and /proc.

Reads only; changes nothing. Linux only (the other readers are tested on recordings).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conncap.cli import main
from conncap.limits import _linux

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="cross-checks Linux tools"
)

TIMEOUT = 60


def _out(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"needs `{argv[0]}`")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise LookupError(done.stderr.strip())
    return done.stdout.strip()


def _conncap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conncap", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def facts() -> dict[str, dict[str, Any]]:
    done = _conncap("limits", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "conncap.limits/1" and doc["os"] == "linux"
    facts: dict[str, dict[str, Any]] = doc["facts"]
    return facts


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split()]


@pytest.mark.parametrize(
    ("fact", "key"),
    [
        ("port_range", "net.ipv4.ip_local_port_range"),
        ("somaxconn", "net.core.somaxconn"),
        ("tcp_max_syn_backlog", "net.ipv4.tcp_max_syn_backlog"),
        ("files_max", "fs.file-max"),
        ("nofile_max", "fs.nr_open"),
        ("tcp_tw_reuse", "net.ipv4.tcp_tw_reuse"),
        ("tcp_max_tw_buckets", "net.ipv4.tcp_max_tw_buckets"),
        ("tcp_fin_timeout", "net.ipv4.tcp_fin_timeout"),
        ("tcp_rmem", "net.ipv4.tcp_rmem"),
        ("tcp_wmem", "net.ipv4.tcp_wmem"),
        ("conntrack_max", "net.netfilter.nf_conntrack_max"),
    ],
)
def test_sysctls_match_sysctl_n(facts: dict[str, dict[str, Any]], fact: str, key: str) -> None:
    try:
        expected = _ints(_out("sysctl", "-n", key))
    except LookupError:
        assert facts[fact]["status"] == "unknown"
        if fact == "conntrack_max":
            assert facts[fact]["reason"] == "nf_conntrack not loaded"
        return
    value = facts[fact]["value"]
    assert (value if isinstance(value, list) else [value]) == expected
    assert facts[fact]["source"] == f"sysctl {key}"


def test_reserved_ports_match_sysctl(facts: dict[str, dict[str, Any]]) -> None:
    raw = _out("sysctl", "-n", "net.ipv4.ip_local_reserved_ports")
    expected = []
    for part in filter(None, raw.split(",")):
        lo, _, hi = part.partition("-")
        expected.append([int(lo), int(hi or lo)])
    assert facts["reserved_ports"]["value"] == expected


def test_tcp_mem_is_pages_times_getconf_pagesize(facts: dict[str, dict[str, Any]]) -> None:
    pages = _ints(_out("sysctl", "-n", "net.ipv4.tcp_mem"))
    page = int(_out("getconf", "PAGESIZE"))
    assert facts["tcp_mem"]["value"] == [p * page for p in pages]
    assert facts["extra.page_size"]["value"] == page


def _ulimit(flag: str) -> int | None:
    text = _out("sh", "-c", f"ulimit {flag}")
    return None if text == "unlimited" else int(text)


def _check_rlimit(fact: dict[str, Any], expected: int | None) -> None:
    if expected is None:
        assert fact["value"] is None and fact["reason"].startswith("no limit")
    else:
        assert fact["value"] == expected


def test_nofile_matches_ulimit(facts: dict[str, dict[str, Any]]) -> None:
    _check_rlimit(facts["nofile_soft"], _ulimit("-n"))
    _check_rlimit(facts["nofile_hard"], _ulimit("-Hn"))


def test_nproc_matches_ulimit(facts: dict[str, dict[str, Any]]) -> None:
    flag = "-p" if Path(shutil.which("sh") or "").resolve().name == "dash" else "-u"
    _check_rlimit(facts["nproc_soft"], _ulimit(flag))
    _check_rlimit(facts["nproc_hard"], _ulimit(f"-H{flag[1:]}"))


def test_can_raise_matches_capeff_and_setrlimit(facts: dict[str, dict[str, Any]]) -> None:
    cap_eff = re.search(r"^CapEff:\s*([0-9a-f]+)", Path("/proc/self/status").read_text(), re.M)
    assert cap_eff is not None
    can = bool(int(cap_eff.group(1), 16) >> 24 & 1)  # CAP_SYS_RESOURCE
    assert facts["nofile_can_raise"]["value"] is can
    # And the kernel agrees: a child tries to raise its own hard limit by one.
    hard = facts["nofile_hard"]["value"]
    if hard is None or hard >= facts["nofile_max"]["value"]:
        pytest.skip("hard limit already at fs.nr_open: raising it fails with or without the cap")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource as r; s, h = r.getrlimit(r.RLIMIT_NOFILE); "
            "r.setrlimit(r.RLIMIT_NOFILE, (s, h + 1))",
        ],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert (probe.returncode == 0) is can


def test_memory_matches_proc_meminfo(facts: dict[str, dict[str, Any]]) -> None:
    total_kb = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    assert total_kb is not None
    assert facts["mem_total"]["value"] == int(total_kb.group(1)) * 1024
    assert 0 < facts["mem_available"]["value"] <= facts["mem_total"]["value"]


def test_cgroup_facts_say_what_their_source_file_says(facts: dict[str, dict[str, Any]]) -> None:
    for name in ("cgroup_mem_limit", "cgroup_pids_max"):
        fact = facts[name]
        source = Path(fact["source"])
        if not fact["source"].startswith("/sys/fs/cgroup/"):
            assert fact["status"] == "unknown"  # no such controller here: said why
            continue
        if fact["status"] == "known":
            assert int(source.read_text()) == fact["value"]
        else:
            assert fact["reason"].startswith("no limit")
            if source.exists():
                raw = source.read_text().strip()
                assert raw == "max" or int(raw) >= 1 << 62


def _ip_addrs() -> set[tuple[str, int, str]]:
    found = set()
    for line in _out("ip", "-o", "addr", "show").splitlines():
        m = re.search(r"\binet6? (\S+)/(\d+) .*scope (\w+)", line)
        if m:
            found.add((m.group(1), int(m.group(2)), m.group(3)))
    return found


def test_source_addresses_match_ip_addr(facts: dict[str, dict[str, Any]]) -> None:
    assert "127.0.0.0/8" in facts["source_addresses"]["value"] or not any(
        a == ("127.0.0.1", 8, "host") for a in _ip_addrs()
    )
    # Other tests may add or remove addresses meanwhile: check those present before and after.
    before = _ip_addrs()
    listed = set(_linux.read().source_addresses.value or ())
    stable = before & _ip_addrs()
    for addr, prefix, scope in stable:
        if scope == "link":
            assert addr not in listed
        elif addr == "127.0.0.1" and prefix == 8:
            assert "127.0.0.0/8" in listed
        else:
            assert addr in listed


def test_cpu_count_and_release(facts: dict[str, dict[str, Any]]) -> None:
    assert facts["cpu_count"]["value"] == int(_out("getconf", "_NPROCESSORS_ONLN"))
    assert facts["os_release"]["value"] == _out("uname", "-r")


def _ss_summary() -> dict[str, int]:
    text = _out("ss", "-s")
    m = re.search(r"^Total:\s+(\d+)", text, re.MULTILINE)
    t = re.search(
        r"^TCP:\s+(\d+) \(estab \d+, closed \d+, orphaned (\d+), timewait (\d+)\)",
        text,
        re.MULTILINE,
    )
    row = re.search(r"^TCP\s+(\d+)\s+(\d+)\s+(\d+)", text, re.MULTILINE)
    assert m and t and row, text
    return {
        "total": int(m.group(1)),
        "tcp": int(t.group(1)),
        "orphaned": int(t.group(2)),
        "timewait": int(t.group(3)),
        "ip": int(row.group(2)),
        "ipv6": int(row.group(3)),
    }


def test_sockstat_matches_ss_s() -> None:
    """``ss -s`` reads /proc/net/sockstat too: its TCP total is alloc + tw (iproute2's
    print_summary), its TCP row's IP column is inuse and IPv6 column sockstat6's inuse.

    Other processes open and close sockets meanwhile: compare only when ``ss -s`` printed the
    same before and after our read. psutil.net_if_addrs() opens sockets whose release the
    kernel counts later, so this read leaves the addresses out."""
    quiet = replace(_linux.LinuxSource(), addresses=dict)
    for _ in range(10):
        before = _ss_summary()
        h = _linux.read(quiet)
        after = _ss_summary()
        if before == after:
            break
    else:
        pytest.skip("socket counts kept changing (other processes busy); nothing stable to compare")
    s = h.sockstat.value
    assert s is not None
    assert s.sockets_used == before["total"]
    assert s.tcp_alloc + s.tcp_tw == before["tcp"]
    assert s.tcp_orphan == before["orphaned"]
    assert s.tcp_tw == before["timewait"]
    assert s.tcp_inuse == before["ip"]
    assert h.extra["tcp6_inuse"].value == before["ipv6"]


def test_cli_table_shows_three_groups(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps to 80 columns when not on a terminal
    assert main(["limits"]) == 0
    out = capsys.readouterr().out
    for group in ("client side", "server side", "system"):
        assert group in out
    assert "connections per (source IP, destination ip:port)" in out


def test_bad_flag_is_usage_error_in_one_line() -> None:
    done = _conncap("limits", "--bogus")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--bogus" in lines[0]
    assert "Traceback" not in done.stderr
