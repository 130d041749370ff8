"""conncap.probes: parsers on recorded /proc excerpts, readers with injected roots, the Sampler,
and cross-checks against the system's own tools (ss -s, free -b, ps) on this host."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conncap import probes
from conncap.limits import SockStat

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "proc" / "linux-6.18"
PAGE = 4096
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _copy_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    shutil.copytree(RECORDED, root)
    return root


# --- recorded excerpt of Linux 6.18 (100 loopback connections open when recorded) ------------


def test_kernel_memory_from_recorded_slabinfo() -> None:
    km = probes.kernel_memory(str(RECORDED), page_size=PAGE)
    assert km.source == "slabinfo"
    # TCP line: 21 slabs of 8 pages; sock_inode_cache: 16 slabs of 4 pages
    assert km.caches["TCP"] == 21 * 8 * PAGE
    assert km.caches["sock_inode_cache"] == 16 * 4 * PAGE
    assert km.caches["dentry"] == 3274 * 1 * PAGE
    assert "kmalloc-192" not in km.caches  # shared with everything: not a connection cache
    assert km.tcp_slab_bytes == sum(km.caches.values())
    assert km.slab_bytes == 128588 * 1024  # meminfo Slab:
    assert km.unreclaimable_bytes == 36540 * 1024
    assert km.sock_mem_bytes == 380 * PAGE  # sockstat "TCP: ... mem 380"
    assert km.kernel_bytes == km.tcp_slab_bytes + km.sock_mem_bytes


def test_sockstat_netstat_conntrack_mem_available_recorded() -> None:
    root = str(RECORDED)
    assert probes.sockstat(root) == SockStat(
        tcp_inuse=202,
        tcp_orphan=0,
        tcp_tw=15000,
        tcp_alloc=202,
        tcp_mem_pages=380,
        sockets_used=215,
    )
    c = probes.netstat_counters(root)
    assert (c.active_opens, c.passive_opens, c.curr_estab, c.retrans_segs) == (
        53119,
        53102,
        200,
        3,
    )
    assert (c.listen_overflows, c.listen_drops, c.syn_retrans, c.tcp_timeouts) == (0, 0, 0, 2)
    assert c.abort_on_memory == 0
    ct = probes.conntrack(root)
    assert (ct.count, ct.max, ct.drop, ct.early_drop, ct.insert_failed) == (0, 262144, 0, 0, 0)
    assert probes.mem_available(root) == 24301688 * 1024


def test_slabinfo_unreadable_falls_back_to_meminfo() -> None:
    def reader(path: str) -> str:
        if path.endswith("/slabinfo"):
            raise PermissionError(13, "Permission denied")
        return probes.read_text(path)

    km = probes.kernel_memory(str(RECORDED), reader, page_size=PAGE)
    assert km.source == "meminfo"
    assert km.tcp_slab_bytes is None
    assert km.caches == {}
    assert km.kernel_bytes == 128588 * 1024 + 380 * PAGE


# --- hand-made excerpts: other kernels, non-zero counters -----------------------------------

NETSTAT_OLD = """TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts TCPAbortOnMemory
TcpExt: 0 17 19 5 2
IpExt: InNoRoutes InOctets
IpExt: 0 123
"""
SNMP = """Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts
Tcp: 1 200 120000 -1 40 30 3 1 12 999 998 7 0 4
"""  # noqa: E501


def test_netstat_counters_old_kernel_lacks_tcpsynretrans() -> None:
    c = probes.parse_netstat(NETSTAT_OLD, SNMP)
    assert c.listen_overflows == 17
    assert c.listen_drops == 19
    assert c.syn_retrans is None  # not in this kernel: unknown, not zero
    assert c.abort_on_memory == 2
    assert (c.active_opens, c.attempt_fails, c.estab_resets, c.curr_estab) == (40, 3, 1, 12)
    assert c.retrans_segs == 7


def test_nf_conntrack_stat_sums_hex_columns_over_cpus() -> None:
    text = (
        "entries  clashres found new drop early_drop insert_failed\n"
        "0000000a  00000000 00000001 00000000 000000ff 00000001 00000002\n"
        "0000000a  00000000 00000001 00000000 00000001 00000000 00000003\n"
    )
    stats = probes.parse_nf_conntrack_stat(text)
    assert stats["drop"] == 256
    assert stats["early_drop"] == 1
    assert stats["insert_failed"] == 5


def test_conntrack_module_not_loaded_is_all_none(tmp_path: Path) -> None:
    ct = probes.conntrack(str(tmp_path))
    assert ct == probes.Conntrack(None, None, None, None, None)


MALFORMED: list[tuple[str, str, Callable[[str], object]]] = [
    ("slabinfo, other version", "slabinfo - version: 1.1\nTCP 1 2 3\n", probes.parse_slabinfo),
    ("slabinfo, empty", "", probes.parse_slabinfo),
    (
        "slabinfo, truncated line",
        "slabinfo - version: 2.1\nTCP 273 273 2368 13 8 : tunables 0 0 0\n",
        probes.parse_slabinfo,
    ),
    (
        "slabinfo, not a number",
        "slabinfo - version: 2.1\nTCP 27x 273 2368 13 8 : tunables 0 0 0 : slabdata 21 21 0\n",
        probes.parse_slabinfo,
    ),
    ("meminfo, no value", "MemTotal:\nSlab: 10 kB\n", probes.parse_meminfo),
    ("meminfo, garbage", "MemTotal: lots kB\n", probes.parse_meminfo),
    ("sockstat, no TCP line", "sockets: used 3\nUDP: inuse 0 mem 0\n", probes.parse_sockstat),
    ("sockstat, cut TCP line", "TCP: inuse 3 orphan 0 tw\n", probes.parse_sockstat),
    (
        "sockstat, word for number",
        "TCP: inuse x orphan 0 tw 0 alloc 1 mem 1\n",
        probes.parse_sockstat,
    ),
    (
        "netstat, values do not match header",
        "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n",
        lambda t: probes.parse_netstat(t, SNMP),
    ),
    ("netstat, header without values", "TcpExt: A B\n", lambda t: probes.parse_netstat(t, SNMP)),
    ("netstat, no TcpExt", "IpExt: A\nIpExt: 1\n", lambda t: probes.parse_netstat(t, SNMP)),
    (
        "snmp, not an integer",
        "Tcp: A B\nTcp: 1 x\n",
        lambda t: probes.parse_netstat(NETSTAT_OLD, t),
    ),
    ("nf_conntrack, not hex", "entries drop\n0000000a zz\n", probes.parse_nf_conntrack_stat),
    ("nf_conntrack, short row", "entries drop\n0000000a\n", probes.parse_nf_conntrack_stat),
]


@pytest.mark.parametrize(("label", "text", "parse"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_excerpt_is_a_clear_probe_error(
    label: str, text: str, parse: Callable[[str], object]
) -> None:
    with pytest.raises(probes.ProbeError) as info:
        parse(text)
    message = str(info.value)
    assert "malformed" in message
    assert "\n" not in message


def test_malformed_file_names_its_path(tmp_path: Path) -> None:
    root = _copy_root(tmp_path)
    (root / "net" / "sockstat").write_text("TCP: inuse 3 orphan\n")
    with pytest.raises(probes.ProbeError, match=re.escape(f"{root}/net/sockstat: malformed")):
        probes.sockstat(str(root))
    (root / "sys" / "net" / "netfilter" / "nf_conntrack_max").write_text("many\n")
    with pytest.raises(probes.ProbeError, match="nf_conntrack_max: malformed"):
        probes.conntrack(str(root))


def test_missing_file_is_a_probe_error(tmp_path: Path) -> None:
    with pytest.raises(probes.ProbeError, match="net/sockstat: cannot read it"):
        probes.sockstat(str(tmp_path))
    with pytest.raises(probes.ProbeError, match="meminfo: cannot read it"):
        probes.mem_available(str(tmp_path))


def test_meminfo_without_memavailable(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemFree: 50 kB\nSlab: 3 kB\n")
    with pytest.raises(probes.ProbeError, match="no MemAvailable"):
        probes.mem_available(str(tmp_path))


# --- the Sampler ------------------------------------------------------------------------------


def _set_netstat(root: Path, overflows: int, drops: int, synretrans: int) -> None:
    path = root / "net" / "netstat"
    text = path.read_text()
    header, values = text.splitlines()[:2]
    names, nums = header.split()[1:], values.split()[1:]
    for name, value in (
        ("ListenOverflows", overflows),
        ("ListenDrops", drops),
        ("TCPSynRetrans", synretrans),
    ):
        nums[names.index(name)] = str(value)
    lines = text.splitlines()
    lines[1] = "TcpExt: " + " ".join(nums)
    path.write_text("\n".join(lines) + "\n")


def test_sampler_reports_counter_growth_and_the_timeline_keys(tmp_path: Path) -> None:
    root = _copy_root(tmp_path)
    clock = iter([100.0, 100.5, 101.0]).__next__
    sampler = probes.Sampler(root=str(root), clock=clock, page_size=PAGE)
    _set_netstat(root, 40, 41, 7)
    first = sampler.sample(held=0, rate=0.0, step="ports")
    _set_netstat(root, 55, 58, 9)
    second = sampler.sample(
        held=100, rate=200.0, failures=3, failures_by_cause={"timeout": 3}, step="ports"
    )
    for key in probes.SAMPLE_KEYS:
        assert key in first
    assert first["t"] == 0.5 and second["t"] == 1.0
    assert (first["listen_overflows"], first["listen_drops"], first["syn_retrans"]) == (0, 0, 0)
    assert (second["listen_overflows"], second["listen_drops"], second["syn_retrans"]) == (
        15,
        17,
        2,
    )
    assert second["held"] == 100 and second["failures_by_cause"] == {"timeout": 3}
    assert second["sock_inuse"] == 202 and second["sock_tw"] == 15000
    assert second["kernel_bytes"] == probes.kernel_memory(str(root), page_size=PAGE).kernel_bytes
    assert second["mem_available"] == 24301688 * 1024
    assert second["user_bytes_client"] is None  # no pids given: not measured
    assert sampler.kernel_source == "slabinfo"
    assert sampler.problems == {}
    assert sampler.cost.calls == 2 and sampler.cost.max_s > 0


def test_sampler_degrades_on_a_malformed_file(tmp_path: Path) -> None:
    root = _copy_root(tmp_path)
    sampler = probes.Sampler(root=str(root), page_size=PAGE)
    sampler.sample(held=0, rate=0.0)
    (root / "net" / "netstat").write_text("TcpExt: ListenOverflows\n")
    (root / "slabinfo").write_text("garbage\n")
    s = sampler.sample(held=10, rate=1.0)
    assert s["listen_overflows"] is None and s["syn_retrans"] is None
    assert s["kernel_bytes"] is None  # the series began with slabinfo: do not mix in meminfo
    assert s["slab_bytes"] == 128588 * 1024  # meminfo still read
    assert s["sock_inuse"] == 202
    assert "malformed" in sampler.problems["netstat"]
    assert "malformed" in sampler.problems["slabinfo"]


def test_sampler_reads_net_counters_from_another_root(tmp_path: Path) -> None:
    host = _copy_root(tmp_path)
    ns = tmp_path / "ns"
    (ns / "net").mkdir(parents=True)
    (ns / "net" / "sockstat").write_text(
        "sockets: used 4\nTCP: inuse 3 orphan 0 tw 0 alloc 3 mem 0\n"
    )
    (ns / "net" / "netstat").write_text("TcpExt: ListenOverflows ListenDrops\nTcpExt: 5 5\n")
    (ns / "net" / "snmp").write_text("Tcp: ActiveOpens CurrEstab\nTcp: 1 1\n")
    sampler = probes.Sampler(root=str(host), net_root=str(ns), page_size=PAGE)
    s = sampler.sample(held=0, rate=0.0)
    assert s["sock_inuse"] == 3  # the namespace's
    assert s["sock_mem_bytes"] == 380 * PAGE  # host-wide, from the host root
    assert s["listen_overflows"] == 0 and s["syn_retrans"] is None
    assert s["conntrack_count"] is None  # no nf_conntrack in that namespace
    assert sampler.problems == {}


# --- this host, compared with the system's own tools -----------------------------------------


@pytest.fixture
def loopback_pairs() -> Iterator[list[socket.socket]]:
    """A listener on 127.0.0.1 port 0 and 20 connected pairs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks = [listener]
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        for _ in range(20):
            c = socket.create_connection(listener.getsockname(), timeout=5)
            s, _ = listener.accept()
            socks += (c, s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _agree(
    read: Callable[[], tuple[int, ...]], tool: Callable[[], tuple[int, ...]], names: tuple[str, ...]
) -> None:
    """Each of our fields equals the tool's in some attempt where ours did not change around the
    tool's read. Other processes open and close sockets all the time (alloc is host-wide), so
    one attempt may see them move; a field that never matches over 5 stable reads is a bug."""
    matched: set[int] = set()
    stable: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for _ in range(40):
        before, theirs, after = read(), tool(), read()
        for i in range(len(names)):
            if before[i] == after[i] == theirs[i]:
                matched.add(i)
        if before == after:
            stable.append((before, theirs))
        if len(matched) == len(names):
            return
    missing = [names[i] for i in range(len(names)) if i not in matched]
    if len(stable) < 5:
        pytest.skip(f"sockets changed during every read; {missing} could not be compared")
    pytest.fail(f"{missing} never agreed with the tool; (ours, theirs): {stable[:3]}")


@linux_only
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs iproute2's ss")
def test_sockstat_and_curr_estab_agree_with_ss(loopback_pairs: list[socket.socket]) -> None:
    def ss_summary() -> tuple[int, int, int, int]:
        out = subprocess.run(["ss", "-s"], capture_output=True, text=True, check=True).stdout
        m = re.search(
            r"TCP:\s+(\d+) \(estab (\d+), closed \d+, orphaned (\d+), timewait (\d+)\)", out
        )
        assert m, out
        total, estab, orphaned, timewait = (int(g) for g in m.groups())
        return total, estab, orphaned, timewait

    def ours() -> tuple[int, int, int, int]:
        st = probes.sockstat()
        estab = probes.netstat_counters().curr_estab
        assert estab is not None
        # iproute2 misc/ss.c print_summary(): "TCP: %d" is sockstat alloc + tw
        return st.tcp_alloc + st.tcp_tw, estab, st.tcp_orphan, st.tcp_tw

    assert ours()[1] >= 40  # our 20 pairs are 40 ESTABLISHED sockets
    _agree(ours, ss_summary, ("alloc+tw/total", "CurrEstab/estab", "orphan", "tw/timewait"))


@linux_only
@pytest.mark.skipif(shutil.which("free") is None, reason="needs procps' free")
def test_mem_available_agrees_with_free() -> None:
    def free_available() -> int:
        out = subprocess.run(["free", "-b"], capture_output=True, text=True, check=True).stdout
        header = out.splitlines()[0].split()
        mem = next(line for line in out.splitlines() if line.startswith("Mem:")).split()
        return int(mem[1 + header.index("available")])

    before = probes.mem_available()
    theirs = free_available()
    after = probes.mem_available()
    slack = 64 * 1024 * 1024  # other processes allocate between the three reads
    assert min(before, after) - slack <= theirs <= max(before, after) + slack


@linux_only
def test_kernel_memory_of_this_host_is_readable() -> None:
    km = probes.kernel_memory()
    assert km.slab_bytes > 0
    if os.access("/proc/slabinfo", os.R_OK):
        assert km.source == "slabinfo"
        assert km.caches.get("TCP", 0) > 0 or km.caches.get("TCPv6", 0) > 0
    else:
        assert km.source == "meminfo"


@linux_only
def test_process_memory_matches_ps_and_sees_an_allocation() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; b = bytearray(64 * 1024 * 1024); print('ready', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        pm = probes.process_memory([child.pid])
        ps = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(child.pid)], capture_output=True, text=True, check=True
        )
        ps_rss = int(ps.stdout.strip()) * 1024
        assert abs(pm.rss - ps_rss) <= max(2 * 1024 * 1024, ps_rss // 20)
        assert pm.rss >= 64 * 1024 * 1024
        if pm.method == "uss":
            assert pm.uss is not None and pm.uss >= 60 * 1024 * 1024
            assert pm.bytes == pm.uss
        rss_only = probes.process_memory([child.pid], uss=False)
        assert rss_only.method == "rss" and rss_only.uss is None
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    gone = probes.process_memory([child.pid])
    assert gone.gone == (child.pid,) and gone.rss == 0


@linux_only
@pytest.mark.netns
def test_netns_reader_reads_the_namespace_not_the_host(
    loopback_pairs: list[socket.socket],
) -> None:
    name = f"conncap-test-probes-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        reader = probes.netns_reader(name)
        inside = probes.sockstat(reader=reader)
        assert inside.tcp_inuse == 0  # a new namespace has no TCP sockets
        assert probes.sockstat().tcp_inuse >= 41  # the host has our listener and 40 sockets
        counters = probes.netstat_counters(reader=reader)
        assert counters.curr_estab == 0
        sampler = probes.Sampler(net_reader=reader)
        assert sampler.sample(held=0, rate=0.0)["sock_inuse"] == 0
        with pytest.raises(probes.ProbeError, match="cannot read it"):
            probes.sockstat(reader=probes.netns_reader(name + "-absent"))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
