"""The one measurement loop (:class:`Measurement`) and its pure verdict (:func:`decide`)."""

from conncap.measure.loop import (
    ClientTotals,
    Launch,
    MeasuredStep,
    Measurement,
    OnEvent,
    Probe,
    growth,
)
from conncap.measure.verdict import ClientStop, StepFacts, Verdict, decide

__all__ = [
    "ClientStop",
    "ClientTotals",
    "Launch",
    "MeasuredStep",
    "Measurement",
    "OnEvent",
    "Probe",
    "StepFacts",
    "Verdict",
    "decide",
    "growth",
]
