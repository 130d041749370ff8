"""How long ``conncap doctor`` takes to read N real TCP sockets, and that it counts what ``ss``
counts. Inside a network namespace of its own (port range 1024-65535, tcp_max_tw_buckets and
tcp_tw_reuse=0 set INSIDE it; the host is never changed), deleted at the end however it ends.

    sudo python bench/bench_doctor.py [--sockets 200000] [--held 10000]

TIME_WAIT sockets are cheap (no descriptor, ~300 B of kernel memory each) and live 60 s, so
they make a large table quickly: client processes connect + close to 8 listener ports over
loopback, the client closing first. ``--held`` connections are also kept open. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conncap.netns import Topology

SRC = str(Path(__file__).resolve().parents[1] / "src")

CHURN = r"""
import socket, sys, time
ports, n, held = [int(p) for p in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3])
keep = []
deadline = time.monotonic() + 50  # TIME_WAIT lasts 60 s: stop making them well before
for i in range(n):
    if time.monotonic() > deadline:
        break
    c = socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=5)
    if i < held:
        keep.append(c)
    else:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)  # plain close, FIN first
        c.close()
print("done", flush=True)
sys.stdin.readline()
"""

SERVE = r"""
import select, socket, sys
ports = [int(p) for p in sys.argv[1].split(",")]
ls = []
for p in ports:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", p)); s.listen(4096); s.setblocking(False); ls.append(s)
conns = []
print("ready", flush=True)
while True:
    r, _, _ = select.select(ls + [sys.stdin], [], [], 60)
    if not r or sys.stdin in r:
        break
    for s in r:
        try:
            while True:
                c, _ = s.accept(); conns.append(c)
                if len(conns) > 2000:  # close the oldest: the client closed first already
                    conns.pop(0).close()
        except BlockingIOError:
            pass
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=200_000, help="client sockets to make")
    ap.add_argument("--held", type=int, default=0, help="of them, kept open")
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    ports = ",".join(str(p) for p in range(1000, 1008))  # outside the ephemeral range
    with Topology() as topo:
        host = topo.add_host("bench")
        topo.sysctls_set(
            host,
            {
                "net.ipv4.ip_local_port_range": (1024, 65535),
                "net.ipv4.tcp_tw_reuse": 0,
                "net.ipv4.tcp_max_tw_buckets": 2_000_000,
            },
        )
        srv = topo.popen(host, [sys.executable, "-c", SERVE, ports], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        per = args.sockets // args.procs
        started = time.monotonic()
        kids = [
            topo.popen(
                host,
                [sys.executable, "-c", CHURN, ports, str(per), str(args.held // args.procs)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.procs)
        ]
        for k in kids:
            assert k.stdout is not None
            k.stdout.readline()
        made = time.monotonic() - started
        ss = topo.run(host, ["ss", "-s"]).stdout
        env = {**os.environ, "PYTHONPATH": SRC}
        runs = []
        counted = []
        for _ in range(3):
            before = len(topo.run(host, ["ss", "-Htan"]).stdout.splitlines())
            out = subprocess.run(
                [sys.executable, "-m", "conncap", "doctor", "--netns", host.name, "--json",
                 "--sample", "0", "--top", "3"],
                capture_output=True, text=True, timeout=120, env=env, check=True,
            ).stdout  # fmt: skip
            runs.append(json.loads(out))
            after = len(topo.run(host, ["ss", "-Htan"]).stdout.splitlines())
            counted.append((before, after))
        for k in [*kids, srv]:
            assert k.stdin is not None
            k.stdin.close()
            k.wait(timeout=30)
    doc = runs[-1]
    print(f"made the table in {made:.1f} s; ss -s says:\n{ss.strip()}")
    print(f"doctor counted {doc['sockets']['total']:,} sockets: {doc['sockets']['by_state']}")
    for r, (before, after) in zip(runs, counted, strict=True):
        print(f"  ss -tan lines just before / after: {before:,} / {after:,}")
        print(
            f"  read {r['sockets']['total']:,} sockets in {r['read_s']['sockets']:.2f} s "
            f"(whole reading {r['read_s']['total']:.2f} s)"
        )
    print("first ceiling:", doc["ceilings"][0]["cause"], doc["ceilings"][0]["subject"],
          doc["ceilings"][0]["evidence"])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
