"""What a person reads: the HTML report (:mod:`.html`, with the scenario sections in
:mod:`.scenario`, latency and reproduction in :mod:`.observe`, the plots in :mod:`.plots`),
the comparison of two runs (:mod:`.compare`), the CSV export (:mod:`.csvout`) and the summary
in words (:mod:`.summary`)."""

from __future__ import annotations

from conncap.report.compare import build_compare
from conncap.report.html import CSP, build, default_output, render, write_text_atomic

__all__ = ["CSP", "build", "build_compare", "default_output", "render", "write_text_atomic"]
