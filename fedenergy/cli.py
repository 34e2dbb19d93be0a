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
from fedenergy.cli_parser import build_parser, strategy_settings  # noqa: F401 (re-exported)
from fedenergy.settings import Settings
from fedenergy.sim.backend import backend_from_args


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
    from fedenergy.analysis.runs import find_runs
    from fedenergy.analysis.summary import summarize
    from fedenergy.ledger import Ledger

    try:
        refs = find_runs(args.run_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = refs[0].ledger
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

        first = Path(args.run_dir[0])
        # a directory of run directories gets the report itself; a run, in its own directory
        out = first if first.is_dir() and first != path.parent else path.parent
        written = write_report(
            path, out_dir=out, run_id=args.run_id, others=refs[1:], label=refs[0].label
        )
        print(
            f"report: {written['html']} {written['markdown']}; plots and ledger exports "
            f"(CSV, JSON) in {written['html'].parent}"
            + (f"; {len(refs)} runs' curves" if len(refs) > 1 else ""),
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


COMMANDS = {
    "simulate": cmd_simulate,
    "report": cmd_report,
    "compare": cmd_compare,
    "meters": cmd_meters,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
