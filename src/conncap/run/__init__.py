"""``conncap run``: the whole experiment (prediction, steps, timeline, memory per connection,
summary). The terminal view lives in :mod:`conncap.run.live` (imports rich)."""

from __future__ import annotations

from conncap.report.summary import summary_lines
from conncap.run.config import (
    DEFAULT_COUNT,
    DEFAULT_MAX_DURATION,
    DEFAULT_MEMORY_GUARD,
    Observer,
    Progress,
    RunConfig,
)
from conncap.run.experiment import Experiment

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_MAX_DURATION",
    "DEFAULT_MEMORY_GUARD",
    "Experiment",
    "Observer",
    "Progress",
    "RunConfig",
    "summary_lines",
]
