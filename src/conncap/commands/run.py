"""``conncap run``: the complete, safe experiment over loopback: predict the ceiling, find it,
lift it by changing the 4-tuple, measure memory per connection, and explain it all.
``--isolated`` runs it between a client and a server namespace instead, with the settings
given applied inside them only."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from conncap.run import RunConfig

HELP = (
    "the whole experiment: predict the ceiling, find it over loopback, lift it, measure "
    "memory per connection, and explain"
)

EXAMPLES = """\
examples:
  conncap run                                  # 100,000 connections at most, 120 s at most
  conncap run --out results/                   # + results/result.json and results/report.html
  conncap run --count 20000 --no-escalate --json r.json
  sudo conncap run --isolated --port-range 1024-5000   # the article's client, in namespaces
"""

# Defaults repeated here so that `conncap --help` does not import the engine.
_COUNT = 100_000
_MAX_DURATION = 120.0
_GUARD = 0.25

#: Set in the environment of a conncap re-run inside a user namespace (no second re-run).
USERNS_ENV = "CONNCAP_IN_USERNS"


def no_report(json_path: str | None) -> str:
    """Where the HTML report would have gone, for a run without ``--out``."""
    if json_path:
        return (
            f"no HTML report written: `conncap report {json_path}` writes it, "
            "or add --out DIR for the HTML report and the JSON"
        )
    return (
        "no files written: add --out DIR for the HTML report and the JSON "
        "(DIR/report.html, DIR/result.json)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conncap.commands.checks import (
        float_range,
        int_or_auto,
        int_range,
        nonneg_float,
        positive_float,
    )

    _workers = int_or_auto(1)
    parser.add_argument(
        "--count",
        type=int_range(1),
        default=_COUNT,
        metavar="N",
        help=f"connections to hold at most (default {_COUNT:,}: past a default Linux port range)",
    )
    parser.add_argument(
        "--max-duration",
        type=positive_float,
        default=_MAX_DURATION,
        metavar="S",
        help=f"stop the whole run after S seconds (default {_MAX_DURATION:.0f})",
    )
    parser.add_argument(
        "--memory-guard",
        type=float_range(0.0, 1.0, hi_open=True),
        default=_GUARD,
        metavar="FRACTION",
        help="stop before MemAvailable falls below this fraction of its value at the start "
        f"(default {_GUARD})",
    )
    parser.add_argument(
        "--no-escalate",
        dest="escalate",
        action="store_false",
        help="only step 1 (one source IP to one port); skip step 2, which changes the 4-tuple",
    )
    parser.add_argument(
        "--source-ips",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="step 2: source addresses 127.0.0.1 .. 127.0.0.N (--isolated: the client's own, "
        "then 198.19.0.x; auto: enough that each (source IP, port) pair stays at most half "
        "full)",
    )
    parser.add_argument(
        "--ports",
        type=int_or_auto(1, 1000),
        default=None,
        metavar="N|auto",
        help="step 2: server ports (auto: as for --source-ips)",
    )
    parser.add_argument(
        "--client-workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="client processes per step (auto: as descriptors require)",
    )
    parser.add_argument(
        "--server-workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="server processes (auto: as descriptors require for --count)",
    )
    parser.add_argument(
        "--client-nofile",
        type=int_range(64),
        metavar="N",
        help="each client worker's RLIMIT_NOFILE (default: the hard limit; a process "
        "setting, so also without --isolated)",
    )
    parser.add_argument(
        "--server-nofile",
        type=int_range(64),
        metavar="N",
        help="each server worker's RLIMIT_NOFILE (default: the hard limit; a process "
        "setting, so also without --isolated)",
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        metavar="R",
        help="connects per second per step (default: max)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=3.0,
        metavar="S",
        help="handshake timeout (default 3)",
    )
    parser.add_argument(
        "--plateau",
        type=nonneg_float,
        default=1.5,
        metavar="S",
        help="seconds each step's level is held and sampled (default 1.5)",
    )
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="measure a server conncap does not start (yours: redis, nginx, ...) instead of "
        "its own; step 2 adds source IPs only. IPv6: [::1]:PORT",
    )
    parser.add_argument(
        "--churn",
        action="store_true",
        help="after the steps, a churn step: open and close connections for 6 s (FIN by the "
        "client) and compare the sustainable rate of new connections with the model's",
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="with --target: run the steps on every node of this Ray cluster (one agent per "
        "node, each its share of --count; ADDRESS as `ray start` prints it, or auto); needs "
        "pip install 'conncap[ray]'",
    )
    parser.add_argument(
        "--nodes", type=int, metavar="N", help="with --cluster: use N nodes (default: all)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the conncap.result/2 document here")
    parser.add_argument(
        "--out", metavar="DIR", help="write DIR/result.json and DIR/report.html (plots)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no live view or progress, only the summary"
    )
    from conncap.scenarios.isolated import add_isolated_arguments

    # --client-nofile/--server-nofile are run's own (above): one flag per setting.
    add_isolated_arguments(parser)
    from conncap.observe import add_observe_arguments

    add_observe_arguments(parser)


def rerun_argv(args: argparse.Namespace) -> list[str]:
    """The command line that repeats this ``conncap run`` (for the re-run inside a user
    namespace); paths made absolute."""
    argv = [sys.executable, "-m", "conncap", "run"]
    for flag, value in (
        ("--count", args.count),
        ("--max-duration", args.max_duration),
        ("--memory-guard", args.memory_guard),
        ("--source-ips", args.source_ips),
        ("--ports", args.ports),
        ("--client-workers", args.client_workers),
        ("--server-workers", args.server_workers),
        ("--client-nofile", args.client_nofile),
        ("--server-nofile", args.server_nofile),
        ("--rate", args.rate),
        ("--timeout", args.timeout),
        ("--plateau", args.plateau),
        ("--port-range", args.port_range),
        ("--somaxconn", args.somaxconn),
        ("--max-syn-backlog", args.max_syn_backlog),
        ("--syncookies", args.syncookies),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if getattr(args, "metrics", None):
        argv += ["--metrics", args.metrics]
    for flag, path in (("--json", args.json), ("--out", args.out), ("--events", args.events)):
        if path:
            argv += [flag, path if path == "-" else os.path.abspath(path)]
    for flag, on in (
        ("--no-escalate", not args.escalate),
        ("--churn", args.churn),
        ("--isolated", args.isolated),
        ("--quiet", args.quiet),
        ("--traceback", getattr(args, "traceback", False)),
    ):
        if on:
            argv.append(flag)
    return argv


def _rerun_in_userns(args: argparse.Namespace) -> int | None:
    """Not root, but the kernel allows unprivileged user namespaces: run this same command
    as root of a private user + network namespace (nothing of it is visible to the host, all
    of it goes when the command ends). None when that is not possible (the caller reports
    why, in one line)."""
    import signal
    import subprocess

    from conncap.netns import support, userns_command

    if os.geteuid() == 0 or os.environ.get(USERNS_ENV):
        return None
    if not support.check_support().userns:
        return None
    env = dict(os.environ, **{USERNS_ENV: "1"})
    sys.stderr.write("conncap: not root; running inside an unprivileged user namespace\n")
    # Its own session: a Ctrl-C at the terminal reaches this process only, which passes
    # exactly one SIGINT per Ctrl-C on to the run, by pid (the run then stops and writes
    # what it measured, as it does on its own).
    proc = subprocess.Popen(userns_command(rerun_argv(args)), env=env, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def check_cluster_flags(args: argparse.Namespace, *, isolated: bool) -> None:
    """``--cluster`` measures the user's server from every node: one line (exit 2) for a
    flag that does not go with it, and for ``--nodes`` without it."""
    from conncap.errors import UsageError

    if not args.cluster:
        if args.nodes is not None:
            raise UsageError("--nodes needs --cluster ADDRESS")
        return
    if args.target is None:
        raise UsageError(
            "--cluster needs --target HOST:PORT: the nodes measure your server (conncap "
            "starts no server of its own on a cluster)"
        )
    if isolated:
        raise UsageError("--cluster and --isolated do not go together: the nodes are the hosts")
    for flag, value in (("--events", args.events), ("--metrics", getattr(args, "metrics", None))):
        if value:
            raise UsageError(f"{flag} is not available with --cluster (yet): use --json")
    if args.nodes is not None and args.nodes < 1:
        raise UsageError("--nodes must be at least 1")


def _run_cluster(args: argparse.Namespace, config: RunConfig, out_dir: Path | None) -> int:
    """``run --target --cluster``: the driver (``conncap.cluster.driver.run_run``), then the
    result written and the summary printed as a run's."""
    from conncap.cluster.driver import run_run
    from conncap.result import write_atomic

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    result, code = run_run(args, config.to_json(), say)
    for line in result.summary:
        say(line)
    if args.json:
        say(f"wrote {write_atomic(args.json, result)}")
    if out_dir is not None:
        from conncap import report

        say(f"wrote {write_atomic(out_dir / 'result.json', result)}")
        say(f"wrote {report.write_text_atomic(out_dir / 'report.html', report.render(result))}")
    else:
        say(no_report(args.json))
    return code


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from contextlib import ExitStack
    from pathlib import Path

    from rich.console import Console

    from conncap.commands.checks import (
        check_count,
        check_output_dir,
        check_output_file,
        check_workers,
        host_capacity,
    )
    from conncap.errors import RunFailed, UsageError
    from conncap.exitcodes import ExitStatus
    from conncap.observe.session import Observers
    from conncap.result import Result, write_atomic
    from conncap.run import Experiment, RunConfig
    from conncap.run.config import Observer, Progress
    from conncap.run.live import LiveView, print_summary
    from conncap.scenarios.isolated import (
        MAX_SOURCE_IPS,
        check_nofile,
        isolated_pair,
        settings_from_args,
    )
    from conncap.stopping import SignalStop

    settings = settings_from_args(args)  # None without --isolated
    check_cluster_flags(args, isolated=settings is not None)
    if settings is not None and args.source_ips is not None and args.source_ips > MAX_SOURCE_IPS:
        raise UsageError(f"--source-ips: at most {MAX_SOURCE_IPS:,} with --isolated")
    host, target_port = "127.0.0.1", None
    if args.target is not None:
        from conncap.engine.plan import parse_target

        if settings is not None:
            raise UsageError(
                "--target and --isolated do not go together: --isolated starts conncap's own "
                "server in a namespace"
            )
        t = parse_target(args.target)
        if t.lo != t.hi:
            raise UsageError(f"--target {args.target}: one port, not a range")
        host, target_port = t.host, t.lo
    config = RunConfig(
        count=args.count,
        max_duration=args.max_duration,
        memory_guard=args.memory_guard,
        escalate=args.escalate,
        source_ips=args.source_ips,
        ports=args.ports,
        client_workers=args.client_workers,
        server_workers=args.server_workers,
        rate=args.rate,
        timeout_s=args.timeout,
        plateau_s=args.plateau,
        client_nofile=args.client_nofile,
        server_nofile=args.server_nofile,
        host=host,
        target_port=target_port,
        churn=args.churn,
    )
    config.check()
    for flag, nofile in (
        ("--client-nofile", args.client_nofile),
        ("--server-nofile", args.server_nofile),
    ):
        if nofile is not None:
            check_nofile(nofile, flag)  # above `ulimit -Hn` no worker could take it
    out_dir = Path(args.out) if args.out else None
    check_output_file(args.json, "--json")
    check_output_dir(args.out, "--out")
    if args.cluster:
        return _run_cluster(args, config, out_dir)
    capacity = host_capacity(ends=2, nofile=args.server_nofile)
    check_count(args.count, "--count", capacity)
    for flag, workers in (
        ("--client-workers", args.client_workers),
        ("--server-workers", args.server_workers),
    ):
        if workers is not None:
            check_workers(workers, flag, capacity)
    if settings is not None:
        code = _rerun_in_userns(args)
        if code is not None:
            return code
        from conncap.netns import support

        support.check_support().require()  # RunFailed: one line saying what is missing

    # with --events -, stdout is the event stream: everything else goes to stderr
    console = Console(highlight=False, soft_wrap=True, stderr=args.events == "-")
    mode = "quiet" if args.quiet else ("live" if console.is_terminal else "plain")
    obs = Observers.from_args(args, "run", say=lambda line: console.print(line, markup=False))
    # a second Ctrl-C stops waiting (KeyboardInterrupt; the clean-up still runs)
    stopper = SignalStop(obs.on_signal, second_raises=True)
    stop = stopper.event

    class Tee:
        """The live view, and the event stream for the run's lines."""

        def __init__(self, view: Observer) -> None:
            self.view = view

        def event(self, text: str) -> None:
            self.view.event(text)
            obs.message(text)

        def progress(self, p: Progress) -> None:
            self.view.progress(p)

    doc: Result | None = None
    late: RunFailed | KeyboardInterrupt | None = None
    argv = getattr(args, "_argv", ())
    try:
        with ExitStack() as stack:
            obs.start(argv, config=config.to_json())
            stack.callback(
                lambda: obs.close(
                    stop_reason=doc.stop_reason if doc is not None else "error",
                    held_at_end=doc.held_at_end if doc is not None else None,
                )
            )
            # The namespaces exist only inside this block: removed on success, on an error
            # and on Ctrl-C (a Ctrl-C while they are built or removed is a KeyboardInterrupt).
            pair = stack.enter_context(isolated_pair(settings)) if settings is not None else None
            if pair is not None:
                config = dataclasses.replace(
                    config,
                    host=pair.server_ip,
                    server_netns=pair.server_netns,
                    client_netns=pair.client_netns,
                )
            stopper.install()
            try:
                with LiveView(console, mode) as view:
                    doc = Experiment(
                        config,
                        observer=Tee(view),
                        stop_event=stop,
                        isolated=pair,
                        argv=argv,
                        on_event=obs.on_event,
                        watch=obs.on_sample,
                    ).run()
            finally:
                stopper.restore()
    except (RunFailed, KeyboardInterrupt) as exc:
        if doc is None:
            raise
        late = exc  # the namespaces' removal failed or was interrupted: write what we have
        doc = dataclasses.replace(doc, notes=(*doc.notes, f"clean-up: {str(exc) or 'interrupted'}"))

    written: list[str] = []
    if args.json:
        written.append(str(write_atomic(args.json, doc)))
    if out_dir is not None:
        from conncap import report

        written.append(str(write_atomic(out_dir / "result.json", doc)))
        try:
            written.append(
                str(report.write_text_atomic(out_dir / "report.html", report.render(doc)))
            )
        except OSError as exc:
            raise UsageError(f"{out_dir}: cannot write the report ({exc})") from None
    print_summary(console, list(doc.summary))
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    if out_dir is None:
        console.print(no_report(args.json), markup=False, highlight=False)
    if isinstance(late, RunFailed):
        raise late
    if late is not None or doc.stop_reason == "interrupted":
        return stopper.exit_status(ExitStatus.INTERRUPTED)
    if doc.stop_reason == "error":
        raise RunFailed(doc.error or "the run failed")
    return ExitStatus.SUCCESS
