"""Worker processes seen from the parent: start, read their stats lines, stop, reap.

Each worker is ``python -S -m conncap.engine.worker CONFIG`` (behind ``ip netns exec NAME``
when a namespace is given). One reader thread per :class:`WorkerSet` drains every worker's
stdout and stderr, so a worker never blocks on a full pipe, and keeps only each worker's last
stats line. Only processes started here are ever signalled, by their pid (Popen).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar, cast

from conncap.engine import protocol
from conncap.engine.protocol import ClientConfig, ClientSnapshot, ServerConfig, ServerSnapshot
from conncap.errors import RunFailed

#: Seconds a worker may take to report ``ready``.
READY_TIMEOUT = 20.0

#: What a pool's workers report: a client's or a server's stats line.
S = TypeVar("S", ClientSnapshot, ServerSnapshot)

#: Longest config passed in argv (Linux refuses one argument over 128 KiB, E2BIG); a longer
#: one (many pairs) goes as the first line on the worker's stdin.
ARGV_CONFIG_MAX = 64 * 1024


def worker_command(config: ClientConfig | ServerConfig, netns: str | None = None) -> list[str]:
    """The argv that starts one worker (``ip netns exec NAME`` first when ``netns``)."""
    text = json.dumps(config)
    arg = text if len(text) <= ARGV_CONFIG_MAX else "-"
    cmd = [sys.executable, "-S", "-m", "conncap.engine.worker", arg]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return cmd


def _worker_env() -> dict[str, str]:
    # -S skips site (faster start); put the directory holding `conncap` on the path instead.
    import conncap

    root = str(Path(conncap.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONSTARTUP", None)
    return env


class WorkerProc(Generic[S]):
    """One worker process and what it last said."""

    def __init__(
        self, index: int, config: ClientConfig | ServerConfig, netns: str | None = None
    ) -> None:
        self.index = index
        self.config = config
        cmd = worker_command(config, netns)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_worker_env(),
            close_fds=True,
        )
        self.pid = self.proc.pid
        if cmd[-1] == "-":
            self.send(json.dumps(config))
        self.ready: protocol.Ready | None = None
        self.error: str | None = None
        self.error_errno: int | None = None
        self.last: S = {}
        self.end: S | None = None
        self.stderr_tail = b""
        self._buf = b""
        self.eof = False

    def send(self, line: str) -> None:
        """One control line; a worker that is gone is ignored (its EOF is seen elsewhere)."""
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def close_stdin(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()

    def feed(self, data: bytes) -> None:
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        for raw in lines:
            doc = protocol.decode(raw)
            if doc is None:
                continue
            kind = doc.pop("k")
            if kind == "s":
                self.last = self._snapshot(doc)
            elif kind == "ready":
                self.ready = cast("protocol.Ready", doc)
            elif kind == "end":
                self.end = self.last = self._snapshot(doc)
            elif kind == "err":
                self.error = str(doc.get("msg"))
                self.error_errno = cast("int | None", doc.get("errno"))

    def _snapshot(self, doc: dict[str, object]) -> S:
        """A decoded ``s`` or ``end`` line (``k`` removed) as its role's snapshot: the worker
        wrote it from its ``stats()``, and the pools read every counter with a default, so
        it is not re-checked here (the one cast of the wire into a snapshot)."""
        return cast(S, doc)

    def describe_failure(self) -> str:
        if self.error:
            return self.error
        tail = self.stderr_tail.decode("utf-8", "replace").strip().splitlines()
        code = self.proc.poll()
        last = tail[-1] if tail else "no message"
        return f"worker {self.pid} exited with status {code}: {last}"


class WorkerSet(Generic[S]):
    """Workers of one pool and the thread that reads them."""

    def __init__(self, on_tick: Callable[[], None] | None = None, tick: float = 0.25) -> None:
        self.workers: list[WorkerProc[S]] = []
        self._sel = selectors.DefaultSelector()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._on_tick = on_tick
        self._tick = tick

    # ---- lifecycle -------------------------------------------------------------------------

    def spawn(self, config: ClientConfig | ServerConfig, netns: str | None = None) -> WorkerProc[S]:
        w: WorkerProc[S] = WorkerProc(len(self.workers), config, netns)
        with self._lock:
            self.workers.append(w)
            assert w.proc.stdout is not None and w.proc.stderr is not None
            os.set_blocking(w.proc.stdout.fileno(), False)
            os.set_blocking(w.proc.stderr.fileno(), False)
            self._sel.register(w.proc.stdout, selectors.EVENT_READ, (w, "out"))
            self._sel.register(w.proc.stderr, selectors.EVENT_READ, (w, "err"))
        if self._thread is None:
            self._thread = threading.Thread(target=self._read_loop, name="conncap-workers")
            self._thread.daemon = True
            self._thread.start()
        return w

    def wait_ready(self, workers: Sequence[WorkerProc[S]], timeout: float = READY_TIMEOUT) -> None:
        """Until every worker said ``ready``; RunFailed with the worker's words otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                failed = [w for w in workers if w.error or (w.eof and w.ready is None)]
                if failed:
                    raise RunFailed(failed[0].describe_failure())
                if all(w.ready is not None for w in workers):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RunFailed(f"workers did not start within {timeout:.0f} s")
                self._changed.wait(min(left, 0.1))

    def broadcast(self, line: str) -> None:
        for w in list(self.workers):
            w.send(line)

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (checked whenever a worker reports) or the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not predicate():
                if deadline is None:
                    self._changed.wait(0.1)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
            return True

    def request_stop(self) -> None:
        """Ask every worker to stop (``stop``, then EOF) and return at once: each closes its
        connections in parallel with every other worker, of this pool and of others."""
        self.broadcast("stop")
        for w in self.workers:
            w.close_stdin()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask every worker to stop, close their stdin, reap them; kill our own stragglers."""
        self.request_stop()
        deadline = time.monotonic() + max(0.1, timeout - 0.3)
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()  # our own child, by its pid
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(1.0)
        # let the reader take the last lines, then end it
        end = time.monotonic() + 0.5
        with self._changed:
            while time.monotonic() < end and not all(w.eof for w in self.workers):
                self._changed.wait(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        for w in self.workers:
            for f in (w.proc.stdout, w.proc.stderr, w.proc.stdin):
                if f is not None and not f.closed:
                    with contextlib.suppress(OSError):
                        f.close()
        self._sel.close()

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.proc.poll() is None]

    def snapshot(self) -> list[S]:
        with self._lock:
            return [w.last.copy() for w in self.workers]

    # ---- the reader thread -----------------------------------------------------------------

    def _read_loop(self) -> None:
        next_tick = time.monotonic() + self._tick
        while not self._stop.is_set():
            with self._lock:
                has = bool(self._sel.get_map())
            events = self._sel.select(0.05) if has else []
            if not has:
                time.sleep(0.05)
            changed = False
            for key, _ in events:
                w, which = key.data
                try:
                    data = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                with self._lock:
                    if not data:
                        self._sel.unregister(key.fileobj)
                        if which == "out":
                            w.eof = True
                    elif which == "out":
                        w.feed(data)
                    else:
                        w.stderr_tail = (w.stderr_tail + data)[-4096:]
                changed = True
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._tick
                if self._on_tick is not None:
                    self._on_tick()
                changed = True
            if changed:
                with self._changed:
                    self._changed.notify_all()
