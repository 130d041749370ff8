"""``conncap open TARGET --lifetime S --rate R [--duration D] [--close fin|rst]``: churn.

Opens R new connections per second for D seconds, closes each S seconds after its handshake,
and reports the sustainable rate of new connections, predicted (``conncap.model.churn``) before the
run and measured, with TIME_WAIT sampled beside held. Kept apart from ``open``'s hold loop:
``open_.run`` only calls :func:`wants_churn` and :func:`run_churn`.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conncap.engine.results import ChurnRun
    from conncap.result import Result, Sample

#: Default seconds of opening in churn mode.
DEFAULT_DURATION = 30.0
#: Seconds allowed after the last open for lifetimes to run out before the run stops.
DRAIN_GRACE = 2.0


def add_churn_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "churn (open and close connections at a rate: the sustainable rate and TIME_WAIT)"
    )
    g.add_argument(
        "--lifetime",
        type=float,
        metavar="S",
        help="churn: close each connection S seconds after its handshake (0: at once); "
        "needs --rate",
    )
    g.add_argument(
        "--duration",
        type=float,
        metavar="D",
        help=f"churn: open new connections for D seconds (default {DEFAULT_DURATION:g})",
    )
    g.add_argument(
        "--close",
        choices=("fin", "rst"),
        help="churn: fin (default): a normal close, the client then holds TIME_WAIT; "
        "rst: abort with SO_LINGER 0, no TIME_WAIT",
    )
    g.add_argument(
        "--server-closes",
        action="store_true",
        help="churn: the server closes first (conncap serve --close-after S, S < --lifetime): "
        "predict with TIME_WAIT on the server's side",
    )


def wants_churn(args: argparse.Namespace) -> bool:
    """True for ``--lifetime``; a churn-only flag without it is a usage error."""
    from conncap.errors import UsageError

    if args.lifetime is None:
        stray = (
            ("--duration", args.duration),
            ("--close", args.close),
            ("--server-closes", args.server_closes or None),
        )
        for flag, value in stray:
            if value is not None:
                raise UsageError(f"{flag} is for churn: add --lifetime S (0: close at once)")
        return False
    return True


def build_churn_plan(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The churn OpenPlan: count = rate × duration; workers as the connections held at once
    (rate × lifetime) need descriptors."""
    import dataclasses

    from conncap.commands.open_plan import build_plan
    from conncap.engine.plan import auto_workers
    from conncap.errors import UsageError
    from conncap.model.churn import check_churn_values

    if args.rate is None:
        raise UsageError("--lifetime needs --rate R (new connections per second)")
    duration = DEFAULT_DURATION if args.duration is None else args.duration
    check_churn_values(args.rate, args.lifetime, duration)
    if args.count is not None:
        raise UsageError("--count is not for churn: it opens --rate × --duration connections")
    if args.hold is not None:
        raise UsageError("--hold is not for churn: --lifetime says how long each one lives")
    args.hold = 0.0  # churn holds nothing past each connection's --lifetime
    count = max(1, math.ceil(args.rate * duration))
    if args.max_duration < duration:
        raise UsageError(
            f"--duration {duration:g} is longer than --max-duration {args.max_duration:g}"
        )
    args.count = count
    if args.workers is None:
        held = math.ceil(args.rate * (args.lifetime + 1.0))
        args.workers = min(count, auto_workers(held, args.nofile))
    plan, notes = build_plan(args)
    plan = dataclasses.replace(
        plan, lifetime=args.lifetime, close=args.close or "fin", duration_s=duration
    )
    return plan, notes


def run_churn(args: argparse.Namespace) -> int:
    import datetime as dt

    from rich.console import Console

    from conncap.engine.plan import check_plan
    from conncap.engine.results import churn_json, open_result, predict, predict_churn
    from conncap.exitcodes import ExitStatus
    from conncap.measure import Launch, Measurement
    from conncap.observe.session import Observers
    from conncap.result import json_object, write_atomic
    from conncap.stopping import SignalStop

    plan, notes = build_churn_plan(args)
    check_plan(plan)
    console = Console(stderr=True)
    obs = Observers.from_args(args, "open", say=lambda line: console.print(line, markup=False))
    for note in notes:
        console.print(f"conncap: {note}")
    churn_pred = predict_churn(plan, closer="server" if args.server_closes else "client")
    console.print(f"model: {churn_pred.get('line') or churn_pred.get('reason')}", markup=False)
    prediction = predict(plan, args.nofile)

    sig = SignalStop(obs.on_signal)
    stop = sig.event

    argv = getattr(args, "_argv", ())
    obs.start(argv, plan=plan.to_json(), churn=churn_pred)
    sig.install()
    started = dt.datetime.now(dt.UTC)

    def on_sample(sample: Sample) -> None:
        _progress(console, sample, plan.count)
        obs.on_sample(sample, m.last_totals)

    m = Measurement(
        stop=stop,
        deadline_s=args.max_duration,
        on_sample=on_sample,
        on_event=obs.on_event,
    )
    stop_reason = "error"
    try:
        step = m.begin("churn", [Launch(plan, nofile=args.nofile)])
        stop_reason = _churn_loop(m, step, plan)
        verdict = m.conclude(step, settle="none")
        final = step.client_stats()[0]
        totals = m.client_totals()
        peak = max((x.held for x in m.timeline), default=0)
    finally:
        _, problems = m.close()
        sig.restore()
        obs.close(stop_reason=stop_reason, held_at_end=m.last_totals.held)
    if console.is_terminal:
        console.print()
    churn = churn_json(plan, final, m.timeline, churn_pred)
    notes = [*notes, *(f"clean-up: {exc}" for exc in problems)]
    if not args.server_closes and churn["closed_by_peer"] > churn["closed"]:
        line = (
            f"the server closed {churn['closed_by_peer']:,} of the connections first "
            "(TIME_WAIT on its side); the prediction assumed the client closes first: add "
            "--server-closes"
        )
        notes.append(line)
        console.print(f"conncap: {line}", markup=False)
    result = open_result(
        plan,
        totals,
        m.timeline,
        verdict=verdict,
        peak=peak,
        workers=final.workers,
        started_at=started,
        duration_s=m.now(),
        stop_reason=stop_reason,
        prediction=prediction,
        notes=notes,
        churn=json_object(churn, "churn"),
        argv=argv,
    )
    if args.json:
        write_atomic(args.json, result)
    _churn_summary(console, result, churn)
    if stop_reason == "interrupted":
        return sig.exit_status(ExitStatus.INTERRUPTED)
    return ExitStatus.SUCCESS


def _churn_loop(m: Any, step: Any, plan: Any) -> str:
    """Until every worker opened its share or hit a ceiling, then until the lifetimes of the
    connections still open ran out (at most lifetime + DRAIN_GRACE); bounded by the
    measurement's deadline and Ctrl-C (``Measurement.churn``)."""
    return str(m.churn(step, lifetime=float(plan.lifetime), hz=4.0, grace=DRAIN_GRACE))


_last_print = [0.0]


def _progress(console: Any, sample: Sample, requested: int) -> None:
    import time

    now = time.monotonic()
    if now - _last_print[0] < (0.5 if console.is_terminal else 5.0):
        return
    _last_print[0] = now
    fails = ", ".join(f"{k} {v:,}" for k, v in sorted(sample.failures_by_cause.items())) or "none"
    console.print(
        f"opened {sample.established or 0:,}/{requested:,} · held {sample.held:,} · "
        f"TIME_WAIT {sample.time_wait or 0:,} · {sample.rate:,.0f} conn/s · failures {fails}",
        end="\r" if console.is_terminal else "\n",
    )


def _churn_summary(console: Any, result: Result, c: ChurnRun) -> None:
    console.print(
        f"churn: opened {c['opened']:,} of {result.requested:,} at {c['rate']:g}/s "
        f"({c['close'].upper()} closes, lifetime {c['lifetime']:g} s), achieved "
        f"{c['achieved_rate'] or 0:,.1f}/s; TIME_WAIT peak {c['time_wait_peak']:,}; "
        f"stopped by {result.stop_reason}",
        markup=False,
    )
    if c["first_failure_s"] is not None:
        console.print(
            f"first failure after {c['first_failure_s']:.2f} s ({c['first_failure_errno']})",
            markup=False,
        )
    ceiling = result.ceiling
    if ceiling.reached:
        console.print(
            f"ceiling: after {c['opened']:,} opened ({ceiling.count or 0:,} held), cause "
            f"{ceiling.cause} ({ceiling.errno}, {ceiling.side}): {ceiling.evidence}",
            markup=False,
        )
        for line in ceiling.advice:
            console.print(f"  raise it: {line}", markup=False)
        console.print(f"  `conncap explain {ceiling.cause}` says more", markup=False)
    pred = c["sustainable_rate_predicted"]
    pred_text = (
        "no port limit"
        if c["predicted_unbounded"]
        else (f"{pred:,.1f}/s" if pred is not None else "unknown")
    )
    meas = c["sustainable_rate_measured"]
    meas_text = f"{meas:,.1f}/s" if meas is not None else "not measured"
    console.print(
        f"sustainable rate: predicted {pred_text}, measured {meas_text} "
        f"({c['sustainable_rate_measured_basis']})",
        markup=False,
    )
