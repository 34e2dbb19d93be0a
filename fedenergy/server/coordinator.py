"""The coordinator's job for one run, shared by the ServerApp (`flwr run .`) and the CLI.

1. wait until the expected nodes are registered (Flower samples from nodes connected *now*);
2. QUERY every node for its partition, device and link (round 0 of the ledger) — or, with
   ``discovery="lazy"``, start knowing only node ids and learn each node's profile from the
   energy report of its first reply (no up-front message), or, with ``discovery="declared"``,
   read the profile each SuperNode declared in its registration name and learn only its
   partition from its first reply (docs/strategies.md);
3. run the rounds with EnergyAwareStrategy around Flower's FedAvg, evaluating the global model
   on the server's held-out data each round and committing each round to the ledger;
4. write ``summary.json`` next to ``ledger.sqlite``.

Each committed round carries the global model after it (the ledger's ``models`` table), so a run
killed mid-way resumes from its last committed round (:mod:`fedenergy.sim.resume`). A run whose
rounds keep failing stops as failed with the cause (``min_nodes``, ``max_short_rounds``; see
docs/robustness.md).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import flwr
import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
)
from flwr.serverapp import Grid

from fedenergy.analysis.summary import summarize
from fedenergy.codecs import parse_codec
from fedenergy.ledger import Ledger
from fedenergy.physics.flops import FlopCache
from fedenergy.protocol import (
    CFG_ALPHA,
    CFG_BATCH_SIZE,
    CFG_CODEC,
    CFG_EPOCHS,
    CFG_FLEET,
    CFG_INFRA_KWH_PER_GB,
    CFG_PARTITIONER,
    CFG_SEED,
    CFG_TASK,
)
from fedenergy.server import (
    EnergyAwareStrategy,
    FleetState,
    NodeInfo,
    RandomSelector,
    RoundOutcome,
)
from fedenergy.server.build import make_aggregator, make_policy, make_selector
from fedenergy.server.discovery import declared_nodes, node_info, query_nodes
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet
from fedenergy.sim.tasks import DataConfig, evaluate, get_task

log = logging.getLogger("fedenergy")
REGISTRATION_TIMEOUT_S = 120.0
# out directory (resolved) -> run id to resume there; set by fedenergy.sim.resume before the engine
# starts, taken by the next run_federation on that directory (the ServerApp runs in-process)
_PENDING_RESUMES: dict[str, str] = {}


class RunStopped(RuntimeError):
    """The run cannot go on: too few usable replies, or no node online, for too long."""


def resume_next(out: str | Path, run_id: str) -> None:
    """Make the next run_federation writing to ``out`` resume ``run_id`` there."""
    _PENDING_RESUMES[str(Path(out).resolve())] = run_id


class RoundHealth:
    """Stops the run once ``max_short_rounds`` rounds in a row were short: fewer than
    min(min_nodes, selected) usable train replies, or no node online."""

    def __init__(self, settings: Settings, strategy: EnergyAwareStrategy) -> None:
        self.settings, self.strategy, self.short = settings, strategy, 0

    def __call__(self, o: RoundOutcome) -> None:
        if o.server_round == 0:
            return
        s = self.settings
        if not self.strategy.fleet.online(o.server_round):
            cause = "no node was online"
        elif o.succeeded < min(s.min_nodes, o.selected):
            cause = (
                f"only {o.succeeded} of {o.selected} selected nodes returned a usable update "
                f"(min-nodes {s.min_nodes}; {o.failed} failed or were rejected)"
            )
        else:
            self.short = 0
            return
        self.short += 1
        log.warning("round %d is short: %s", o.server_round, cause)
        if self.short >= s.max_short_rounds:
            raise RunStopped(
                f"run stopped after round {o.server_round}: {self.short} short round(s) in a row "
                f"(max-short-rounds {s.max_short_rounds}); last cause: {cause}"
            )


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in arrays.items()}


def common_config(s: Settings) -> dict:
    """The per-message config every client needs to rebuild its data and profile."""
    return {
        CFG_TASK: s.task,
        CFG_SEED: s.seed,
        CFG_PARTITIONER: s.partitioner,
        CFG_ALPHA: s.dirichlet_alpha,
        CFG_EPOCHS: s.local_epochs,
        CFG_BATCH_SIZE: s.batch_size,
        CFG_FLEET: s.fleet,
        CFG_INFRA_KWH_PER_GB: s.infra_kwh_per_gb,
        CFG_CODEC: parse_codec(s.codec).label(),
    }


def wait_for_nodes(
    grid: Grid, expected: int, timeout_s: float = REGISTRATION_TIMEOUT_S
) -> list[int]:
    """Block until ``expected`` nodes are registered (bounded); return their ids."""
    deadline = time.monotonic() + timeout_s
    while len(ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(ids)} of {expected} nodes registered after {timeout_s:.0f} s"
            )
        time.sleep(0.2)
    return ids


def settled_node_count(grid: Grid, quiet_s: float = 3.0, timeout_s: float = 60.0) -> int:
    """Number of registered nodes once it has not changed for ``quiet_s`` (bounded wait); used
    when the run config does not say how many nodes to expect."""
    start = last_change = time.monotonic()
    count = len(list(grid.get_node_ids()))
    while time.monotonic() - last_change < quiet_s and time.monotonic() - start < timeout_s:
        time.sleep(0.2)
        if (now := len(list(grid.get_node_ids()))) != count:
            count, last_change = now, time.monotonic()
    if count == 0:
        raise RuntimeError("no node registered")
    return count


def server_evaluator(settings: Settings) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Evaluate the global model on the task's server-side held-out data."""
    task = get_task(settings.task)
    data = task.server_test_data(
        DataConfig(settings.nodes, settings.seed, settings.partitioner, settings.dirichlet_alpha)
    )
    model = task.make_model()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, data)
        return MetricRecord({"accuracy": acc, "loss": loss})

    return evaluate_fn


def versions() -> dict:
    import sklearn

    from fedenergy import __version__

    return {
        "fedenergy": __version__,
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def run_federation(
    grid: Grid,
    settings: Settings,
    on_round: Callable[[RoundOutcome], None] | None = None,
    run_id: str | None = None,
) -> dict:
    """Run one energy-accounted federation on ``grid``; return the summary (also written).

    If :func:`resume_next` named a run for ``settings.out``, that run goes on from its last
    committed round under the same run id (its earlier rounds stay as they are)."""
    settings.validate()
    torch.manual_seed(settings.seed)
    fleet = load_fleet(settings.fleet)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    resumed = _PENDING_RESUMES.pop(str(out.resolve()), None)
    run_id = resumed or run_id or uuid.uuid4().hex[:12]
    ledger = Ledger(out / "ledger.sqlite")
    last, saved = None, None
    if resumed is not None:
        last = ledger.last_round(run_id)
        if last is not None and (saved := ledger.model(run_id, last)) is None:
            ledger.close()
            raise RuntimeError(
                f"run {run_id}: round {last} has no saved model (a ledger written before "
                "models were saved per round): cannot resume"
            )
    try:
        fleet_doc = {
            "name": fleet.name,
            "source": fleet.source,
            "groups": [
                {"device": g.device.id, "link": g.link.id, "fraction": g.fraction}
                for g in fleet.groups
            ],
        }
        if resumed is None:
            ledger.start_run(run_id, settings.as_dict(), fleet_doc, settings.seed, versions())
        else:
            ledger.reopen_run(run_id, -1 if last is None else last)
        config = common_config(settings)
        fleet_state = FleetState([], settings.seed, settings.infra_kwh_per_gb)
        task = get_task(settings.task)
        ask_first = settings.discovery == "query"  # an up-front QUERY of every node
        profiles = fleet.assign(settings.nodes, settings.seed)

        def query(g: Grid, ids: list[int]) -> list[NodeInfo]:
            return query_nodes(g, ids, strategy, config, settings, profiles)

        strategy = EnergyAwareStrategy(
            make_aggregator(settings.aggregator, settings.proximal_mu),
            fleet_state,
            ledger,
            run_id,
            config,
            fraction_train=settings.fraction,
            fraction_evaluate=settings.fraction_evaluate,
            selector=make_selector(settings),
            eval_selector=RandomSelector(settings.seed, 1),
            policy=make_policy(settings),
            query_fn=query if ask_first else None,
            learn_fn=lambda nid, r: node_info(
                nid, r.partition_id, r.device, r.link, 0, None, profiles
            ),
            declare_fn=(
                (lambda g, ids: declared_nodes(g, ids, profiles))
                if settings.discovery == "declared"
                else None
            ),
        )
        node_ids = wait_for_nodes(grid, settings.nodes)
        if not ask_first:
            strategy.admit_without_query(grid, node_ids)
            if settings.discovery == "declared":
                log.info(
                    "%d of %d nodes declared their profile at registration; the others are "
                    "learned from their first reply",
                    len(strategy.declared_pending),
                    len(node_ids),
                )
        else:
            for info in query_nodes(grid, node_ids, strategy, config, settings, profiles):
                fleet_state.add(info)
        if not fleet_state.nodes:
            raise RuntimeError("no node answered the profile query")
        model = task.make_model()
        sample = task.server_test_data(
            DataConfig(
                settings.nodes, settings.seed, settings.partitioner, settings.dirichlet_alpha
            )
        ).x
        per_batch = FlopCache().training(model, sample, settings.batch_size, settings.batch_size, 1)
        fleet_state.flops_per_example = per_batch / settings.batch_size * settings.local_epochs
        if ask_first:  # (declared and learned nodes are recorded by the strategy)
            ledger.add_nodes(
                run_id,
                [
                    (i.info.node_id, i.info.partition_id, i.device.id, i.link.id, i.info.country)
                    for i in fleet_state.nodes.values()
                    if i.known
                ],
            )
        evaluate_fn = server_evaluator(settings)
        health = RoundHealth(settings, strategy)

        def evaluate_and_keep(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            strategy.model_to_save = _numpy(arrays)  # committed with the round
            return evaluate_fn(rnd, arrays)

        def round_done(o: RoundOutcome) -> None:
            if on_round is not None:
                on_round(o)
            health(o)

        if saved is None:
            initial = ArrayRecord(get_task(settings.task).make_model().state_dict())
            acc0 = evaluate_and_keep(0, initial)
            round_done(strategy.commit_round(0, acc0["accuracy"], acc0["loss"]))
        else:
            # the profile query of this (resumed) session is accounted in its first round
            initial = ArrayRecord({k: Array(v) for k, v in saved.items()})
            log.info("resuming run %s after round %d", run_id, last)
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=settings.rounds,
            train_config=ConfigRecord({"lr": settings.lr}),
            evaluate_fn=evaluate_and_keep,
            on_round=round_done,
            timeout=settings.round_timeout_s,
            target_accuracy=settings.target_accuracy or None,
            first_round=1 if last is None else last + 1,
        )
        ledger.finish_run(run_id, "completed")
    except BaseException:
        ledger.finish_run(run_id, "failed")
        raise
    finally:  # a failed run's summary too (its status says failed)
        summary = summarize(ledger, run_id)
        ledger.close()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
