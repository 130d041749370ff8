"""Benchmark of the run probes over a real loopback ramp (prints figures; not a test).

Opens N connections to a listener on 127.0.0.1 (both ends in this process, so each connection
costs two sockets), optionally registering both ends with epoll as an engine does, and samples
every probe at ``--hz`` while it ramps. Prints:

- what each slab cache grew by per connection (which caches a connection costs),
- the kernel and user bytes per connection that conncap.analysis derives from the timeline,
- what one Sampler.sample() and one /proc/slabinfo read cost, idle and with N connections open.

Bounded: at most --count connections (capped by the descriptor limit) and --max-seconds; every
socket is closed at the end, on error and on Ctrl-C too. Loopback only.

    python bench/bench_probes.py --count 9000 --rate 3000 --epoll
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import time
from typing import Any

from conncap import analysis, probes
from conncap.result import Sample, sample_from_json


def _cache_slopes(rows: list[tuple[int, dict[str, int]]]) -> list[tuple[str, float, float]]:
    names = sorted({n for _, caches in rows for n in caches})
    out = []
    for name in names:
        pts = [(held, caches[name]) for held, caches in rows if name in caches]
        if len(pts) < 3 or len({h for h, _ in pts}) < 2:
            continue
        fit = analysis.slope([float(h) for h, _ in pts], [float(b) for _, b in pts])
        out.append((name, fit.slope, fit.r2))
    return sorted(out, key=lambda r: -r[1])


def _time_it(fn: Any, n: int) -> tuple[float, float]:
    costs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        costs.append(time.perf_counter() - t0)
    return sum(costs) / n, max(costs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=6000, help="connections to open (default 6000)")
    ap.add_argument("--hz", type=float, default=10.0, help="samples per second (default 10)")
    ap.add_argument("--batch", type=int, default=100, help="connections per batch (default 100)")
    ap.add_argument(
        "--rate", type=float, default=3000.0, help="connections per second (default 3000)"
    )
    ap.add_argument("--epoll", action="store_true", help="register both ends with epoll")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = min(args.count, (hard - 100) // 2)
    if count < args.count:
        print(f"count capped at {count:,} by the descriptor limit {hard:,} (2 per connection)")

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ep = select.epoll()
    socks: list[socket.socket] = []
    sampler = probes.Sampler(client_pids=[os.getpid()])
    timeline: list[Sample] = []
    caches: list[tuple[int, dict[str, int]]] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        addr = listener.getsockname()
        idle_sample = _time_it(lambda: probes.kernel_memory(), 20)
        deadline = time.monotonic() + args.max_seconds
        next_sample = 0.0
        held = 0
        started = time.monotonic()
        while held < count and time.monotonic() < deadline:
            pause = started + held / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            for _ in range(min(args.batch, count - held)):
                c = socket.create_connection(addr, timeout=5)
                s, _ = listener.accept()
                socks += (c, s)
                if args.epoll:
                    ep.register(c.fileno(), select.EPOLLIN)
                    ep.register(s.fileno(), select.EPOLLIN)
                held += 1
            now = time.monotonic()
            if now >= next_sample:
                timeline.append(sample_from_json(sampler.sample(held=held, rate=0.0)))
                caches.append((held, dict(probes.kernel_memory().caches)))
                next_sample = now + 1.0 / args.hz
        time.sleep(0.3)
        for _ in range(5):  # a plateau, as a ceiling makes
            timeline.append(sample_from_json(sampler.sample(held=held, rate=0.0)))
            caches.append((held, dict(probes.kernel_memory().caches)))
            time.sleep(1.0 / args.hz)

        loaded_slab = _time_it(lambda: probes.read_text("/proc/slabinfo"), 20)
        loaded_sample = _time_it(lambda: sampler.sample(held=held, rate=0.0), 20)

        print(f"\nramp: {held:,} loopback connections ({2 * held:,} sockets), epoll={args.epoll}")
        print(f"kernel memory source: {sampler.kernel_source}; problems: {sampler.problems or 0}")
        print("\nslab growth per connection (both ends), caches growing >= 4 B/conn:")
        total = 0.0
        for name, per_conn, r2 in _cache_slopes(caches):
            if abs(per_conn) >= 4:
                total += per_conn
                print(f"  {name:20s} {per_conn:8.1f} B/conn  r²={r2:.3f}")
        print(f"  {'sum':20s} {total:8.1f} B/conn")
        for key in ("kernel_bytes", "slab_bytes", "sock_mem_bytes", "user_bytes_client"):
            fit = analysis.memory_per_connection(timeline, key)
            if fit:
                print(f"{key:18s} slope {fit.slope:9.1f} B/conn  r²={fit.r2:.4f}  n={fit.n}")
        fit = analysis.memory_per_connection(timeline, "mem_available")
        if fit:
            print(f"{'mem_available':18s} slope {fit.slope:9.1f} B/conn  r²={fit.r2:.4f}")
        knee = analysis.find_knee(timeline)
        print(f"knee: {knee}")
        print("\ncost per call (mean / max):")
        for label, (mean, worst) in (
            ("kernel_memory() idle", idle_sample),
            ("/proc/slabinfo read, loaded", loaded_slab),
        ):
            print(f"  {label:27s} {mean * 1e3:6.2f} / {worst * 1e3:6.2f} ms")
        print(
            f"  Sampler.sample(), loaded    {loaded_sample[0] * 1e3:6.2f} / "
            f"{loaded_sample[1] * 1e3:6.2f} ms  (during the ramp: mean "
            f"{sampler.cost.mean_s * 1e3:.2f} ms, max {sampler.cost.max_s * 1e3:.2f} ms over "
            f"{sampler.cost.calls} calls)"
        )
    finally:
        for s in socks:
            s.close()
        listener.close()
        ep.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
