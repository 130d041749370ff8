"""``conncap run --churn``: the churn step after the holding steps (the sustainable rate of
new connections, predicted and measured, through the same measurement loop)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conncap.engine import OpenPlan, Target
from conncap.measure import Launch
from conncap.run import steps as st
from conncap.run.document import StepRun

if TYPE_CHECKING:
    from conncap.run.experiment import Experiment


def run_churn_step(exp: Experiment) -> None:
    """``--churn``: after the holding steps (their connections closed first, with RSTs,
    so the range is free and no TIME_WAIT is left), open and close connections to the
    server's first port: FIN closes by the client at once, for
    :data:`~conncap.run.steps.CHURN_DURATION` s, at a rate the churn model says runs a
    narrow range out within the step, else a modest fixed one; TIME_WAIT is sampled."""
    from conncap.engine.results import churn_json, predict_churn, step_timeline
    from conncap.result import json_object

    cfg = exp.config
    limits = exp._client_limits or exp.limits
    assert limits is not None
    for done in exp.steps:
        if done.measured is not None:
            exp.m.release(done.measured)
    port = exp._server_ports()[0]
    duration = st.CHURN_DURATION

    def churn_plan(rate: float) -> OpenPlan:
        return OpenPlan(
            targets=(Target(cfg.host, port, port),),
            count=max(1, int(rate * duration)),
            workers=1,
            rate=rate,
            timeout_s=cfg.timeout_s,
            bind_mode="kernel",
            lifetime=0.0,
            close="fin",
            duration_s=duration,
        )

    plan = churn_plan(st.churn_rate(exp._port_pool(), duration))
    pred = predict_churn(plan, limits)
    if pred.get("exhausts") is not True and plan.rate != st.CHURN_RATE:
        plan = churn_plan(st.CHURN_RATE)
        pred = predict_churn(plan, limits)
    spec = st.StepSpec(
        "churn",
        f"churn: {plan.rate:,.1f} new connections/s for {duration:g} s, FIN closes by the client",
        cfg.host,
        (port,),
    )
    step = StepRun(spec=spec, index=len(exp.steps), held_before=exp.m.held())
    step.plan = plan
    exp.steps.append(step)
    exp._n_steps = len(exp.steps)
    exp.observer.event(
        f"step {step.index + 1} (churn): model: {pred.get('line') or pred.get('detail')}"
    )
    exp._current = step
    try:
        step.measured = exp.m.begin(
            spec.name, [Launch(plan, netns=cfg.client_netns, nofile=cfg.client_nofile)]
        )
    finally:
        exp._set_client_pids()
    step.t_start, step.i_start = step.measured.t_start, step.measured.i_start
    outcome = exp.m.churn(step.measured, lifetime=0.0, hz=cfg.hold_hz, should_stop=exp._should_stop)
    verdict = exp.m.conclude(step.measured, settle="none")
    step.outcome = outcome
    step.ceiling = verdict.ceiling()
    cs = step.measured.client_stats()[0]
    step.opened = int(cs.established)
    step.t_end = step.t_ramp_end = exp.m.now()
    step.i_end = len(exp.timeline) - 1
    churn = churn_json(plan, cs, step_timeline(exp.timeline, step.i_start), pred)
    exp.churn = json_object(churn, "churn")
    pred_rate, meas = churn["sustainable_rate_predicted"], churn["sustainable_rate_measured"]
    exp.observer.event(
        f"step {step.index + 1} (churn): opened {churn['opened']:,}, TIME_WAIT peak "
        f"{churn['time_wait_peak']:,}, stopped by {outcome}; sustainable rate predicted "
        f"{_rate(pred_rate, churn['predicted_unbounded'])}, measured {_rate(meas)}"
    )
    if outcome not in ("ceiling", "count"):
        exp.stop_reason = outcome


def _rate(value: object, unbounded: object = False) -> str:
    if unbounded is True:
        return "no port limit"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,.1f}/s"
    return "unknown"
