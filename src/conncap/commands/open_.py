"""``conncap open``: open and hold connections fast, classify every failure, find the ceiling."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from conncap.result import Result, Sample

#: Seconds ``open`` holds what it opened before it closes them (``--hold``).
DEFAULT_HOLD = 5.0

HELP = "open and hold connections fast, from many source IPs to many ports; find the ceiling"

EXAMPLES = """\
examples:
  conncap open 127.0.0.1:5000 --count 10000             # hold 10,000, then 5 s more
  conncap open 127.0.0.1:5000-5009 --source-ip auto --count 200000 --hold 0
  conncap open [::1]:5000 --count 100                   # IPv6: the address in brackets
  conncap open 127.0.0.1:5000 --rate 150 --lifetime 0 --duration 10   # churn, TIME_WAIT
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conncap.commands.checks import int_or_auto, int_range, nonneg_float, positive_float

    parser.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="host:port, host:P1-P2, or [IPv6]:port (e.g. [::1]:5000)",
    )
    parser.add_argument(
        "--count", type=int_range(1), metavar="N", help="connections to open (default 1000)"
    )
    parser.add_argument(
        "--rate", type=positive_float, metavar="R", help="connects per second (default: max)"
    )
    parser.add_argument(
        "--source-ip",
        action="append",
        metavar="IP|CIDR|auto",
        help="source address(es): an IP, a CIDR, A-B, a comma list or auto; repeatable",
    )
    parser.add_argument(
        "--workers",
        type=int_or_auto(1),
        default=None,
        metavar="N|auto",
        help="processes (auto, the default: as descriptors need)",
    )
    parser.add_argument(
        "--hold",
        type=nonneg_float,
        default=None,
        metavar="S",
        help=f"hold S seconds once the ramp is over, to look at them (default {DEFAULT_HOLD:g}; "
        "0: stop at once)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=3.0,
        metavar="S",
        help="handshake timeout, then ETIMEDOUT (default 3, as in run)",
    )
    parser.add_argument(
        "--bind-mode",
        choices=("kernel", "explicit"),
        default="kernel",
        help="kernel: connect() picks the port (as programs do); explicit: conncap binds each "
        "port of the range itself (fast near exhaustion)",
    )
    parser.add_argument(
        "--nofile",
        type=int_range(16),
        metavar="N",
        help="each worker's RLIMIT_NOFILE (default: hard limit)",
    )
    parser.add_argument(
        "--max-duration",
        type=positive_float,
        default=600.0,
        metavar="S",
        help="stop the whole run after S seconds (default 600)",
    )
    parser.add_argument(
        "--send",
        metavar="TEXT",
        help="write TEXT (escapes allowed: 'PING\\r\\n') on every connection and record the "
        "first reply; a connection whose TEXT is not acknowledged within --timeout is not held",
    )
    parser.add_argument("--json", metavar="FILE", help="write the conncap.result/2 document here")
    from conncap.commands.open_churn import add_churn_arguments

    add_churn_arguments(parser)
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run one agent per node of this Ray cluster (ADDRESS as `ray start` prints it, "
        "or auto), each with its share of --count; needs pip install 'conncap[ray]'",
    )
    parser.add_argument(
        "--nodes", type=int, metavar="N", help="with --cluster: use N nodes (default: all)"
    )
    from conncap.observe import add_observe_arguments

    add_observe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime as dt

    from rich.console import Console

    from conncap.commands.checks import check_output_file
    from conncap.commands.liveline import StatusLine
    from conncap.engine.plan import check_plan
    from conncap.engine.results import open_result, predict
    from conncap.errors import RunFailed, UsageError
    from conncap.exitcodes import ExitStatus
    from conncap.measure import Launch, Measurement
    from conncap.observe.session import Observers
    from conncap.probes.target import local_target
    from conncap.result import write_atomic
    from conncap.stopping import SignalStop

    check_output_file(args.json, "--json")
    if args.cluster:
        return _run_cluster(args)
    if args.nodes is not None:
        raise UsageError("--nodes needs --cluster ADDRESS")
    from conncap.commands.open_churn import run_churn, wants_churn
    from conncap.commands.open_plan import build_plan

    if wants_churn(args):  # churn: open --lifetime S --rate R (docs/engine.md)
        return run_churn(args)
    if args.count is None:
        args.count = 1000
    if args.hold is None:
        args.hold = DEFAULT_HOLD
    plan, notes = build_plan(args)
    if args.send is not None:
        plan = dataclasses.replace(plan, send=parse_send(args.send))
    check_plan(plan)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    obs = Observers.from_args(args, "open", say=lambda text: console.print(text, markup=False))
    for note in notes:
        console.print(f"conncap: {note}", markup=False)
    prediction = predict(plan, args.nofile)

    sig = SignalStop(obs.on_signal)
    stop = sig.event

    argv = getattr(args, "_argv", ())
    obs.start(argv, plan=plan.to_json())
    sig.install()
    started = dt.datetime.now(dt.UTC)
    probe, read_target = local_target(plan.destinations())
    hold_end: list[float] = []
    line = StatusLine(console)

    def on_sample(sample: Sample) -> None:
        left = max(0.0, hold_end[0] - sample.t) if hold_end else None
        line.update(_progress(sample, plan.count, hold_left=left))
        obs.on_sample(sample, m.last_totals)

    m = Measurement(
        stop=stop,
        deadline_s=args.max_duration,
        on_sample=on_sample,
        on_event=obs.on_event,
        probe=probe,
        target=read_target,
    )
    stop_reason = "error"
    try:
        with line:
            step = m.begin("open", [Launch(plan, nofile=args.nofile)])
            outcome = m.ramp(step)
            verdict = m.conclude(step, settle="none")
            stop_reason = outcome
            if outcome == "ramp-over":
                stop_reason = "ceiling" if verdict.reached else "count"
                if plan.hold_s > 0 and m.client_totals().held > 0:  # nothing to look at
                    hold_end.append(m.now() + plan.hold_s)
                    why_hold = m.hold("open", plan.hold_s)
                    if why_hold is not None:
                        stop_reason = why_hold
                    elif stop_reason == "count":
                        stop_reason = "hold"
                    # What the server did while they were held counts too (an idle timeout
                    # closes them during the hold): the verdict is read again at its end.
                    held_then = m.client_totals().held
                    if not verdict.reached and held_then < plan.count:
                        verdict = m.conclude(step, settle="none")
                        if verdict.reached:
                            stop_reason = "ceiling"
            final = m.client_totals()
            if verdict.reached and verdict.count is not None and verdict.count < final.held:
                # held means held: the rest exist only at the client (read on the server's side)
                notes.append(
                    f"{final.held - verdict.count:,} connections established at the client "
                    "only (not on the server's side): not counted as held"
                )
                final.held = verdict.count
            peak = max((s.held for s in m.timeline), default=0)
            if m.timeline:  # the last line shows the final figures, not a lagging sample
                line.update(
                    _progress(m.timeline[-1], plan.count, held=final.held, final=True),
                    force=True,
                )
    finally:
        _, problems = m.close()
        sig.restore()
        obs.close(stop_reason=stop_reason, held_at_end=m.last_totals.held)
    result = open_result(
        plan,
        final,
        m.timeline,
        verdict=verdict,
        peak=peak,
        workers=sum(len(p.pids()) for p in step.pools) or plan.workers,
        started_at=started,
        duration_s=m.now(),
        stop_reason=stop_reason,
        prediction=prediction,
        notes=[*notes, *(f"clean-up: {exc}" for exc in problems)],
        closes=step.facts.closes if step.facts is not None else None,
        target=m.target,
        argv=argv,
    )
    if args.json:
        write_atomic(args.json, result)
    _summary(console, result)
    if stop_reason == "interrupted":
        return sig.exit_status(ExitStatus.INTERRUPTED)
    if peak == 0:
        # Nothing answered (refused, timed out, unreachable): a run that held nothing
        # measured no ceiling of this host; the verdict above says what stopped it.
        r = result.ceiling
        why_none = f" ({r.errno}, cause {r.cause})" if r.reached else ""
        raise RunFailed(f"no connection was established: every attempt failed{why_none}")
    return ExitStatus.SUCCESS


def _run_cluster(args: argparse.Namespace) -> int:
    import sys

    from conncap.cluster.driver import run_open

    if args.count is None:  # the default, as without --cluster
        args.count = 1000

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    _, code = run_open(args, say)
    return code


def parse_send(text: str) -> bytes:
    """``--send``'s TEXT with Python-style escapes (``\\r``, ``\\n``, ``\\xNN``) as bytes."""
    import codecs

    from conncap.errors import UsageError

    try:
        data = codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as exc:
        raise UsageError(f"--send: bad escape in {text!r} ({exc})") from None
    if not isinstance(data, bytes) or not data:
        raise UsageError("--send needs a non-empty TEXT")
    return data


def _progress(
    sample: Sample,
    requested: int,
    *,
    held: int | None = None,
    hold_left: float | None = None,
    final: bool = False,
) -> str:
    """The status line: elapsed, held of requested, rate, failures, hold countdown."""
    from conncap.commands.liveline import elapsed_text

    fails = ", ".join(f"{k} {v:,}" for k, v in sorted(sample.failures_by_cause.items())) or "none"
    n = sample.held if held is None else held
    when = f"[{elapsed_text(sample.t)}]"
    if hold_left is not None and not final:
        when = f"[{elapsed_text(sample.t)} · holding, {elapsed_text(hold_left)} left]"
    rate = "" if final else f" · {sample.rate:,.0f} conn/s{latency_text(sample)}"
    return f"{when} held {n:,}/{requested:,}{rate} · failures {fails}"


def latency_text(sample: Sample) -> str:
    """`` · connect p50/p99 A/B ms`` of the sample's interval (empty when none completed)."""
    p50, p99 = sample.latency_p50_ms, sample.latency_p99_ms
    if p50 is None or p99 is None:
        return ""
    from conncap.latency import format_ms

    return f" · connect p50/p99 {format_ms(p50)}/{format_ms(p99)} ms"


def latency_line(r: Result) -> str | None:
    """The summary's latency line (None: no connection measured)."""
    from conncap.latency import format_ms

    lat = r.latency
    if lat is None:
        return None
    parts = [
        f"{name} {format_ms(v)} ms"
        for name, v in (
            ("p50", lat.p50_ms),
            ("p90", lat.p90_ms),
            ("p99", lat.p99_ms),
            ("p99.9", lat.p999_ms),
            ("max", lat.max_ms),
        )
        if v is not None
    ]
    return f"connect latency (connect() to writable, {lat.count:,} connections): " + ", ".join(
        parts
    )


def _summary(console: Console, r: Result) -> None:
    c = r.ceiling
    console.print(
        f"held {r.held_at_end:,} of {r.requested:,} requested "
        f"(peak {r.established_peak:,}), {r.attempts or 0:,} attempts, "
        f"{r.duration_s:.1f} s, stopped by {r.stop_reason}"
    )
    if r.failures:
        console.print("failures: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.failures.items())))
    from conncap.report.summary import server_side_lines

    for line in server_side_lines(r):
        console.print(line, markup=False)
    lat = latency_line(r)
    if lat is not None:
        console.print(lat, markup=False)
    if c.reached:
        count = f"{c.count:,}" if c.count is not None else "?"
        sure = f", {c.certainty}" if c.certainty else ""
        console.print(
            f"ceiling: {count} connections, cause {c.cause} ({c.errno}, {c.side}{sure}): "
            f"{c.evidence}",
            markup=False,
        )
        if c.knob:
            console.print(f"  knob: {c.knob}", markup=False)
        for line in c.advice:
            console.print(f"  raise it: {line}", markup=False)
        if c.windows:
            console.print(f"  Windows: {c.windows}", markup=False)
    p = r.prediction
    if p.count is not None:
        console.print(f"model predicted: {p.count:,} ({p.cause})")
    elif p.reason:
        console.print(f"model prediction: unknown ({p.reason})")
