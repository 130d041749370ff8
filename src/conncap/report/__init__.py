"""What a person reads: the HTML report (:mod:`.html`, with the scenario sections in
:mod:`.scenario` and the plots in :mod:`.plots`) and the summary in words (:mod:`.summary`)."""

from __future__ import annotations

from conncap.report.html import CSP, build, default_output, render, write_text_atomic

__all__ = ["CSP", "build", "default_output", "render", "write_text_atomic"]
