"""Isolated scenarios: every lesson of the founding article, shown by experiment between
network namespaces, each checking its expected outcome against the measurement.

``conncap scenario NAME`` runs one (docs/scenarios.md); ``conncap run --isolated`` uses
:func:`isolated_pair` for its two-namespace set-up.
"""

from __future__ import annotations

from conncap.scenarios.expect import Expectation, connect_ports
from conncap.scenarios.framework import SCALES, ScenarioRun
from conncap.scenarios.isolated import (
    IsolatedPair,
    IsolatedSettings,
    add_isolated_arguments,
    isolated_pair,
    namespace_limits,
    settings_from_args,
    setup_pair,
)
from conncap.scenarios.registry import SCENARIOS, Outcome, Scenario, get, run_scenario
from conncap.scenarios.step import Launch, Step

__all__ = [
    "SCALES",
    "SCENARIOS",
    "Expectation",
    "IsolatedPair",
    "IsolatedSettings",
    "Launch",
    "Outcome",
    "Scenario",
    "ScenarioRun",
    "Step",
    "add_isolated_arguments",
    "connect_ports",
    "get",
    "isolated_pair",
    "namespace_limits",
    "run_scenario",
    "settings_from_args",
    "setup_pair",
]
