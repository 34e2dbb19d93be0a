"""Run a simulated federation in this process with Flower's Simulation Engine (Ray)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterator

from fedenergy.settings import Settings
from fedenergy.strategy import RoundOutcome

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


@contextlib.contextmanager
def seeded_node_ids(seed: int) -> Iterator[bool]:
    """Make the Simulation Engine's node ids and run id a seeded sequence while the block runs.

    Flower draws each virtual SuperNode's id from ``os.urandom``; nodes register in partition
    order, so seeded ids make the order of node ids — which a coordinator that has not heard
    from its nodes yet (lazy discovery) must sample from — the same in every run with the same
    seed. The run id is seeded too: it is a varint in every message's metadata, so a random one
    changes message sizes (hence modeled network joules) by a byte from run to run. Only ids
    drawn inside ``InMemoryLinkState.create_node`` / ``create_run`` and by ``run_simulation``'s
    own run/task id draw are affected. Yields whether
    the hook could be installed (False on a Flower without these internals: ids stay random).
    """
    try:
        mod = importlib.import_module("flwr.server.superlink.linkstate.in_memory_linkstate")
        sim = importlib.import_module("flwr.simulation.run_simulation")
        cls, draw = mod.InMemoryLinkState, mod.generate_rand_int_from_bytes
        create, create_run = cls.create_node, cls.create_run
        sim_draw = sim.generate_rand_int_from_bytes
    except (ImportError, AttributeError):
        yield False
        return
    rng, lock, local = random.Random(seed * 7919 + 0x5EED), threading.Lock(), threading.local()

    def seeded_draw(num_bytes: int, exclude: set[int] | None = None, always: bool = False) -> int:
        if not always and not getattr(local, "on", False):
            return draw(num_bytes, exclude)
        with lock:
            while (v := rng.getrandbits(8 * num_bytes)) in (exclude or ()):
                pass
            return v

    def seeded(method):
        def call(self, *args, **kwargs):
            local.on = True
            try:
                return method(self, *args, **kwargs)
            finally:
                local.on = False

        return call

    mod.generate_rand_int_from_bytes = seeded_draw
    sim.generate_rand_int_from_bytes = lambda n, exclude=None: seeded_draw(n, exclude, True)
    cls.create_node, cls.create_run = seeded(create), seeded(create_run)
    try:
        yield True
    finally:
        mod.generate_rand_int_from_bytes, sim.generate_rand_int_from_bytes = draw, sim_draw
        cls.create_node, cls.create_run = create, create_run


@contextlib.contextmanager
def declared_node_names(names: list[str]) -> Iterator[bool]:
    """Register the Simulation Engine's virtual SuperNodes under ``names`` (the i-th node
    created, i.e. partition i, gets ``names[i]``) while the block runs, as an operator would
    with ``flwr supernode register --name`` (see :mod:`fedenergy.declared`). Yields whether the
    hook could be installed (False on a Flower without these internals: nodes stay unnamed and
    declared discovery learns every node from its first reply)."""
    try:
        mod = importlib.import_module("flwr.server.superlink.linkstate.in_memory_linkstate")
        cls = mod.InMemoryLinkState
        create = cls.create_node
    except (ImportError, AttributeError):
        yield False
        return
    lock, counter = threading.Lock(), iter(range(len(names)))

    def named(self, *args, **kwargs):
        if kwargs.get("name") is None:
            with lock:
                i = next(counter, None)
            if i is not None:
                kwargs["name"] = names[i]
        return create(self, *args, **kwargs)

    cls.create_node = named
    try:
        yield True
    finally:
        cls.create_node = create


def simulated_names(settings: Settings) -> list[str]:
    """Registration names of the virtual SuperNodes: each declares its fleet profile
    (``sim-node-<partition> fe:DEVICE/LINK/COUNTRY``)."""
    from fedenergy.declared import Declaration
    from fedenergy.fleet import load_fleet

    profiles = load_fleet(settings.fleet).assign(settings.nodes, settings.seed)
    return [
        f"sim-node-{i} " + Declaration(p.device.id, p.link.id, p.country).token()
        for i, p in enumerate(profiles)
    ]


def simulate(
    settings: Settings,
    on_round: Callable[[RoundOutcome], None] | None = None,
    verbose: bool = False,
    num_cpus: int | None = None,
) -> dict:
    """Validate ``settings`` and run the federation on ``settings.nodes`` virtual SuperNodes.

    Returns the run summary. Exceptions raised by the coordinator are re-raised here.
    """
    settings.validate()
    prepare_environment()
    import warnings

    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from client.app import app as client_app
    from fedenergy.federation import run_federation

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    outcome: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome["summary"] = run_federation(grid, settings, on_round=on_round)
        except BaseException as err:  # surfaced to the caller after the engine stops
            outcome["error"] = err

    cpus = num_cpus or os.cpu_count() or 1
    names = simulated_names(settings) if settings.discovery == "declared" else []
    with seeded_node_ids(settings.seed), declared_node_names(names):
        _run(run_simulation, server_app, client_app, settings, cpus, verbose)
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        raise RuntimeError("the simulation ended without a result (see the log above)")
    return outcome["summary"]


def _run(run_simulation, server_app, client_app, settings: Settings, cpus: int, verbose: bool):
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=settings.nodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cpus,
                "num_gpus": 0,
                "logging_level": "error",
                "log_to_driver": verbose,
                "include_dashboard": False,
            },
        },
        verbose_logging=verbose,
    )
