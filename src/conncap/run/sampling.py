"""What a run samples besides its clients: the host's probes (kernel memory, sockets, TCP
counters, conntrack) as the measurement's probe, the server's namespace's under
``--isolated``, and MemAvailable for the memory guard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conncap.run.config import IsolatedSides, SamplerLike


class SamplerProbe:
    """The host's probes (kernel memory, sockets, TCP counters, conntrack) as the
    measurement's probe."""

    def __init__(self, sampler: SamplerLike) -> None:
        self.sampler = sampler

    def read(self, sample: Mapping[str, Any], *, force: bool = False) -> Mapping[str, object]:
        return self.sampler.sample(
            held=int(sample["held"]),
            rate=float(sample["rate"]),
            failures=int(sample["failures"]),
            failures_by_cause=sample["failures_by_cause"],
            step=str(sample["step"]),
            t=float(sample["t"]),
        )


def default_sampler() -> SamplerLike:
    from conncap.probes import Sampler

    return Sampler()


def isolated_sampler(isolated: IsolatedSides) -> SamplerLike:
    """Memory from this host (both namespaces share its kernel), sockets and TCP counters
    (ListenOverflows, ...) from the server's namespace."""
    from conncap.probes import Sampler

    return Sampler(net_reader=isolated.server_reader())


def default_mem_available() -> int | None:
    from conncap.probes import ProbeError, mem_available

    try:
        return mem_available()
    except (ProbeError, OSError):
        return None
