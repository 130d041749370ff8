"""Which sysctls conncap may set inside a namespace, and how values are written. Pure, no I/O.

Only ``net.*`` keys are per network namespace; ``kernel.*``, ``fs.*`` and ``vm.*`` set from
inside ``ip netns exec`` change the whole machine, so they are refused. A few ``net.*`` keys
are also one value for the whole kernel. On Linux 6.18 the kernel hides them in a child
namespace or makes them read-only (``nf_conntrack_max`` is mode 0444 there, and a write
fails), but older kernels were not so careful, so conncap refuses them by name too, and
:meth:`Topology.sysctl` still checks that the host's value did not move.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from conncap.errors import UsageError

SysctlValue = int | str | tuple[int, ...]

_KEY_RE = re.compile(r"^net(\.[A-Za-z0-9_\-]+)+$")

#: net.* keys that are one value for the whole kernel, with why conncap never sets them.
GLOBAL_NET_KEYS: Mapping[str, str] = {
    "net.netfilter.nf_conntrack_max": (
        "the conntrack table limit is one value for the kernel (read-only in a child "
        "namespace on Linux 6.18; each namespace's own count is checked against it)"
    ),
    "net.nf_conntrack_max": "an alias of net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets": "the conntrack hash size is one value for the kernel",
    "net.netfilter.nf_conntrack_expect_max": "one value for the kernel",
    "net.core.rmem_max": "socket buffer ceilings are one value for the kernel",
    "net.core.wmem_max": "socket buffer ceilings are one value for the kernel",
    "net.core.rmem_default": "one value for the kernel",
    "net.core.wmem_default": "one value for the kernel",
    "net.core.optmem_max": "one value for the kernel",
    "net.core.netdev_max_backlog": "one value for the kernel",
    "net.ipv4.tcp_mem": "TCP memory pressure limits are one value for the kernel",
    "net.ipv4.udp_mem": "one value for the kernel",
    "net.ipv4.neigh.default.gc_thresh1": "neighbour table limits are one value for the kernel",
    "net.ipv4.neigh.default.gc_thresh2": "neighbour table limits are one value for the kernel",
    "net.ipv4.neigh.default.gc_thresh3": "neighbour table limits are one value for the kernel",
    "net.ipv6.neigh.default.gc_thresh1": "one value for the kernel",
    "net.ipv6.neigh.default.gc_thresh2": "one value for the kernel",
    "net.ipv6.neigh.default.gc_thresh3": "one value for the kernel",
}


def check_key(key: str) -> str:
    """The key if conncap may set it inside a namespace; UsageError saying why not otherwise."""
    key = key.strip().replace("/", ".")
    if not _KEY_RE.match(key):
        raise UsageError(
            f"sysctl {key!r}: only net.* keys belong to a network namespace; "
            "conncap never sets kernel-wide sysctls"
        )
    why = GLOBAL_NET_KEYS.get(key)
    if why is not None:
        raise UsageError(f"sysctl {key}: {why}; conncap never changes it")
    return key


def format_value(value: SysctlValue) -> str:
    """``(40000, 40999)`` -> ``"40000 40999"`` (how /proc/sys takes vectors)."""
    if isinstance(value, tuple):
        if not value:
            raise UsageError("empty sysctl value")
        return " ".join(str(int(v)) for v in value)
    text = str(value).strip()
    if not text or "\n" in text or "=" in text:
        raise UsageError(f"sysctl value {value!r} is not a single value")
    return text


def normalise(text: str) -> str:
    """Values as the kernel prints them (tabs between fields) compared by their fields."""
    return " ".join(text.split())


def proc_path(key: str) -> Path:
    """/proc/sys path of a checked key (as seen by a process in that namespace)."""
    return Path("/proc/sys", *key.split("."))


def port_range_value(port_range: tuple[int, int]) -> tuple[int, int]:
    """A valid ``net.ipv4.ip_local_port_range`` pair (the kernel refuses lo > hi)."""
    lo, hi = port_range
    if not (1 <= lo <= hi <= 65535):
        raise UsageError(f"port range {lo}-{hi}: need 1 <= low <= high <= 65535")
    return (lo, hi)
