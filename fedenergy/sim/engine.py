"""Run a simulated federation in this process with Flower's Simulation Engine (Ray).

:func:`simulate` is an edge of a run: given Settings it plans the run (:func:`fedenergy.plan.
plan_run`) once; given a plan it runs that plan as it is.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedenergy.plan import RunPlan, plan_run
from fedenergy.server import RoundOutcome
from fedenergy.settings import Settings
from fedenergy.sim.backend import Backend
from fedenergy.sim.experiment_energy import metered_experiment
from fedenergy.sim.hooks import declared_node_names, seeded_node_ids
from fedenergy.sim.node_profiles import ProfiledClientApp

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "TQDM_DISABLE": "1",
}


def prepare_environment() -> None:
    """Telemetry and update checks off, Flower state in a private FLWR_HOME (unless set)."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="fedenergy-flwr-"))


def simulated_names(plan: RunPlan | Settings) -> list[str]:
    """Registration names of the virtual SuperNodes: each declares its fleet profile
    (``sim-node-<partition> fe:DEVICE/LINK/COUNTRY``). Settings are planned first."""
    return list((plan if isinstance(plan, RunPlan) else plan_run(plan)).node_names)


def simulate(
    plan: RunPlan | Settings,
    on_round: Callable[[RoundOutcome], None] | None = None,
    verbose: bool = False,
    num_cpus: int | None = None,
    client_app: ClientApp | None = None,
    backend: Backend | None = None,
) -> dict:
    """Run the federation ``plan`` describes (Settings are validated and planned first) on
    ``settings.nodes`` virtual SuperNodes running ``client_app`` (default: fedenergy's own,
    :mod:`fedenergy.sim.clientapp`; any Flower ClientApp works, e.g. a stock one without the
    energy mod: its replies carry no report and are accounted from the coordinator's side).
    ``backend``
    says where the clients run (:class:`~fedenergy.sim.backend.Backend`: a local Ray with
    ``num_cpus``, the default, or an existing Ray cluster) and what each holds (CPUs, GPUs).

    Returns the run summary, with this host's own energy over the run under ``experiment``
    (:mod:`fedenergy.sim.experiment_energy`). Exceptions raised by the coordinator are re-raised
    here: a failed run (stopped by its short rounds, or one in which no round produced a usable
    update) raises :class:`~fedenergy.server.coordinator.RunStopped` with the reason, after its
    ledger
    (``runs.status`` 'failed', ``runs.reason``) and ``summary.json`` are written.
    """
    if not isinstance(plan, RunPlan):
        plan = plan_run(plan)
    settings = plan.settings
    prepare_environment()
    import warnings

    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedenergy.server.coordinator import run_federation

    if client_app is None:
        from fedenergy.sim.clientapp import app as client_app
    else:  # a user's app: each virtual node knows its fleet profile, as a deployed one would
        client_app = ProfiledClientApp(client_app, plan.profiles, plan.catalog.paths)

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    outcome: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome["summary"] = run_federation(grid, plan, on_round=on_round)
        except BaseException as err:  # surfaced to the caller after the engine stops
            outcome["error"] = err

    backend = (backend or Backend(num_cpus=num_cpus)).check()
    names = simulated_names(plan) if settings.discovery == "declared" else []
    with metered_experiment(on_cluster=not backend.local) as experiment:
        with seeded_node_ids(settings.seed), declared_node_names(names):
            _run(run_simulation, server_app, client_app, settings, backend, verbose)
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        raise RuntimeError("the simulation ended without a result (see the log above)")
    return add_experiment(outcome["summary"], experiment, Path(settings.out))


def add_experiment(summary: dict, experiment: dict, out: Path) -> dict:
    """``summary`` with the host's own energy over the run under ``experiment`` (beside the
    modeled device energy, never added to it), also in ``out/summary.json`` when it exists."""
    summary = {**summary, "experiment": experiment}
    path = out / "summary.json"
    if path.is_file():
        path.write_text(json.dumps(summary, indent=2))
    return summary


def _run(run_simulation, server_app, client_app, settings: Settings, backend: Backend, verbose):
    """Flower's ``run_simulation`` on ``backend`` (connected first when it is a cluster)."""
    backend.connect(verbose)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=settings.nodes,
        backend_config=backend.config(verbose),
        verbose_logging=verbose,
    )
