"""`conncap limits` shows the model's predictions for common plans, from this host's facts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_limits_json_predicts_the_port_ceiling_of_this_host() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "conncap", "limits", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    doc = json.loads(out.stdout)
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    by_plan = {p["plan"]: p for p in doc["predictions"]}
    many = by_plan["enough processes, 1 source IP, 1 destination"]
    ports = next(b for b in many["client"]["bounds"] if b["cause"] == "ephemeral-ports")
    assert ports["count"] == hi - lo + 1
    single = by_plan["one process, 1 source IP, 1 destination"]
    assert single["count"] <= ports["count"]
    assert single["cause"] in {"file-descriptors", "ephemeral-ports"}


def test_limits_table_ends_with_predictions() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "conncap", "limits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "Predicted ceilings" in out.stdout
    assert "the client will stop at" in out.stdout
