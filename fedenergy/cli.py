"""The `fedenergy` command: simulate, compare, report, meters."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fedenergy.analysis.console import print_comparison, print_summary, round_printer
from fedenergy.physics.infra import MODELS
from fedenergy.settings import Settings
from fedenergy.sim.app_runner import add_app_options
from fedenergy.sim.backend import add_backend_options, backend_from_args


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.app is not None:  # a user's Flower app directory (fedenergy.sim.app_runner)
        from fedenergy.sim.app_runner import app_command

        return app_command(args, round_printer)
    settings = Settings(
        task=args.task,
        nodes=args.nodes,
        rounds=Settings.rounds if args.rounds is None else args.rounds,
        fraction=args.fraction,
        fraction_evaluate=args.fraction_evaluate,
        fleet=args.fleet,
        seed=args.seed,
        partitioner=args.partitioner,
        dirichlet_alpha=args.alpha,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        infra_kwh_per_gb=args.infra_kwh_per_gb,
        boundary=args.boundary,
        startup=args.startup,
        infra_model=args.infra_model,
        codec=args.codec,
        **strategy_settings(args),
        strict_reports=args.strict_reports,
        keepalive=args.keepalive,
        checkpoint_keep=args.checkpoint_keep,
        out=args.out,
        catalog=tuple(args.catalog or ()),
    )
    from fedenergy.plan import plan_run

    console = Console(stderr=False)
    run = None
    try:  # the edge of the run: its settings are resolved here, once
        if args.resume:
            from fedenergy.sim.resume import load_run

            plan, run = load_run(args.resume)
        else:
            plan = plan_run(settings)
        backend = backend_from_args(args)
        backend.connect(args.verbose)  # a cluster that cannot run the clients: nothing is run
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    settings = plan.settings
    from fedenergy.sim.engine import simulate

    if run is not None:
        if run["status"] == "completed":
            console.print(f"run {run['run_id']} in {args.resume} is already completed")
            return 0
        last = run["last_round"]
        console.print(
            f"resuming run {run['run_id']} after round {'-' if last is None else last} "
            f"(status {run['status']})"
        )
    console.print(
        f"fedenergy: {settings.nodes} nodes of fleet '{settings.fleet}', task '{settings.task}', "
        f"{settings.rounds} rounds, {settings.fraction:g} of nodes per round, seed {settings.seed}"
    )
    queried = settings.discovery == "query"
    start, progress = time.monotonic(), round_printer(console, settings.rounds, queried)
    try:
        summary = simulate(plan, on_round=progress, verbose=args.verbose, backend=backend)
    except Exception as err:  # a failed run: say why (the ledger keeps the reason), exit 1
        console.print(f"[red]run failed:[/red] {escape(str(err))}", soft_wrap=True)
        console.print(f"ledger: {Path(settings.out) / 'ledger.sqlite'}", soft_wrap=True)
        return 1
    print_summary(console, summary)
    console.print(
        f"ledger: {Path(settings.out) / 'ledger.sqlite'}   "
        f"summary: {Path(settings.out) / 'summary.json'}   "
        f"wall {time.monotonic() - start:.1f} s"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedenergy.analysis.summary import summarize
    from fedenergy.ledger import Ledger

    path = Path(args.run_dir)
    path = path / "ledger.sqlite" if path.is_dir() else path
    if not path.is_file():
        print(f"error: no ledger at {path}", file=sys.stderr)
        return 2
    with Ledger(path) as ledger:
        runs = ledger.runs()
        if not runs:
            print(f"error: {path} holds no run", file=sys.stderr)
            return 2
        summary = summarize(ledger, args.run_id or runs[-1]["run_id"])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(Console(), summary)
    if not args.no_files:
        from fedenergy.analysis.htmlreport import write_report

        written = write_report(path, run_id=args.run_id)
        print(
            f"report: {written['html']} {written['markdown']}; plots and ledger exports "
            f"(CSV, JSON) in {written['html'].parent}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


SETTINGS_ARGS = {"dirichlet_alpha": "alpha"}  # Settings field -> argparse dest, where they differ


def _settings_from_args(args: argparse.Namespace) -> Settings:
    from dataclasses import fields

    return Settings(
        **{
            f.name: getattr(args, SETTINGS_ARGS.get(f.name, f.name))
            for f in fields(Settings)
            if getattr(args, SETTINGS_ARGS.get(f.name, f.name), None) is not None
        }
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from fedenergy.analysis.compare import compare_run, write_comparison
    from fedenergy.analysis.htmlreport import write_report
    from fedenergy.plan import plan_run

    console = Console()
    settings = _settings_from_args(args)
    try:
        plan = plan_run(settings)
        if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
            raise ValueError(f"target-accuracy must be in (0, 1], got {args.target_accuracy!r}")
        if args.max_epochs <= 0:
            raise ValueError(f"max-epochs must be a positive integer, got {args.max_epochs!r}")
        if plan.catalog.device(args.datacenter).kind != "datacenter":
            raise ValueError(f"device {args.datacenter!r} is not a datacenter profile")
        backend = backend_from_args(args)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    out = Path(settings.out)
    if args.from_run:
        ledger_path = Path(args.from_run)
        ledger_path = ledger_path / "ledger.sqlite" if ledger_path.is_dir() else ledger_path
        if not ledger_path.is_file():
            console.print(f"[red]error:[/red] no ledger at {ledger_path}")
            return 2
    else:
        from fedenergy.sim.engine import simulate

        console.print(
            f"fedenergy compare: {settings.nodes} nodes of fleet '{settings.fleet}', task "
            f"'{settings.task}', {settings.rounds} rounds, seed {settings.seed}; centralized on "
            f"{args.datacenter} in {args.datacenter_country}"
        )
        cumulative = [0.0]

        def progress(o) -> None:
            cumulative[0] += o.joules
            acc = "-" if o.accuracy is None else f"{o.accuracy:.4f}"
            console.print(f"  round {o.server_round}: acc {acc}  total {cumulative[0]:8.4g} J")

        try:
            simulate(plan, on_round=progress, verbose=args.verbose, backend=backend)
        except Exception as err:
            console.print(f"[red]run failed:[/red] {err}")
            return 1
        ledger_path = out / "ledger.sqlite"
    comp = compare_run(
        ledger_path,
        args.target_accuracy,
        args.datacenter,
        args.datacenter_country,
        args.max_epochs,
        measure=not args.no_measure,
    )
    write_comparison(out, comp)
    written = write_report(ledger_path, out_dir=out)
    if args.json:
        print(json.dumps(comp, indent=2))
        return 0
    print_comparison(console, comp)
    console.print(
        f"comparison: {out / 'comparison.json'}   report: {written['html']}   "
        f"ledger: {ledger_path}",
        soft_wrap=True,
    )
    return 0


def cmd_meters(args: argparse.Namespace) -> int:
    from fedenergy.meters.cli import run_meters_command

    return run_meters_command(sample_s=args.sample, as_json=args.json, sysfs_root=args.sysfs_root)


STRATEGY_OPTIONS = (
    ("downlink", str, "global-model codec with --compression fixed: none, fp16, int8"),
    (
        "selector",
        str,
        "who trains: random (FedAvg's baseline), greedy (cheapest forecast "
        "joules) or utility (Oort-style utility per joule with exploration and fairness)",
    ),
    (
        "compression",
        str,
        "uplink codec policy: fixed (--codec for all), per-link (expensive "
        "links compress harder) or accuracy-aware (per-link, relaxed while accuracy stalls)",
    ),
    ("aggregator", str, "Flower aggregation: fedavg, fedprox or fedadam"),
    ("proximal_mu", float, "FedProx proximal term mu"),
    (
        "discovery",
        str,
        "how node profiles are learned: query (ask every node up front, round 0) or lazy "
        "(from each node's first reply; no up-front messages)",
    ),
    ("exploration", float, "utility selector: share of slots for unexplored nodes"),
    ("max_staleness", int, "utility selector: a node idle this many rounds is included"),
    (
        "energy_weight",
        float,
        "utility selector: score = utility / forecast joules ** this (0: ignore energy)",
    ),
    ("battery_floor", float, "skip battery nodes that would fall below this charge (0: off)"),
    ("round_budget_j", float, "forecast joules per round stay within this budget (0: off)"),
    (
        "target_accuracy",
        float,
        "stop once the server accuracy reaches this (0: off; --rounds is then a cap)",
    ),
    ("round_timeout_s", float, "seconds to wait for replies in a round"),
    (
        "min_nodes",
        int,
        "a round with fewer usable train replies (or all selected, if fewer) is short",
    ),
    ("max_short_rounds", int, "stop the run (failed) after this many short rounds in a row"),
)


def add_strategy_options(parser: argparse.ArgumentParser, d: Settings) -> None:
    """Options of the energy-aware strategy (shared by commands that run a federation)."""
    for name, typ, text in STRATEGY_OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=typ,
            default=getattr(d, name),
            help=f"{text} (default {getattr(d, name)})",
        )


def strategy_settings(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name, _, _ in STRATEGY_OPTIONS if hasattr(args, name)}


# simulate's options that compare does not take: it has its own --out and --target-accuracy
# (both sides must reach it; the federated run then also stops there) and runs no app
NOT_COMPARED = ("help", "out", "target_accuracy", "resume", "app", "run_config")


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog="fedenergy", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="run a simulated federation and account its energy")
    s.add_argument("--task", default=d.task, help="digits (default) or synthetic")
    s.add_argument("--nodes", type=int, default=d.nodes, help="number of simulated nodes")
    rounds_help = f"federated rounds (default {d.rounds}; with --app: the app's num-server-rounds)"
    s.add_argument("--rounds", type=int, default=None, help=rounds_help)
    s.add_argument(
        "--fraction",
        type=float,
        default=d.fraction,
        help="fraction of nodes that train each round, in (0, 1]",
    )
    s.add_argument(
        "--fraction-evaluate",
        type=float,
        default=d.fraction_evaluate,
        help="fraction of nodes that evaluate locally each round, in [0, 1]",
    )
    s.add_argument("--fleet", default=d.fleet, help="fleet name (simulations/fleets) or TOML path")
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--partitioner", default=d.partitioner, help="iid or dirichlet")
    s.add_argument("--alpha", type=float, default=d.dirichlet_alpha, help="Dirichlet alpha")
    s.add_argument("--local-epochs", type=int, default=d.local_epochs)
    s.add_argument("--batch-size", type=int, default=d.batch_size)
    s.add_argument("--lr", type=float, default=d.lr)
    s.add_argument(
        "--infra-kwh-per-gb",
        type=float,
        default=d.infra_kwh_per_gb,
        help="network infrastructure intensity of the per-byte model (0 excludes it)",
    )
    s.add_argument(
        "--infra-model",
        choices=MODELS,
        default=d.infra_model,
        help="network infrastructure model: per-byte (kWh/GB, the default) or power "
        "(baseline power over the call + marginal per byte; docs/constants.md)",
    )
    s.add_argument(
        "--boundary",
        choices=("device", "marginal"),
        default=d.boundary,
        help="energy accounting boundary: device (whole-device, the default) or marginal "
        "(above idle)",
    )
    s.add_argument(
        "--startup",
        choices=("per-call", "off"),
        default=d.startup,
        help="charge the start-up of Flower's per-message ClientApp process (per-call, the "
        "default) or not (off)",
    )
    s.add_argument(
        "--codec",
        default=d.codec,
        help="uplink update codec: none (default), fp16, int8, int8:channel, topk:0.01, "
        "stc:0.09, stcb:0.02 (these three with error feedback), qsgd:16",
    )
    add_strategy_options(s, d)
    s.add_argument(
        "--strict-reports",
        action="store_true",
        default=d.strict_reports,
        help="refuse replies without an energy report (default: a stock Flower app's replies "
        "are accepted, their network energy modeled from bytes, their compute unmetered)",
    )
    s.add_argument(
        "--keepalive",
        action="store_true",
        default=d.keepalive,
        help="account a deployed SuperNode's keep-alive traffic (polls every 3 s, heartbeats "
        "every ~20 s, flwr 1.42) in the radio between a node's calls (default: off)",
    )
    s.add_argument(
        "--checkpoint-keep",
        type=int,
        default=d.checkpoint_keep,
        help="keep the model checkpoints of the last N committed rounds, for --resume "
        f"(OUT/checkpoints/; 0 keeps all; default {d.checkpoint_keep})",
    )
    s.add_argument("--out", default=d.out, help="output directory (ledger.sqlite, summary.json)")
    s.add_argument(
        "--catalog",
        action="append",
        default=None,
        metavar="PATH",
        help="a user catalog (a TOML file or a directory of them: your own devices, links, "
        "fleets and tasks, docs/catalogs.md), merged over the packaged one; repeatable",
    )
    s.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    s.add_argument(
        "--resume",
        default=None,
        metavar="OUT_DIR",
        help="continue the latest run in OUT_DIR from its last committed round, with its saved "
        "settings (other options are ignored)",
    )
    add_app_options(s)
    add_backend_options(s)
    s.set_defaults(func=cmd_simulate)
    r = sub.add_parser("report", help="print the summary of a saved ledger")
    r.add_argument("run_dir", help="a run directory or a ledger.sqlite file")
    r.add_argument("--run-id", default=None, help="which run (default: the latest)")
    r.add_argument("--json", action="store_true")
    r.add_argument(
        "--no-files",
        action="store_true",
        help="only print; do not rewrite report.html/md, plots and ledger exports in RUN_DIR",
    )
    r.set_defaults(func=cmd_report)
    c = sub.add_parser(
        "compare",
        help="a federated run against the centralized baseline, to the same accuracy",
    )
    for action in s._actions:  # the simulate options (argparse's own `parents` mechanism)
        if action.option_strings and action.dest not in NOT_COMPARED:
            c._add_action(action)
    c.add_argument("--out", default="runs/compare", help="output directory")
    c.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="server accuracy both sides must reach (default: the federated final accuracy)",
    )
    c.add_argument("--datacenter", default="gpu-server", help="gpu-server (default) or cpu-server")
    c.add_argument(
        "--datacenter-country", default="USA", help="ISO-3166 alpha-3 of the datacenter's grid"
    )
    c.add_argument("--max-epochs", type=int, default=200, help="cap on centralized epochs")
    c.add_argument(
        "--from-run", default=None, help="compare a saved federated run (dir or ledger) instead"
    )
    c.add_argument(
        "--no-measure", action="store_true", help="do not meter the centralized training here"
    )
    c.add_argument("--json", action="store_true", help="print comparison.json")
    c.set_defaults(func=cmd_compare)
    m = sub.add_parser("meters", help="what this host can measure, and a short sample")
    m.add_argument("--sample", type=float, default=0.0, help="seconds to sample")
    m.add_argument("--json", action="store_true")
    m.add_argument("--sysfs-root", default=None, help="read sysfs/procfs under this directory")
    m.set_defaults(func=cmd_meters)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
