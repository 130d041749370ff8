"""conncap.run.ports: /proc/net/tcp parsing, listeners in the range, the port account, and
picking server ports outside the range (with a fake bind: no real port is touched)."""

from __future__ import annotations

import socket

from conncap.run import ports as pm

# Recorded on Linux 6.18 (trimmed): a listener on 127.0.0.1:41000 (0xA028), a connection
# 127.0.0.1:40000 -> 127.0.0.1:61000 (0x9C40 -> 0xEE48) and its server end, a TIME_WAIT.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A028 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
   1: 0100007F:9C40 0100007F:EE48 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0
   2: 0100007F:EE48 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0
   3: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 03:00000F9E 00000000     0        0 0 3 0
   4: garbage
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000001000000:9C42 00000000000000000000000000000000:0000 0A 00000000
"""


def test_parse_proc_net_tcp_v4_and_v6() -> None:
    rows = pm.parse_proc_net_tcp(TCP)
    assert len(rows) == 4  # the garbage line is skipped
    assert rows[0] == pm.SocketRow("127.0.0.1", 41000, "0.0.0.0", 0, pm.TCP_LISTEN)
    assert rows[1].local_port == 40000 and rows[1].remote_port == 61000
    assert rows[3].state == 0x06
    (v6,) = pm.parse_proc_net_tcp(TCP6)
    assert v6.local_ip == "::1" and v6.local_port == 40002 and v6.state == pm.TCP_LISTEN


def test_read_sockets_uses_the_reader_and_skips_missing_files() -> None:
    def reader(path: str) -> str:
        if path.endswith("tcp6"):
            raise FileNotFoundError(path)
        assert path == "/x/net/tcp"
        return TCP

    assert len(pm.read_sockets("/x", reader)) == 4


def test_listeners_in_range_counts_only_listening_ports_inside_it() -> None:
    rows = pm.parse_proc_net_tcp(TCP) + pm.parse_proc_net_tcp(TCP6)
    assert pm.listeners_in_range(rows, (40000, 40499)) == {40002}
    assert pm.listeners_in_range(rows, (40000, 41000)) == {40002, 41000}
    assert pm.listeners_in_range(rows, (40000, 41000), frozenset({41000})) == {40002}


def test_port_gap_accounts_for_every_port() -> None:
    rows = pm.parse_proc_net_tcp(TCP) + pm.parse_proc_net_tcp(TCP6)
    gap = pm.port_gap(rows, (40000, 40004), frozenset({40004}), [("127.0.0.1", 61000)])
    assert (gap.usable, gap.ours, gap.listening, gap.other_sockets) == (4, 1, 1, 1)
    assert gap.unseen == 1  # 40003: no socket listed
    assert gap.missing == 3
    text = gap.explain()
    assert text.startswith("3 ports of the range were not free for this destination")
    assert "1 had a listening socket" in text and "1 no socket listed" in text


def test_port_gap_with_every_port_used() -> None:
    rows = pm.parse_proc_net_tcp(TCP)
    gap = pm.port_gap(rows, (40000, 40000), frozenset(), [("127.0.0.1", 61000)])
    assert gap.missing == 0
    assert gap.explain() == "every usable port of the range was used"


def test_pick_ports_outside_skips_taken_and_in_range_ports() -> None:
    tried: list[int] = []

    def fake_bind(s: socket.socket, addr: tuple[str, int]) -> None:
        tried.append(addr[1])
        if addr[1] in (60001, 60003):
            raise OSError(98, "Address already in use")

    got = pm.pick_ports_outside("127.0.0.1", 3, (40000, 60000), bind=fake_bind)
    assert got == [60002, 60004, 60005]
    assert all(not 40000 <= p <= 60000 for p in tried)


def test_pick_ports_outside_goes_below_the_range_when_above_is_full() -> None:
    def fake_bind(s: socket.socket, addr: tuple[str, int]) -> None:
        pass

    got = pm.pick_ports_outside("127.0.0.1", 3, (40000, 65534), bind=fake_bind)
    assert got == [65535, 39999, 39998]
    assert pm.pick_ports_outside("127.0.0.1", 2, (1024, 65535), bind=fake_bind) == []
