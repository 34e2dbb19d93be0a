"""The wiring every energy-accounted run shares, whoever drives it.

The built-in run (:func:`fedenergy.server.coordinator.run_federation`) and the public wrapper
(:class:`fedenergy.server.wrapper.EnergyAware`) both run a federation the same way, with these
steps:

1. :func:`ledger_run`: the ledger's run is marked completed when the run ends, failed when it
   raises;
2. :func:`energy_strategy`: an EnergyAwareStrategy around the wrapped Flower strategy, its
   fleet state empty and its discovery wired (an up-front QUERY, the profiles declared in
   SuperNode registration names, or lazily the first energy report of each node);
3. :func:`wait_for_nodes` then :func:`admit_fleet`: the nodes registered before round 1 are
   admitted (queried, declared or unknown);
4. :func:`commit_round_zero`: the global model as it starts is evaluated and round 0 (the
   profile query's energy, if any) is committed; then the strategy's round loop runs.

What differs between them (the built-in task's data, model checkpoints, resume, the run's
health) stays with the caller.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import flwr
import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedenergy.ledger import Ledger
from fedenergy.physics.catalog import Catalog
from fedenergy.physics.infra import DEFAULT_MODEL
from fedenergy.server.discovery import declared_nodes, node_info, query_nodes
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.node import NodeInfo
from fedenergy.server.policies import CompressionPolicy
from fedenergy.server.rounds import RoundOutcome
from fedenergy.server.selectors import Selector
from fedenergy.server.strategy import EnergyAwareStrategy

log = logging.getLogger("fedenergy")
DISCOVERIES = ("query", "declared", "lazy")
REGISTRATION_TIMEOUT_S = 120.0


def new_run_id() -> str:
    """A fresh run id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def base_versions() -> dict:
    """Versions of the packages every run depends on, for the ledger's ``runs`` row."""
    from fedenergy import __version__

    return {"fedenergy": __version__, "flwr": flwr.__version__, "numpy": np.__version__}


class RunStopped(RuntimeError):
    """The run cannot go on, or trained nothing: too few usable replies, or no node online, for
    too long; or no round produced a usable update."""


def trained_nothing(ledger: Ledger, run_id: str) -> str | None:
    """Why the run must end failed: no train round (round 1 on) of its ledger produced a usable
    update; None when one did. The reason counts the train replies rejected and gives the first
    rejection's reason (else the failed calls, or that nobody was selected)."""
    rounds = [r for r in ledger.rounds(run_id) if r["round"] > 0]
    if any(r["succeeded"] > 0 for r in rounds):
        return None
    rejected = [x for x in ledger.rejections(run_id) if x["call"] == "train"]
    if rejected:
        detail = f"{len(rejected)} replies rejected: {rejected[0]['reason']}"
    elif any(r["selected"] for r in rounds):
        detail = f"{sum(r['failed'] for r in rounds)} train calls failed"
    else:
        detail = "no node was selected"
    return f"no round produced a usable update ({detail})"


@contextmanager
def ledger_run(ledger: Ledger, run_id: str) -> Iterator[None]:
    """Mark ``run_id`` completed in ``ledger`` when the block ends, failed with the reason when
    it raises (the exception goes on) or when no round produced a usable update (then
    :class:`RunStopped` is raised with that reason)."""
    try:
        yield
        if (reason := trained_nothing(ledger, run_id)) is not None:
            raise RunStopped(reason)
    except BaseException as err:
        why = str(err) if isinstance(err, RunStopped) else f"{type(err).__name__}: {err}"
        ledger.finish_run(run_id, "failed", why)
        raise
    ledger.finish_run(run_id, "completed")


def check_discovery(discovery: str) -> str:
    """``discovery`` itself; ValueError unless it is one of ``DISCOVERIES``."""
    if discovery not in DISCOVERIES:
        raise ValueError(f"unknown discovery {discovery!r}; choose {', '.join(DISCOVERIES)}")
    return discovery


def energy_strategy(
    base: Strategy,
    ledger: Ledger,
    run_id: str,
    common_config: Mapping[str, object],
    *,
    discovery: str,
    seed: int,
    infra_kwh_per_gb: float,
    query_timeout: float,
    infra_model: str = DEFAULT_MODEL,
    profiles: Sequence = (),
    fraction_train: float = 0.5,
    fraction_evaluate: float = 0.0,
    selector: Selector | None = None,
    eval_selector: Selector | None = None,
    policy: CompressionPolicy | None = None,
    base_samples: bool = False,
    strict_reports: bool = False,
    catalog: Catalog | None = None,
    radio_clock: str = "virtual",
) -> EnergyAwareStrategy:
    """An EnergyAwareStrategy around ``base`` with an empty fleet state and ``discovery``
    (query | declared | lazy) wired. ``profiles``: a simulated fleet's node profiles by
    partition id (availability, failures, battery; empty: every node is always online).
    ``catalog``: the devices and links the run knows (default: the packaged ones); node
    profiles, declarations and reports are checked against it. ``radio_clock``: the run's clock
    for the radio state machine (server/radio_clock.py)."""
    check_discovery(discovery)
    profiles = list(profiles)
    fleet = FleetState([], seed, infra_kwh_per_gb, catalog, infra_model=infra_model)

    def query(g: Grid, ids: list[int]) -> list[NodeInfo]:
        infos = query_nodes(g, ids, strategy, common_config, query_timeout, profiles)
        silent = sorted(set(ids) - {i.node_id for i in infos})
        if silent:
            log.warning(
                "%d of %d nodes gave no profile to the query (no reply or an error reply: a "
                "Flower app without a query handler?); admitted as unknown nodes with the prior "
                "profile, learned from their first energy report if one comes",
                len(silent),
                len(ids),
            )
        for n in silent:
            fleet.add_unknown(n)
        return infos

    def declare(g: Grid, ids: list[int]) -> list[NodeInfo]:
        return declared_nodes(g, ids, profiles, fleet.catalog)

    strategy = EnergyAwareStrategy(
        base,
        fleet,
        ledger,
        run_id,
        common_config,
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        selector=selector,
        eval_selector=eval_selector,
        policy=policy,
        query_fn=query if discovery == "query" else None,
        learn_fn=lambda nid, r: node_info(nid, r.partition_id, r.device, r.link, 0, None, profiles),
        declare_fn=declare if discovery == "declared" else None,
        base_samples=base_samples,
        strict_reports=strict_reports,
        radio_clock=radio_clock,
    )
    return strategy


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


def admit_fleet(strategy: EnergyAwareStrategy, grid: Grid, node_ids: list[int]) -> None:
    """Admit ``node_ids`` before round 1: query them (their profiles recorded in the ledger),
    or take the profiles they declared, or add them unknown (learned from their first reply).
    RuntimeError when no node could be admitted."""
    fleet, admission = strategy.fleet, strategy.admission
    if admission.query_fn is None:
        strategy.admit_without_query(grid, node_ids)
        if admission.declare_fn is not None:
            log.info(
                "%d of %d nodes declared their profile at registration; the others are "
                "learned from their first reply",
                len(strategy.declared_pending),
                len(node_ids),
            )
    else:
        for info in admission.query_fn(grid, node_ids):
            fleet.add(info)
    if not fleet.nodes:
        raise RuntimeError("no node answered the profile query")
    if admission.query_fn is not None:  # (declared and learned nodes are recorded on admission)
        strategy.ledger.add_nodes(
            strategy.run_id,
            [
                (i.info.node_id, i.info.partition_id, i.device.id, i.link.id, i.info.country)
                for i in fleet.nodes.values()
                if i.known
            ],
        )


def commit_round_zero(
    strategy: EnergyAwareStrategy,
    initial_arrays: ArrayRecord,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
    on_round: Callable[[RoundOutcome], None] | None = None,
) -> MetricRecord | None:
    """Evaluate the starting model (``evaluate_fn(0, initial_arrays)``, when given) and commit
    round 0 with its ``accuracy`` and ``loss``; return the evaluation's MetricRecord."""
    res = evaluate_fn(0, initial_arrays) if evaluate_fn is not None else None
    acc, loss = (res.get("accuracy"), res.get("loss")) if res is not None else (None, None)
    outcome = strategy.commit_round(0, acc, loss)
    if on_round is not None:
        on_round(outcome)
    return res
