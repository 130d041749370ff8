"""Analysis of a run's data: memory per connection (:mod:`.memory`), the timeline's ramp, knee
and dominant failure (:mod:`.timeline`), and the attribution of a ceiling to its cause
(:mod:`.attribution`). Pure functions of typed data (:class:`conncap.result.Sample`,
:class:`~conncap.result.Result`), no I/O. The summary in words is :mod:`conncap.report.summary`.
"""

from __future__ import annotations

from conncap.analysis.attribution import (
    CONNTRACK_FULL_FRACTION,
    Attribution,
    CeilingEvidence,
    attribute,
    evidence_from_result,
)
from conncap.analysis.memory import (
    MIN_HELD_SPAN,
    MIN_R2,
    MIN_SAMPLES,
    Fit,
    MemoryFit,
    extrapolate_memory_ceiling,
    fit_memory,
    memory_fits,
    memory_per_connection,
    memory_report,
    sample_value,
    slope,
)
from conncap.analysis.timeline import (
    Dominant,
    Knee,
    Timeline,
    cause_of_name,
    dominant_failure,
    failures_between,
    find_knee,
    positive,
    ramp_indices,
)

__all__ = [
    "CONNTRACK_FULL_FRACTION",
    "MIN_HELD_SPAN",
    "MIN_R2",
    "MIN_SAMPLES",
    "Attribution",
    "CeilingEvidence",
    "Dominant",
    "Fit",
    "Knee",
    "MemoryFit",
    "Timeline",
    "attribute",
    "cause_of_name",
    "dominant_failure",
    "evidence_from_result",
    "extrapolate_memory_ceiling",
    "failures_between",
    "find_knee",
    "fit_memory",
    "memory_fits",
    "memory_per_connection",
    "memory_report",
    "positive",
    "ramp_indices",
    "sample_value",
    "slope",
]
