"""Worker process entry point: ``python -m conncap.engine.worker CONFIG_JSON``.

Sets itself up (dies with its parent, ignores the terminal's SIGINT, takes the descriptor
limit it was given), then runs the acceptor (``role: server``) or the connector
(``role: client``) until told to stop. Talks to its parent as described in
:mod:`conncap.engine.protocol`. Imports only the standard library, to start fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Protocol, cast

from conncap.engine import protocol


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG(SIGKILL) on Linux: the kernel kills us when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: stdin EOF still stops us
        pass


def set_nofile(nofile: int | None) -> int:
    """Soft RLIMIT_NOFILE to ``nofile`` (lowering) or to the hard limit; returns the soft limit."""
    try:
        import resource
    except ImportError:  # Windows: no rlimits
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if nofile is None else nofile
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return int(soft)


def emit(kind: str, **fields: object) -> None:
    """Write one protocol line on stdout (fd 1), whole, blocking."""
    data = protocol.encode(kind, fields)
    view = memoryview(data)
    while view:
        try:
            n = os.write(1, view)
        except InterruptedError:
            continue
        except BrokenPipeError:
            raise SystemExit(0) from None
        view = view[n:]


def _read_config_line() -> bytes:
    """The config as the first line on stdin (``CONFIG_JSON`` is ``-``: too long for argv).
    The parent sends nothing else until this worker says ``ready``."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m conncap.engine.worker CONFIG_JSON\n")
        return 2
    config: protocol.ClientConfig | protocol.ServerConfig = json.loads(
        _read_config_line() if args[0] == "-" else args[0]
    )
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    limit = set_nofile(config.get("nofile"))
    config["_nofile"] = limit
    os.set_blocking(0, False)
    role = config.get("role")
    loop: Loop
    try:
        if role == "server":
            from conncap.engine.acceptor import build as build_server

            loop = build_server(cast("protocol.ServerConfig", config), emit)
        elif role == "client":
            from conncap.engine.connector import build as build_client

            loop = build_client(cast("protocol.ClientConfig", config), emit)
        else:
            emit("err", errno=None, msg=f"unknown role {role!r}")
            return 2
    except OSError as exc:
        # the words without "[Errno N]" (the errno travels as its own field)
        words = exc.strerror if exc.strerror and exc.filename is None else str(exc)
        emit("err", errno=exc.errno, msg=words)
        return 1
    return run_loop(loop)


class Loop(Protocol):
    """What a worker runs: the acceptor or the connector."""

    stopping: bool

    def run(self) -> None: ...
    def stats(self) -> protocol.ClientSnapshot | protocol.ServerSnapshot: ...
    def close_all(self) -> None: ...


def run_loop(loop: Loop) -> int:
    """Run ``loop`` until ``stop``, stdin EOF or SIGTERM; then close all and report ``end``."""

    def on_term(_sig: int, _frame: object) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        loop.run()
    finally:
        final = loop.stats()
        loop.close_all()
    emit("end", **final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
