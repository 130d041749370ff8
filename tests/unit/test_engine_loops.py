"""The acceptor and connector loops in-process, on loopback, with fake socket layers where the
real failure would exhaust the machine (trio's FakeSocketFactory is the model)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conncap.engine.acceptor import Acceptor
from conncap.engine.classify import classify, errno_name
from conncap.engine.connector import Connector, Pair, SockLike, real_socket


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    s.setblocking(False)
    yield s
    s.close()


def run_until(step: Callable[[float], None], done: Callable[[], bool], limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not done():
        assert time.monotonic() < end, "loop did not get there in time"
        step(0.02)


def drain(ls: socket.socket) -> list[tuple[socket.socket, Any]]:
    out = []
    while True:
        try:
            out.append(ls.accept())
        except BlockingIOError:
            return out


# ---- connector ---------------------------------------------------------------------------


def test_connector_opens_exactly_the_count_over_sources(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    pairs = [Pair("127.0.0.2", "127.0.0.1", port), Pair("127.0.0.3", "127.0.0.1", port)]
    c = Connector(pairs, 40, max_fd=4096)
    try:
        run_until(c.step, lambda: c.phase == "done")
        for _ in range(5):
            c.step(0.01)
        peers = drain(listener)
        assert c.ok == c.held == 40 and c.attempts == 40
        assert len(peers) == 40
        by_ip: dict[str, int] = {}
        for conn, addr in peers:
            by_ip[addr[0]] = by_ip.get(addr[0], 0) + 1
            conn.close()
        assert by_ip == {"127.0.0.2": 20, "127.0.0.3": 20}
    finally:
        c.close_all()


def test_rate_spends_one_token_per_attempt(listener: socket.socket) -> None:
    """--rate R opens at most about R per second of the connector's clock (a fake clock here:
    one simulated second in 100 steps of 10 ms, however fast the steps really run)."""
    port = listener.getsockname()[1]
    now = [0.0]
    c = Connector(
        [Pair(None, "127.0.0.1", port)], 1000, rate=100, max_fd=4096, clock=lambda: now[0]
    )
    peers: list[tuple[socket.socket, Any]] = []
    try:
        for _ in range(100):
            now[0] += 0.01
            c.step(0.0)
            peers += drain(listener)  # kept open: a server that closes is another test
        # 100 tokens accrue over the simulated second, plus a burst of at most rate/10.
        assert 90 <= c.attempts <= 110
    finally:
        for conn, _ in peers + drain(listener):
            conn.close()
        c.close_all()


class FakeFactory:
    """Real sockets, except that connect() fails with ``code`` from attempt ``after`` on."""

    def __init__(self, code: int, after: int, where: str = "connect") -> None:
        self.code, self.after, self.where, self.n = code, after, where, 0

    def __call__(self, family: int, type_: int) -> SockLike:
        self.n += 1
        if self.n > self.after and self.where == "socket":
            raise OSError(self.code, os.strerror(self.code))
        sock = real_socket(family, type_)
        if self.n > self.after:
            return FailingSock(sock, self.code)
        return sock


class FailingSock:
    def __init__(self, sock: SockLike, code: int) -> None:
        self.sock, self.code = sock, code

    def setsockopt(self, level: int, optname: int, value: int, /) -> None:
        self.sock.setsockopt(level, optname, value)

    def bind(self, address: Any, /) -> None:
        self.sock.bind(address)

    def connect_ex(self, address: Any, /) -> int:
        return self.code

    def detach(self) -> int:
        return self.sock.detach()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("code", "where", "cause"),
    [
        (errno.EADDRNOTAVAIL, "connect", "ephemeral-ports"),
        (errno.EMFILE, "socket", "file-descriptors"),
        (errno.ENFILE, "socket", "system-file-table"),
        (errno.ENOBUFS, "socket", "memory"),
        (errno.ECONNREFUSED, "connect", "server-refused"),
    ],
)
def test_connector_stops_at_a_ceiling_and_classifies_it(
    listener: socket.socket, code: int, where: str, cause: str
) -> None:
    port = listener.getsockname()[1]
    fake = FakeFactory(code, after=7, where=where)
    c = Connector([Pair(None, "127.0.0.1", port)], 100, make_socket=fake, streak=5, max_fd=4096)
    try:
        run_until(c.step, lambda: c.ceiling is not None)
        run_until(c.step, lambda: c.inflight == 0)
        assert c.ok == c.held == 7
        assert c.ceiling is not None
        assert c.ceiling["errno"] == code
        assert c.ceiling["held"] == 7
        assert c.failures[code] >= 2
        op = str(c.ceiling["op"])
        assert str(classify(code, op)) == cause
        attempts = c.attempts
        for _ in range(5):
            c.step(0.01)
        assert c.attempts == attempts, "a worker at its ceiling must stop trying"
        assert c.phase == "ceiling"
    finally:
        c.close_all()
        for conn, _ in drain(listener):
            conn.close()


def test_port_exhaustion_of_one_pair_does_not_stop_the_others(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    class OnePairFull:
        def __call__(self, family: int, type_: int) -> SockLike:
            return Watch(real_socket(family, type_))

    class Watch(FailingSock):
        def __init__(self, sock: SockLike) -> None:
            super().__init__(sock, 0)
            self.src = ""

        def bind(self, address: Any, /) -> None:
            self.src = address[0]
            self.sock.bind(address)

        def connect_ex(self, address: Any, /) -> int:
            if self.src == "127.0.0.2":
                return errno.EADDRNOTAVAIL
            return self.sock.connect_ex(address)

    pairs = [Pair("127.0.0.2", "127.0.0.1", port), Pair("127.0.0.3", "127.0.0.1", port)]
    c = Connector(pairs, 30, make_socket=OnePairFull(), max_fd=4096)
    try:
        run_until(c.step, lambda: c.phase == "done")
        assert c.ok == 30 and c.ceiling is None
        assert c.failures[errno.EADDRNOTAVAIL] == 2  # then that pair is left alone
    finally:
        c.close_all()
        for conn, _ in drain(listener):
            conn.close()


def test_connect_that_never_completes_times_out() -> None:
    r, w = os.pipe()  # a descriptor that never becomes writable for OUT: a stuck handshake

    class Stuck(FailingSock):
        def detach(self) -> int:
            self.sock.close()
            return os.dup(r)

    def factory(family: int, type_: int) -> SockLike:
        return Stuck(real_socket(family, type_), errno.EINPROGRESS)

    c = Connector(
        [Pair(None, "127.0.0.1", 9)], 3, make_socket=factory, timeout=0.2, streak=3, max_fd=4096
    )
    try:
        run_until(c.step, lambda: c.ceiling is not None)
        assert c.failures[errno.ETIMEDOUT] == 3
        assert c.ceiling is not None and c.ceiling["op"] == "timeout"
        assert str(classify(errno.ETIMEDOUT, "timeout")) == "timeout"
        assert errno_name(errno.ETIMEDOUT) == "ETIMEDOUT"
    finally:
        c.close_all()
        os.close(r)
        os.close(w)


def test_cap_pause_and_drops_are_honoured(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    c = Connector([Pair(None, "127.0.0.1", port)], 20, max_fd=4096)
    try:
        c.command("cap", 5)
        for _ in range(20):
            c.step(0.01)
        assert c.held == 5
        c.command("pause")
        c.command("cap", -1)
        for _ in range(10):
            c.step(0.01)
        assert c.held == 5 and c.phase == "paused"
        c.command("resume")
        run_until(c.step, lambda: c.phase == "done")
        peers = drain(listener)
        assert len(peers) == 20
        for conn, _ in peers[:3]:  # the server closes three: the client sees them go
            conn.close()
        run_until(c.step, lambda: c.dropped.get(0) == 3)
        # held means held: the worker opens three more to hold its quota again
        run_until(c.step, lambda: c.held == 20 and c.phase == "done")
        assert c.ok == 23 and c.lost == 3 and sum(c.life) == 3
        peers += drain(listener)
        for conn, _ in peers[3:]:
            conn.close()
    finally:
        c.close_all()


# ---- acceptor ----------------------------------------------------------------------------


class FlakyListener:
    """A real listener whose accept() fails with EMFILE on calls ``fail_on``."""

    def __init__(self, sock: socket.socket, fail_on: set[int]) -> None:
        self.sock, self.fail_on, self.calls = sock, fail_on, 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _accept(self) -> tuple[int, Any]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError(errno.EMFILE, "Too many open files")
        fd, addr = self.sock._accept()  # type: ignore[attr-defined]
        return int(fd), addr

    def close(self) -> None:
        self.sock.close()


def clients(port: int, n: int, src: str = "127.0.0.1") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def test_acceptor_backs_off_on_emfile_and_resumes(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    flaky = FlakyListener(listener, fail_on={3, 4})
    acc = Acceptor([flaky], max_fd=4096)
    cs = clients(port, 10, "127.0.0.4")
    try:
        run_until(acc.step, lambda: acc.held == 10)
        assert acc.errors == {errno.EMFILE: 2}
        assert acc.backoffs >= 1
        assert acc.stats()["per_ip"] == {"127.0.0.4": 10}
        assert str(classify(errno.EMFILE, "accept")) == "file-descriptors"
    finally:
        for s in cs:
            s.close()
        acc.close_all()


def test_acceptor_survives_garbage_resets_and_half_close(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    acc = Acceptor([listener], max_fd=4096)
    cs = clients(port, 6)
    try:
        run_until(acc.step, lambda: acc.held == 6)
        cs[0].sendall(os.urandom(200_000))  # garbage: read and discarded, still held
        cs[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        cs[1].close()  # reset
        cs[2].shutdown(socket.SHUT_WR)  # half-close: the server closes its side
        run_until(acc.step, lambda: acc.closed == 2)
        for _ in range(10):
            acc.step(0.01)
        assert acc.held == 4
        assert cs[2].recv(10) == b""  # the server closed after the half-close
        cs[3].sendall(b"x")
        for _ in range(5):
            acc.step(0.01)
        assert acc.held == 4
    finally:
        for s in cs:
            s.close()
        acc.close_all()


def test_echo_mode_echoes(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    acc = Acceptor([listener], mode="echo", max_fd=4096)
    (c,) = clients(port, 1)
    try:
        run_until(acc.step, lambda: acc.held == 1)
        c.sendall(b"hello")
        c.settimeout(0.05)
        got = b""
        end = time.monotonic() + 5
        while got != b"hello" and time.monotonic() < end:
            acc.step(0.01)
            with contextlib.suppress(TimeoutError):
                got += c.recv(100)
        assert got == b"hello"
    finally:
        c.close()
        acc.close_all()


def test_coalescing_only_with_a_deep_accept_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small backlog is accepted at once: waiting 20 ms would overflow it (ListenOverflows)."""
    from conncap.engine import acceptor

    monkeypatch.setattr(acceptor, "read_somaxconn", lambda default=4096: 4096)
    assert acceptor.effective_coalesce(None, None) == acceptor.DEFAULT_COALESCE
    assert acceptor.effective_coalesce(None, 16) == 0.0
    assert acceptor.effective_coalesce(None, 65535) == acceptor.DEFAULT_COALESCE  # capped: 4096
    assert acceptor.effective_coalesce(0.005, 16) == 0.005
    monkeypatch.setattr(acceptor, "read_somaxconn", lambda default=4096: 128)
    assert acceptor.effective_coalesce(None, None) == 0.0


# ---- servers that close (held means held) --------------------------------------------------


def _serve_then_close(
    listener: socket.socket, keep: int, say: bytes, rst: bool
) -> Callable[[], list[socket.socket]]:
    """A fake application server: holds the first ``keep`` it accepts; every later one gets
    ``say`` and is closed (FIN, or RST with ``rst``)."""
    kept: list[socket.socket] = []

    def tick() -> list[socket.socket]:
        for conn, _ in drain(listener):
            if len(kept) < keep:
                kept.append(conn)
                continue
            if say:
                conn.send(say)
            if rst:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            conn.close()
        return kept

    return tick


@pytest.mark.parametrize("rst", [False, True])
def test_a_server_that_refuses_by_closing_is_a_ceiling(listener: socket.socket, rst: bool) -> None:
    """redis past maxclients: accept, write an error, close. The worker keeps opening until it
    holds its quota, so it meets the refusals, stops at a ceiling within its attempt cap, and
    holds what the server holds; the message is quoted once with its count."""
    port = listener.getsockname()[1]
    tick = _serve_then_close(listener, 10, b"-ERR max number of clients reached\r\n", rst)
    c = Connector([Pair(None, "127.0.0.1", port)], 50, max_fd=4096, window=8)
    kept: list[socket.socket] = []
    try:

        def step(t: float) -> None:
            c.step(t)
            kept[:] = tick()

        run_until(step, lambda: c.phase == "ceiling")
        for _ in range(5):
            step(0.01)
        assert c.held == 10 == len(kept)
        assert c.attempts <= 4 * 50 + 32
        assert c.ceiling is not None and c.ceiling["errno"] in (0, errno.ECONNRESET)
        st = c.stats()
        lost = c.lost
        assert lost >= 32 and sum(st["life"]) == lost
        closes = c.dropped.get(0, 0) + c.dropped.get(errno.ECONNRESET, 0)
        assert closes == lost
        if not rst:  # an RST may discard the unread message; a FIN delivers it
            text, seen, closed = st["msgs"][0]
            assert text == "-ERR max number of clients reached\\r\\n"
            assert seen == closed and closed >= 32
    finally:
        for k in kept:
            k.close()
        c.close_all()


def test_first_bytes_table_is_bounded() -> None:
    from conncap.engine.peer import MSG_SLOTS, escape

    assert escape(b"a\r\n\x00\\") == "a\\r\\n\\x00\\\\"
    c = Connector([Pair(None, "127.0.0.1", 9)], 1, max_fd=64)
    try:
        for i in range(MSG_SLOTS + 5):
            c.first.note(10, b"msg %d" % i)
            c.first.of[10] = 0
        c.first.note(11, b"msg 0")
        st = c.stats()
        assert len(st["msgs"]) == MSG_SLOTS + 1  # 8 distinct + "other"
        assert st["msgs"][0] == ["msg 0", 2, 0] and st["msgs"][-1] == ["", 5, 0]
    finally:
        c.close_all()
