"""The coordinator's job for one run, shared by the ServerApp (`flwr run .`) and the CLI.

It takes a run plan (:mod:`fedenergy.plan`: the settings resolved once, at the run's edge) and
1. waits until the expected nodes are registered (Flower samples from nodes connected *now*);
2. QUERIES every node for its partition, device and link (round 0 of the ledger) — or, with
   ``discovery="lazy"``, starts knowing only node ids and learns each node's profile from the
   energy report of its first reply (no up-front message), or, with ``discovery="declared"``,
   reads the profile each SuperNode declared in its registration name and learns only its
   partition from its first reply (docs/strategies.md);
3. runs the rounds with EnergyAwareStrategy around the plan's Flower strategy, evaluating the
   global model on the server's held-out data each round and committing each round to the
   ledger;
4. writes ``summary.json`` next to ``ledger.sqlite``.

Steps 1-3 are the wiring every run shares with the public wrapper
(:mod:`fedenergy.server.session`); what is the built-in task's (its data, model, FLOP count and
server-side evaluation, the fleet spec, checkpoints, resume, the run's health) is here.

The global model after each round is checkpointed apart from the ledger
(:mod:`fedenergy.ledger.checkpoints`), written before the ledger commits the round, so a run
killed mid-way resumes from its last committed round (:mod:`fedenergy.sim.resume`). A run whose
rounds keep failing stops as failed with the cause (``min_nodes``, ``max_short_rounds``), and a
run in which no round produced a usable update ends failed, not completed
(:func:`fedenergy.server.session.trained_nothing`); the ledger keeps the reason (``runs.reason``;
docs/robustness.md). Nodes that answer the profile query with no profile (a stock Flower app has
no query handler) are admitted unknown, with the prior profile, and learned from their first
energy report if one ever comes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
from fedenergy.ledger import CheckpointStore, Ledger, committed_model
from fedenergy.physics.flops import FlopCache
from fedenergy.plan import RunPlan
from fedenergy.server import EnergyAwareStrategy, RoundOutcome
from fedenergy.server.session import (
    RunStopped,
    admit_fleet,
    base_versions,
    commit_round_zero,
    energy_strategy,
    ledger_run,
    new_run_id,
    wait_for_nodes,
)
from fedenergy.settings import Settings
from fedenergy.sim.fleet import Fleet
from fedenergy.sim.tasks import Split, Task, evaluate

log = logging.getLogger("fedenergy")


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
            if o.rejected:
                cause += f"; first rejection: {o.rejected[0][1]}"
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


def fleet_record(fleet: Fleet) -> dict:
    """The fleet as the ledger records it (``runs.fleet_json``)."""
    return {
        "name": fleet.name,
        "source": fleet.source,
        "groups": [
            {"device": g.device.id, "link": g.link.id, "fraction": g.fraction} for g in fleet.groups
        ],
    }


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


def server_evaluator(task: Task, data: Split) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Evaluate the global model on ``data``, the task's server-side held-out set."""
    model = task.make_model()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, data)
        return MetricRecord({"accuracy": acc, "loss": loss})

    return evaluate_fn


def training_flops_per_example(task: Task, sample: Split, batch_size: int, epochs: int) -> float:
    """FLOPs of one example's local training (``epochs`` passes), counted on ``sample``'s
    feature shape for the task's model (a fresh model, never the live one)."""
    per_batch = FlopCache().training(task.make_model(), sample.x, batch_size, batch_size, 1)
    return per_batch / batch_size * epochs


def versions() -> dict:
    """Versions of the packages a built-in run depends on (the task's torch and scikit-learn
    besides every run's)."""
    import sklearn

    return {**base_versions(), "torch": torch.__version__, "scikit-learn": sklearn.__version__}


@contextmanager
def written_summary(ledger: Ledger, run_id: str, out: Path) -> Iterator[dict]:
    """When the block ends, even by an exception (a failed run's summary says so): summarize
    ``run_id``, close ``ledger``, write ``out/summary.json``; the summary lands in the yielded
    dict under ``"summary"``."""
    kept: dict = {}
    try:
        yield kept
    finally:
        kept["summary"] = summary = summarize(ledger, run_id)
        ledger.close()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))


def run_federation(
    grid: Grid,
    plan: RunPlan,
    on_round: Callable[[RoundOutcome], None] | None = None,
    run_id: str | None = None,
    radio_clock: str = "virtual",
) -> dict:
    """Run one energy-accounted federation on ``grid`` as ``plan`` says; return the summary
    (also written). ``radio_clock``: the run's clock of the radio model, ``virtual`` in
    simulation, ``wall`` for a deployed run (:mod:`fedenergy.server.radio_clock`). A plan with
    ``resume_run_id`` continues that run from its last committed round under the same run id
    (its earlier rounds stay as they are)."""
    settings = plan.settings
    torch.manual_seed(settings.seed)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    resumed = plan.resume_run_id
    run_id = resumed or run_id or new_run_id()
    ledger = Ledger(out / "ledger.sqlite")
    checkpoints = CheckpointStore.for_run(out, run_id, settings.checkpoint_keep)
    last, saved = None, None
    if resumed is not None:
        last = ledger.last_round(run_id)
        checkpoints.discard_after(last)  # written for a round whose commit never happened
        saved = None if last is None else committed_model(ledger, checkpoints, run_id, last)
        if last is not None and saved is None:
            ledger.close()
            raise RuntimeError(
                f"run {run_id}: round {last} has no checkpoint in {checkpoints.directory} (nor "
                "in the ledger's models table): cannot resume"
            )
    with written_summary(ledger, run_id, out) as kept, ledger_run(ledger, run_id):
        if resumed is None:
            ledger.start_run(
                run_id, settings.as_dict(), fleet_record(plan.fleet), settings.seed, versions()
            )
        else:
            ledger.reopen_run(run_id, -1 if last is None else last)
        strategy = energy_strategy(
            plan.aggregator,
            ledger,
            run_id,
            plan.message_config,
            discovery=settings.discovery,
            seed=settings.seed,
            infra_kwh_per_gb=settings.infra_kwh_per_gb,
            infra_model=settings.infra_model,
            query_timeout=settings.round_timeout_s,
            profiles=plan.profiles,
            fraction_train=settings.fraction,
            fraction_evaluate=settings.fraction_evaluate,
            selector=plan.selector,
            eval_selector=plan.eval_selector,
            policy=plan.policy,
            strict_reports=settings.strict_reports,
            catalog=plan.catalog,
            radio_clock=radio_clock,
        )
        admit_fleet(strategy, grid, wait_for_nodes(grid, settings.nodes))
        test_data = plan.task.server_test_data(plan.data)
        fleet = strategy.fleet
        fleet.flops_per_example = training_flops_per_example(
            plan.task, test_data, settings.batch_size, settings.local_epochs
        )
        # the built-in ClientApp trains on one thread (fedenergy.sim.clientapp)
        fleet.batch_size, fleet.local_epochs, fleet.threads = (
            settings.batch_size,
            settings.local_epochs,
            1,
        )
        fleet.boundary, fleet.startup = settings.boundary, settings.startup
        evaluate_fn = server_evaluator(plan.task, test_data)
        health = RoundHealth(settings, strategy)

        def evaluate_and_keep(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            # the checkpoint first: the round loop commits the round after evaluating it, so the
            # ledger's last committed round always has its checkpoint on disk
            # the radio clock after the round, too: a resumed run continues each node's radio
            checkpoints.save(rnd, _numpy(arrays), strategy.clock.state(fleet))
            return evaluate_fn(rnd, arrays)

        def round_done(o: RoundOutcome) -> None:
            checkpoints.retain(o.server_round)  # the round is committed
            if on_round is not None:
                on_round(o)
            health(o)

        if saved is None:
            initial = ArrayRecord(plan.task.make_model().state_dict())
            commit_round_zero(strategy, initial, evaluate_and_keep, round_done)
        else:
            # the profile query of this (resumed) session is accounted in its first round
            radio = checkpoints.load_state(last)  # empty from a ledger's legacy models table
            if radio:  # the nodes' radios as the last committed round left them
                strategy.clock.restore(fleet, radio)
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
    return kept["summary"]
