"""The run plan: a run's settings resolved once, at its edge, into the objects it runs with.

The edges of a run — the CLI (``fedenergy simulate``, ``compare``), :func:`fedenergy.sim.engine.
simulate`, the ServerApp of ``flwr run`` (server/app.py) and a resume (:mod:`fedenergy.sim.
resume`) — call :func:`plan_run` once. It validates the settings, looks the task up, reads the
fleet file, assigns the fleet's profiles to partitions, parses the codecs and builds the
strategy's parts; the coordinator and the Simulation Engine below take these objects and never
resolve a name again. The settings stay in the plan for the record (the ledger's
``runs.config_json``) and for the plain numbers (rounds, fractions, timeouts).

A plan drives ONE run: its selector, compression policy and aggregator keep state from round to
round (the utility selector's history, FedAdam's moments), so plan each run afresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from flwr.serverapp.strategy import Strategy

from fedenergy.codecs import CodecSpec
from fedenergy.physics.catalog import Catalog, packaged_catalog
from fedenergy.protocol import (
    CFG_ALPHA,
    CFG_BATCH_SIZE,
    CFG_BOUNDARY,
    CFG_CATALOG,
    CFG_CODEC,
    CFG_EPOCHS,
    CFG_FLEET,
    CFG_INFRA_KWH_PER_GB,
    CFG_INFRA_MODEL,
    CFG_KEEPALIVE,
    CFG_PARTITIONER,
    CFG_SEED,
    CFG_STARTUP,
    CFG_TASK,
)
from fedenergy.server.build import make_aggregator, make_policy, make_priced, make_selector
from fedenergy.server.declared import Declaration
from fedenergy.server.local_work import PRICED
from fedenergy.server.policies import CompressionPolicy
from fedenergy.server.selectors import RandomSelector, Selector
from fedenergy.settings import Settings
from fedenergy.sim.fleet import Fleet, NodeProfile
from fedenergy.sim.tasks import DataConfig, Task

EVAL_STREAM = 1  # the evaluate selector's random stream (the train selector's is 0)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, resolved: objects, not names."""

    settings: Settings  # the raw values, for the record and the plain numbers
    task: Task
    fleet: Fleet
    profiles: tuple[NodeProfile, ...]  # the fleet's assignment: ``profiles[partition_id]``
    uplink: CodecSpec  # the ``codec`` setting (the fixed policy's uplink codec)
    downlink: CodecSpec  # the ``downlink`` setting (the fixed policy's global-model codec)
    data: DataConfig  # how the task's data is generated and split across the nodes
    message_config: Mapping[str, object]  # the config every message to a node carries
    aggregator: Strategy  # Flower's strategy that aggregates (FedAvg, FedProx, FedAdam)
    selector: Selector  # who trains each round
    eval_selector: Selector  # who evaluates each round
    policy: CompressionPolicy  # which codecs each chosen node uses
    # the registration name of each simulated SuperNode (partition order), declaring its fleet
    # profile as ``flwr supernode register --name`` would; used with declared discovery
    node_names: tuple[str, ...]
    resume_run_id: str | None = None  # continue this run of the ledger in ``settings.out``
    # the devices, links, fleets and tasks the run knows (packaged + ``settings.catalog``)
    catalog: Catalog = field(default_factory=packaged_catalog)


def message_config(settings: Settings, uplink: CodecSpec) -> Mapping[str, object]:
    """The per-message config every node needs to rebuild its data and profile (read-only);
    a run with a user catalog sends its paths (``fe-catalog``: a simulated node reads the same
    files, docs/catalogs.md)."""
    catalog = {CFG_CATALOG: list(settings.catalog)} if settings.catalog else {}
    return MappingProxyType(
        {
            CFG_TASK: settings.task,
            CFG_SEED: settings.seed,
            CFG_PARTITIONER: settings.partitioner,
            CFG_ALPHA: settings.dirichlet_alpha,
            CFG_EPOCHS: settings.local_epochs,
            CFG_BATCH_SIZE: settings.batch_size,
            CFG_FLEET: settings.fleet,
            CFG_INFRA_KWH_PER_GB: settings.infra_kwh_per_gb,
            CFG_BOUNDARY: settings.boundary,
            CFG_STARTUP: settings.startup,
            CFG_INFRA_MODEL: settings.infra_model,
            CFG_CODEC: uplink.label(),
            **catalog,
            CFG_KEEPALIVE: settings.keepalive,
        }
    )


def registration_names(profiles: Sequence[NodeProfile]) -> tuple[str, ...]:
    """``sim-node-<partition> fe:DEVICE/LINK/COUNTRY`` for each profile, in partition order."""
    return tuple(
        f"sim-node-{p.partition_id} " + Declaration(p.device.id, p.link.id, p.country).token()
        for p in profiles
    )


def plan_run(settings: Settings, resume_run_id: str | None = None) -> RunPlan:
    """Validate ``settings`` and resolve them into a :class:`RunPlan` (the fleet file is read
    here, once); ValueError names the first bad setting. ``resume_run_id``: the plan continues
    that run of the ledger in ``settings.out`` (:mod:`fedenergy.sim.resume`)."""
    s = settings.check()
    task, fleet, uplink, downlink, catalog = s.resolve()
    if s.catalog != catalog.paths:  # absolute: the record and the nodes read them so
        s = replace(s, catalog=catalog.paths)
    profiles = tuple(fleet.assign(s.nodes, s.seed))
    selector, policy = make_selector(s), make_policy(s.compression, uplink, downlink)
    if s.local_work == PRICED:  # one object chooses who trains, their epochs and codecs
        selector = policy = make_priced(s, selector, policy)
    return RunPlan(
        settings=s,
        task=task,
        fleet=fleet,
        profiles=profiles,
        uplink=uplink,
        downlink=downlink,
        data=DataConfig(s.nodes, s.seed, s.partitioner, s.dirichlet_alpha),
        message_config=message_config(s, uplink),
        aggregator=make_aggregator(s.aggregator, s.proximal_mu),
        selector=selector,
        eval_selector=RandomSelector(s.seed, EVAL_STREAM),
        policy=policy,
        node_names=registration_names(profiles),
        resume_run_id=resume_run_id,
        catalog=catalog,
    )
