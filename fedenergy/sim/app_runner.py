"""``fedenergy simulate --app DIR``: a user's Flower app directory on a simulated fleet.

The app directory is what ``flwr run DIR`` takes: a ``pyproject.toml`` whose
``[tool.flwr.app.components]`` names the ServerApp and the ClientApp (``"module:attribute"``,
imported with DIR on ``sys.path``, for the Ray workers too) and whose ``[tool.flwr.app.config]``
is the run config, with overrides in Flower's ``--run-config`` syntax (Flower's own parser).
Both apps see that run config in ``context.run_config``, as under ``flwr run``.

The apps run on Flower's Simulation Engine in this process with virtual SuperNodes named after
their fleet profiles (declared discovery: :func:`fedenergy.sim.hooks.declared_node_names`) and
seeded node ids, as the built-in run does. The app's own ``EnergyAware`` strategy keeps the
books: its default ledger is ``$FEDENERGY_OUT/ledger.sqlite``, and FEDENERGY_OUT is OUT while
the run lasts. The run and ledger each ``EnergyAware.start`` used, and each committed round,
are read from the records that wrapper logs (:mod:`fedenergy.server.wrapper`), so the app needs
no code for the CLI: the live progress and the summary of the run come from there.

A user catalog (``--catalog PATH``, and the app's own run config key ``catalog``: paths
relative to the app directory, several separated by ``os.pathsep``) is the plan's: the fleet's
devices and links come from it, each virtual node knows it (:mod:`fedenergy.sim.node_profiles`)
and FEDENERGY_CATALOG names its files while the run lasts, the default catalog of the app's
``EnergyAware`` (:mod:`fedenergy.server.wrapper`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from rich.console import Console
from rich.markup import escape

from fedenergy.physics.catalog import split_paths
from fedenergy.server.rounds import RoundOutcome
from fedenergy.server.wrapper import CATALOG_ENV, OUT_ENV, ROUND_FIELD, RUN_FIELD
from fedenergy.settings import Settings
from fedenergy.sim.backend import Backend, backend_from_args

if TYPE_CHECKING:
    from fedenergy.plan import RunPlan

ROUNDS_KEY = "num-server-rounds"  # the run config key of Flower's templates that --rounds sets
CATALOG_KEY = "catalog"  # the run config key of the app's own catalog paths (app-relative)
Printer = Callable[[Console, int | None], Callable[[RoundOutcome], None]]


class AppError(ValueError):
    """An app directory that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class FlowerApp:
    """A Flower app directory, read and imported."""

    directory: Path
    pyproject: Path
    server_ref: str  # "module:attribute", as [tool.flwr.app.components] gives it
    client_ref: str
    server_app: ServerApp
    client_app: ClientApp
    run_config: dict  # [tool.flwr.app.config], flattened, with the overrides


def app_table(directory: Path) -> tuple[Path, dict]:
    """(the pyproject path, its ``[tool.flwr.app]`` table); AppError when either is missing
    or the file is not TOML."""
    pyproject = directory / "pyproject.toml"
    if not directory.is_dir():
        raise AppError(f"--app {directory}: not a directory")
    if not pyproject.is_file():
        raise AppError(f"no pyproject.toml in {directory} (a Flower app directory has one)")
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AppError(f"{pyproject} is not valid TOML: {err}") from None
    table = data.get("tool", {}).get("flwr", {}).get("app")
    if not isinstance(table, dict):
        raise AppError(f"{pyproject} has no [tool.flwr.app] table")
    return pyproject, table


def app_run_config(
    pyproject: Path, table: dict, overrides: list[str] | None, rounds: int | None
) -> dict:
    """The app's run config: ``[tool.flwr.app.config]`` flattened (dotted keys, as Flower
    does), then ``overrides`` (``--run-config`` strings, Flower's syntax; only declared keys),
    then ``rounds`` as ``num-server-rounds``. AppError names the file and key."""
    import click
    from flwr.common.config import flatten_dict, parse_config_args

    declared = table.get("config", {})
    if not isinstance(declared, dict):
        raise AppError(f"{pyproject}: [tool.flwr.app.config] must be a table")
    try:
        config = flatten_dict(declared)
    except ValueError as err:
        raise AppError(f"{pyproject}: [tool.flwr.app.config]: {err}") from None
    try:
        given = parse_config_args(overrides) if overrides else {}
    except (ValueError, OSError, click.ClickException) as err:  # TOML errors are ValueErrors
        raise AppError(f"--run-config: {getattr(err, 'message', err)}") from None
    unknown = sorted(set(given) - set(config))
    if unknown:
        raise AppError(
            f"--run-config: {', '.join(map(repr, unknown))} not declared in "
            f"[tool.flwr.app.config] of {pyproject}"
        )
    config.update(given)
    if rounds is not None:
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds <= 0:
            raise AppError(f"rounds must be a positive integer, got {rounds!r}")
        if ROUNDS_KEY not in config:
            raise AppError(
                f"--rounds sets {ROUNDS_KEY}, which [tool.flwr.app.config] of {pyproject} does "
                "not declare (set the app's own key with --run-config)"
            )
        config[ROUNDS_KEY] = rounds
    return config


def app_catalog(pyproject: Path, run_config: dict) -> tuple[str, ...]:
    """The catalog paths of the app's run config key ``catalog`` (one path, or several
    separated by ``os.pathsep``), relative ones taken from the app directory; AppError names
    the file and key of a value that is not paths."""
    if CATALOG_KEY not in run_config:
        return ()
    try:
        paths = split_paths(run_config[CATALOG_KEY])
    except ValueError as err:
        raise AppError(f"{pyproject}: [tool.flwr.app.config] {CATALOG_KEY}: {err}") from None
    return tuple(str(pyproject.parent / Path(p).expanduser()) for p in paths)


def load_component(ref: object, kind: type, pyproject: Path, key: str) -> object:
    """The object ``ref`` (``"module:attribute"``) names, imported (the app directory must be on
    ``sys.path``); AppError naming ``pyproject`` and ``key`` when it does not import or is not a
    ``kind``."""
    where = f"{pyproject}: [tool.flwr.app.components] {key} = {ref!r}"
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise AppError(f"{where}: expected 'module:attribute'")
    module_name, attr = ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any failure of the user's module to import
        raise AppError(f"{where} does not import: {type(err).__name__}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AppError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, kind):
        raise AppError(f"{where} is a {type(obj).__name__}, not a {kind.__name__}")
    return obj


@contextlib.contextmanager
def app_on_path(directory: Path) -> Iterator[None]:
    """``directory`` first on ``sys.path`` and on PYTHONPATH (Ray's workers inherit the
    environment) while the block runs."""
    path, old = str(directory.resolve()), os.environ.get("PYTHONPATH")
    sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, old) if p)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(path)
        _restore_env("PYTHONPATH", old)


@contextlib.contextmanager
def environment(name: str, value: str | None) -> Iterator[None]:
    """The variable ``name`` set to ``value`` (unset when None) while the block runs."""
    old = os.environ.get(name)
    _restore_env(name, value)
    try:
        yield
    finally:
        _restore_env(name, old)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def load_app(
    directory: str | Path, overrides: list[str] | None = None, rounds: int | None = None
) -> FlowerApp:
    """Read and import the Flower app in ``directory`` (call it with the directory on the path,
    :func:`app_on_path`); AppError names the file and key of what is wrong."""
    directory = Path(directory)
    pyproject, table = app_table(directory)
    components = table.get("components")
    if not isinstance(components, dict):
        raise AppError(f"{pyproject} has no [tool.flwr.app.components] table")
    for key in ("serverapp", "clientapp"):
        if key not in components:
            raise AppError(f"{pyproject}: [tool.flwr.app.components] has no {key} key")
    config = app_run_config(pyproject, table, overrides, rounds)
    server_ref, client_ref = components["serverapp"], components["clientapp"]
    return FlowerApp(
        directory=directory,
        pyproject=pyproject,
        server_ref=server_ref,
        client_ref=client_ref,
        server_app=load_component(server_ref, ServerApp, pyproject, "serverapp"),
        client_app=load_component(client_ref, ClientApp, pyproject, "clientapp"),
        run_config=config,
    )


class RunConfigClientApp(ClientApp):
    """``app``, its nodes' contexts showing ``run_config`` (under the nodes' own run config)."""

    def __init__(self, app: ClientApp, run_config: dict) -> None:
        super().__init__()
        self.app, self.run_config = app, dict(run_config)

    def __call__(self, message: Message, context: Context) -> Message:
        # the Simulation Engine refuses a node context whose run config changed, so the app
        # gets a view of it with the run config; what the app keeps in its state stays
        view = replace(context, run_config={**self.run_config, **context.run_config})
        try:
            return self.app(message, view)
        finally:
            context.state = view.state


def configured_apps(app: FlowerApp) -> tuple[ServerApp, ClientApp]:
    """The app's ServerApp and ClientApp, each running with the app's run config in its
    ``context.run_config`` (the Simulation Engine's Python API gives them none)."""
    config, user_server = dict(app.run_config), app.server_app
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        user_server(grid, replace(context, run_config={**config, **context.run_config}))

    return server, RunConfigClientApp(app.client_app, config)


class RunWatcher(logging.Handler):
    """Collects the (run id, ledger path) of every ``EnergyAware.start`` and hands every
    committed round to ``on_round``, from the records the wrapper logs."""

    def __init__(self, on_round: Callable[[RoundOutcome], None] | None = None) -> None:
        super().__init__(logging.INFO)
        self.runs: list[tuple[str, str]] = []
        self.on_round = on_round

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if (run := getattr(record, RUN_FIELD, None)) is not None:
                self.runs.append(run)
            outcome = getattr(record, ROUND_FIELD, None)
            if outcome is not None and self.on_round is not None:
                self.on_round(outcome)
        except Exception:  # a failing printer must not stop the run
            self.handleError(record)


@contextlib.contextmanager
def watching(watcher: RunWatcher, out: Path) -> Iterator[None]:
    """``watcher`` on the ``fedenergy`` logger (at INFO at least) and FEDENERGY_OUT=``out``
    while the block runs."""
    logger, old_env = logging.getLogger("fedenergy"), os.environ.get(OUT_ENV)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(watcher)
    os.environ[OUT_ENV] = str(out)
    try:
        yield
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)
        _restore_env(OUT_ENV, old_env)


def run_app(
    app: FlowerApp,
    plan: RunPlan,
    watcher: RunWatcher,
    verbose: bool = False,
    num_cpus: int | None = None,
    backend: Backend | None = None,
) -> None:
    """Run ``app`` on the plan's virtual SuperNodes (``settings.nodes`` of ``settings.fleet``,
    named after their profiles, ids seeded by ``settings.seed``) with FEDENERGY_OUT set to
    ``settings.out``; ``watcher`` collects the runs the app's EnergyAware started and sees
    each committed round. The app's exceptions are re-raised (Flower's Simulation Engine hands
    the ServerApp's back). Call it with the app directory on the path (:func:`app_on_path`)."""
    from flwr.simulation import run_simulation

    from fedenergy.sim.engine import _run, prepare_environment, simulated_names
    from fedenergy.sim.hooks import declared_node_names, seeded_node_ids
    from fedenergy.sim.node_profiles import ProfiledClientApp

    settings = plan.settings
    prepare_environment()
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    server, client = configured_apps(app)
    # each node knows its fleet profile (and the run's catalog, where its profile is)
    client = ProfiledClientApp(client, plan.profiles, plan.catalog.paths)
    backend = (backend or Backend(num_cpus=num_cpus)).check()
    paths = os.pathsep.join(plan.catalog.paths)
    with watching(watcher, Path(settings.out)), environment(CATALOG_ENV, paths or None):
        with seeded_node_ids(settings.seed), declared_node_names(simulated_names(plan)):
            _run(run_simulation, server, client, settings, backend, verbose)


# -- the command ------------------------------------------------------------------------------
def add_app_options(parser: argparse.ArgumentParser) -> None:
    """``--app`` and ``--run-config`` of ``fedenergy simulate``."""
    parser.add_argument(
        "--app",
        default=None,
        metavar="DIR",
        help="run the Flower app in DIR (its pyproject.toml's [tool.flwr.app.components] and "
        "config) on the fleet; with it only --nodes, --rounds (num-server-rounds), --fleet, "
        "--seed, --out, --catalog, --run-config, --verbose and the Ray options apply",
    )
    parser.add_argument(
        "--run-config",
        action="append",
        default=None,
        metavar='"k=v ..."',
        help="with --app: override [tool.flwr.app.config] keys, as `flwr run --run-config`",
    )


def app_command(args: argparse.Namespace, printer: Printer) -> int:
    """``fedenergy simulate --app DIR``: exit 0 when the run completed, 1 when it failed, 2 on
    bad input (nothing run). ``printer(console, rounds)`` makes the live per-round line."""
    from fedenergy.plan import plan_run

    console = Console()
    directory = Path(args.app)
    try:
        if args.resume:
            raise AppError("--resume does not apply with --app")
        # the fleet's settings (and the catalogs: --catalog, the app's run config key) are
        # checked before anything of the app is imported
        pyproject, table = app_table(directory)
        own = app_catalog(pyproject, app_run_config(pyproject, table, args.run_config, None))
        catalog = (*(getattr(args, "catalog", None) or ()), *own)
        plan = plan_run(
            Settings(
                nodes=args.nodes, fleet=args.fleet, seed=args.seed, out=args.out, catalog=catalog
            )
        )
        backend = backend_from_args(args)
        with app_on_path(directory):
            app = load_app(directory, args.run_config, args.rounds)
        backend.connect(args.verbose)  # a cluster that cannot run the clients: nothing is run
    except ValueError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        return 2
    settings, rounds = plan.settings, app.run_config.get(ROUNDS_KEY)
    console.print(
        f"fedenergy: app {directory} ({app.server_ref}, {app.client_ref}) on {settings.nodes} "
        f"nodes of fleet '{settings.fleet}', seed {settings.seed}",
        soft_wrap=True,
    )
    start = time.monotonic()
    watcher = RunWatcher(printer(console, rounds if isinstance(rounds, int) else None))
    try:
        with app_on_path(directory):
            run_app(app, plan, watcher, args.verbose, backend=backend)
    except Exception as err:  # a failed run: say why (the ledger keeps the reason), exit 1
        console.print(f"[red]run failed:[/red] {escape(str(err))}", soft_wrap=True)
        if watcher.runs:
            console.print(f"ledger: {watcher.runs[-1][1]}", soft_wrap=True)
        return 1
    if not watcher.runs:
        console.print(
            "[red]run failed:[/red] the app started no EnergyAware strategy, so no ledger was "
            "written (wrap the ServerApp's strategy in fedenergy.EnergyAware)",
            soft_wrap=True,
        )
        return 1
    return report_runs(console, watcher.runs, Path(settings.out), start)


def report_runs(console: Console, runs: list[tuple[str, str]], out: Path, start: float) -> int:
    """Print the summary of each (run id, ledger) as the built-in run prints its own, write the
    last one's to OUT/summary.json; 0 when that run completed, else 1."""
    from fedenergy.analysis.console import print_summary
    from fedenergy.analysis.summary import summarize
    from fedenergy.ledger import Ledger

    summary: dict = {}
    for run_id, path in runs:
        with Ledger(path) as ledger:
            summary = summarize(ledger, run_id)
        print_summary(console, summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"ledger: {runs[-1][1]}   summary: {out / 'summary.json'}   "
        f"wall {time.monotonic() - start:.1f} s",
        soft_wrap=True,
    )
    return 0 if summary.get("status") == "completed" else 1
