"""Reference pairs for bench_engine.py: the minimal raw-epoll Python client/server, and asyncio.

Run inside the bench's namespace as
``python ref_pair.py raw|asyncio COUNT CLIENT_PROCS SERVER_PROCS SRC1,SRC2,...``; prints one JSON
line: seconds from "go" to COUNT held, connections/s, and each side's user memory (USS) per
connection. Bounded: every loop stops at COUNT or after 120 s.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
import socket
import sys
import time
from multiprocessing import Barrier, Event, Process, Queue
from typing import Any

LIMIT_S = 120.0


def uss() -> int:
    import psutil

    return int(psutil.Process().memory_full_info().uss)


def raw_server(port_q: Any, port: int, ready: Any, done: Any, out: Any) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(65535)
    ls.setblocking(False)
    if port == 0:
        port_q.put(ls.getsockname()[1])
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    held: list[int] = []
    m0 = uss()
    ready.wait()
    end = time.monotonic() + LIMIT_S
    while not done.is_set() and time.monotonic() < end:
        for fd, _ev in ep.poll(0.05):
            if fd == ls.fileno():
                while True:
                    try:
                        c, _ = ls._accept()  # type: ignore[attr-defined]
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    held.append(c)
                    ep.register(c, select.EPOLLIN)
    out.put(("server", len(held), uss() - m0))
    for c in held:
        os.close(c)


def raw_client(n: int, port: int, srcs: list[str], go: Any, out: Any) -> None:
    ep = select.epoll()
    held = 0
    pending = 0
    fds: list[int] = []
    m0 = uss()
    go.wait()
    t0 = time.monotonic()
    opened = 0
    i = 0
    while held < n and time.monotonic() - t0 < LIMIT_S:
        while opened < n and pending < 512:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            s.setsockopt(socket.IPPROTO_IP, 24, 1)
            s.bind((srcs[i % len(srcs)], 0))
            i += 1
            r = s.connect_ex(("127.0.0.1", port))
            if r not in (0, errno.EINPROGRESS):
                s.close()
                continue
            fd = s.detach()
            fds.append(fd)
            ep.register(fd, select.EPOLLOUT)
            pending += 1
            opened += 1
        for fd, _ev in ep.poll(0.01):
            ep.modify(fd, 0)
            pending -= 1
            held += 1
    out.put(("client", held, uss() - m0, time.monotonic() - t0))
    go.wait()  # hold until everyone is done


def run_raw(count: int, cprocs: int, sprocs: int, srcs: list[str]) -> dict[str, Any]:
    port_q: Queue[int] = Queue()
    out: Queue[Any] = Queue()
    ready = Event()
    done = Event()
    servers = [Process(target=raw_server, args=(port_q, 0, ready, done, out))]
    servers[0].start()
    port = port_q.get(timeout=10)
    servers += [
        Process(target=raw_server, args=(port_q, port, ready, done, out)) for _ in range(sprocs - 1)
    ]
    for p in servers[1:]:
        p.start()
    go = Barrier(cprocs + 1)
    share = [count // cprocs + (1 if i < count % cprocs else 0) for i in range(cprocs)]
    clients = [Process(target=raw_client, args=(n, port, srcs, go, out)) for n in share]
    for p in clients:
        p.start()
    time.sleep(0.5)
    ready.set()
    go.wait()
    t0 = time.monotonic()
    results = [out.get(timeout=LIMIT_S + 10) for _ in clients]
    elapsed = time.monotonic() - t0
    done.set()
    results += [out.get(timeout=30) for _ in servers]
    go.wait()
    for p in clients + servers:
        p.join(10)
    held = sum(r[1] for r in results if r[0] == "client")
    return {
        "impl": "raw-epoll",
        "held": held,
        "seconds": elapsed,
        "rate": held / elapsed,
        "client_bytes_per_conn": sum(r[2] for r in results if r[0] == "client") / max(1, held),
        "server_bytes_per_conn": sum(r[2] for r in results if r[0] == "server") / max(1, held),
    }


# ---- asyncio --------------------------------------------------------------------------------


def aio_server(port_q: Any, port: int, ready: Any, done: Any, out: Any) -> None:
    async def main() -> None:
        held: list[asyncio.StreamWriter] = []

        async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        srv = await asyncio.start_server(on_conn, "127.0.0.1", port, reuse_port=True, backlog=65535)
        if port == 0:
            port_q.put(srv.sockets[0].getsockname()[1])
        m0 = uss()
        end = time.monotonic() + LIMIT_S
        while not done.is_set() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        out.put(("server", len(held), uss() - m0))
        srv.close()
        for w in held:
            w.transport.abort()

    asyncio.run(main())


def aio_client(n: int, port: int, srcs: list[str], go: Any, out: Any) -> None:
    async def main() -> None:
        m0 = uss()
        go.wait()
        t0 = time.monotonic()
        held: list[Any] = []
        sem = asyncio.Semaphore(512)

        async def one(i: int) -> None:
            async with sem:
                try:
                    r, w = await asyncio.open_connection(
                        "127.0.0.1", port, local_addr=(srcs[i % len(srcs)], 0)
                    )
                except OSError:
                    return
                held.append((r, w))

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), LIMIT_S)
        out.put(("client", len(held), uss() - m0, time.monotonic() - t0))
        go.wait()
        for _r, w in held:
            w.transport.abort()

    asyncio.run(main())


def run_aio(count: int, cprocs: int, sprocs: int, srcs: list[str]) -> dict[str, Any]:
    port_q: Queue[int] = Queue()
    out: Queue[Any] = Queue()
    ready = Event()
    done = Event()
    servers = [Process(target=aio_server, args=(port_q, 0, ready, done, out))]
    servers[0].start()
    port = port_q.get(timeout=10)
    servers += [
        Process(target=aio_server, args=(port_q, port, ready, done, out)) for _ in range(sprocs - 1)
    ]
    for p in servers[1:]:
        p.start()
    go = Barrier(cprocs + 1)
    share = [count // cprocs + (1 if i < count % cprocs else 0) for i in range(cprocs)]
    clients = [Process(target=aio_client, args=(n, port, srcs, go, out)) for n in share]
    for p in clients:
        p.start()
    time.sleep(0.5)
    go.wait()
    t0 = time.monotonic()
    results = [out.get(timeout=LIMIT_S + 10) for _ in clients]
    elapsed = time.monotonic() - t0
    done.set()
    results += [out.get(timeout=30) for _ in servers]
    go.wait()
    for p in clients + servers:
        p.join(10)
    held = sum(r[1] for r in results if r[0] == "client")
    return {
        "impl": "asyncio",
        "held": held,
        "seconds": elapsed,
        "rate": held / elapsed,
        "client_bytes_per_conn": sum(r[2] for r in results if r[0] == "client") / max(1, held),
        "server_bytes_per_conn": sum(r[2] for r in results if r[0] == "server") / max(1, held),
    }


def main() -> None:
    impl, count, cprocs, sprocs, srcs = sys.argv[1:6]
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fn = run_raw if impl == "raw" else run_aio
    print(json.dumps(fn(int(count), int(cprocs), int(sprocs), srcs.split(","))))


if __name__ == "__main__":
    main()
