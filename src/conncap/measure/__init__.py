"""The one measurement loop (:class:`Measurement`) and its pure verdict (:func:`decide`)."""

from conncap.measure.facts import growth
from conncap.measure.loop import Measurement
from conncap.measure.step import ClientTotals, Launch, MeasuredStep, OnEvent, Probe
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
