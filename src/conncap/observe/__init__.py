"""Watching a run while it runs: the event stream (``--events``, :mod:`.events`), the
Prometheus endpoint (``--metrics``, :mod:`.metrics`, which alone imports prometheus-client),
the live figures they share (:mod:`.figures`) and one object a command drives them through
(:mod:`.session`). Only the flags are re-exported here: the rest is imported where used, so
that ``conncap --help`` imports nothing heavy."""

from conncap.observe.flags import add_observe_arguments

__all__ = ["add_observe_arguments"]
