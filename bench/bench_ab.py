"""A/B rate check of two conncap source trees: the same ramp (bench_engine.ramp: ClientPool
against ServerPool in a fresh namespace with the port range 1024-65535), alternating A and B
runs so that both see the same minutes of this shared machine; prints every run, the medians
and the ratio B/A.

    sudo python bench/bench_ab.py A_SRC B_SRC [--runs 5] [--count 50000] [--sources 8]

Each run is its own process with PYTHONPATH=SRC (the workers inherit it). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(count: int, n_sources: int) -> None:
    sys.path.insert(0, str(HERE))
    import bench_engine as be

    with be.namespace() as ns:
        r = be.ramp(ns, count, be.sources(n_sources))
    print(json.dumps({"rate": r["rate"], "held": r["held"], "seconds": r["seconds"]}))


def run(src: str, count: int, n_sources: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run(
        [sys.executable, __file__, "--one", "--count", str(count), "--sources", str(n_sources)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", nargs="?")
    ap.add_argument("b", nargs="?")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.count, args.sources)
        return 0
    if os.geteuid() != 0:
        print("bench_ab: needs root for `ip netns`", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.runs):
        for label, src in (
            (("A", args.a), ("B", args.b)) if i % 2 == 0 else (("B", args.b), ("A", args.a))
        ):
            r = run(src, args.count, args.sources)
            rates[label].append(r["rate"])
            held, secs, rate = r["held"], r["seconds"], r["rate"]
            print(f"run {i + 1} {label}: {held:,} held in {secs:.2f} s = {rate:,.0f}/s", flush=True)
    ma, mb = statistics.median(rates["A"]), statistics.median(rates["B"])
    print(f"A {args.a}: median {ma:,.0f}/s  runs {', '.join(f'{x:,.0f}' for x in rates['A'])}")
    print(f"B {args.b}: median {mb:,.0f}/s  runs {', '.join(f'{x:,.0f}' for x in rates['B'])}")
    print(f"B/A = {mb / ma:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
