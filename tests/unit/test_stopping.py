"""SignalStop: SIGINT/SIGTERM ask a measurement to stop; the exit status is 128 + the first."""

from __future__ import annotations

import os
import signal

import pytest

from conncap.stopping import SignalStop


def test_a_signal_sets_the_event_is_recorded_and_told() -> None:
    heard: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with SignalStop(heard.append) as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.is_set()
        assert stop.signals == heard == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == before  # restored
    assert stop.exit_status(0) == 143
    assert SignalStop().exit_status(7) == 7


def test_a_second_signal_raises_only_when_asked() -> None:
    with SignalStop(second_raises=True) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert stop.exit_status(0) == 130
    with SignalStop() as calm:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    assert calm.signals == [signal.SIGINT, signal.SIGINT]
