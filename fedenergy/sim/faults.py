"""Simulated faults as a Flower client mod: the offline rounds and device failures of fleet nodes.

A *simulated node* is one whose message config names a fleet (``fe-fleet``) and whose node
config has a partition but no ``device`` (Flower's Simulation Engine sets only ``partition-id``
and ``num-partitions``). Its fleet group decides how it behaves:

* **offline**: in a round where the node's seeded availability draw says it is offline (the
  same draw the coordinator makes, :func:`fedenergy.sim.fleet.is_online`), a train or evaluate
  message is answered with the ``OFFLINE_REASON`` Error reply without calling the rest of the
  app: the message never reached the device, so nothing was metered or spent;
* **failure**: after a train call ran, a seeded draw against the group's ``failure_prob`` may
  turn the reply into the device-failure Error reply, as Flower sends for a crashed app; what
  the call wrote to the node's ``context.state`` (e.g. an error-feedback residual) is lost with
  the device.

The mod also records the fleet's device and link for the node's partition in its
``context.state`` (``NODE_PROFILE_STATE_KEY``) whenever the node config and the server's
per-message config leave one of them open, so the energy mod and the QUERY handler can fill it
without knowing about fleets (:func:`fedenergy.client.mod.resolve_profile`). Messages are never
modified: the bytes the energy mod counts are the bytes on the wire.

Use it as the outermost mod: ``ClientApp(mods=[simulated_faults, energy_mod])``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from fedenergy.client.mod import configured_profile, node_catalog
from fedenergy.physics.catalog import Catalog
from fedenergy.protocol import (
    CFG_FLEET,
    CFG_SEED,
    CONFIG_RECORD,
    FAILURE_REASON,
    NODE_DEVICE,
    NODE_LINK,
    NODE_PROFILE_STATE_KEY,
    NUM_PARTITIONS,
    OFFLINE_REASON,
    PARTITION_ID,
    SERVER_ROUND,
)
from fedenergy.sim.fleet import NodeProfile, is_online, load_fleet

# Message kinds a node can be offline for (a QUERY is answered by every node) and the kind a
# device can fail after.
OFFLINE_KINDS = ("train", "evaluate")
FAILING_KIND = "train"


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())


@lru_cache(maxsize=8)
def _assignment(
    fleet: str, num_nodes: int, seed: int, catalog: Catalog | None = None
) -> tuple[NodeProfile, ...]:
    return tuple(load_fleet(fleet, catalog).assign(num_nodes, seed))


def assigned_profile(
    fleet: str, num_nodes: int, seed: int, partition_id: int, catalog: Catalog | None = None
) -> NodeProfile:
    """The fleet's profile for one partition (assignment cached per fleet, size, seed and
    catalog: the run's, where its fleet and profiles are looked up)."""
    return _assignment(fleet, num_nodes, seed, catalog)[partition_id]


def fleet_profile(msg: Message, ctx: Context) -> NodeProfile | None:
    """The fleet's profile for this node's partition, when the message names a fleet and the
    node config a partition and the number of partitions; else None."""
    cfg = _config(msg)
    if CFG_FLEET not in cfg:
        return None
    if PARTITION_ID not in ctx.node_config or NUM_PARTITIONS not in ctx.node_config:
        return None
    return assigned_profile(
        str(cfg[CFG_FLEET]),
        int(ctx.node_config[NUM_PARTITIONS]),
        int(cfg.get(CFG_SEED, 0)),
        int(ctx.node_config[PARTITION_ID]),
        node_catalog(msg, ctx),
    )


def is_simulated(ctx: Context) -> bool:
    """Whether the node config leaves the device to the simulation (no ``device`` key)."""
    return NODE_DEVICE not in ctx.node_config


def simulated_profile(msg: Message, ctx: Context) -> NodeProfile | None:
    """This node's fleet profile when it is a simulated node; None for deployed nodes (whose
    failures are real) and nodes without a fleet."""
    return fleet_profile(msg, ctx) if is_simulated(ctx) else None


def is_offline(msg: Message, node: NodeProfile) -> bool:
    """Whether ``node`` is offline in the message's round by its fleet availability."""
    cfg = _config(msg)
    seed, rnd = int(cfg.get(CFG_SEED, 0)), int(cfg.get(SERVER_ROUND, 0))
    return not is_online(seed, rnd, node.partition_id, node.availability)


def fails(msg: Message, node: NodeProfile) -> bool:
    """Whether ``node``'s device dies after this call: one seeded draw per (seed, round,
    partition) against its fleet ``failure_prob``."""
    if node.failure_prob <= 0:
        return False
    cfg = _config(msg)
    key = [int(cfg.get(CFG_SEED, 0)), 0xFA11, int(cfg.get(SERVER_ROUND, 0)), node.partition_id]
    return bool(np.random.default_rng(key).random() < node.failure_prob)


def offline_reply(msg: Message) -> Message:
    """The Error reply of a node that is offline this round."""
    reason = f"{OFFLINE_REASON} this round"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def failure_reply(msg: Message, failure_prob: float) -> Message:
    """The Error reply of a device that died after its call."""
    reason = f"{FAILURE_REASON} (fleet failure_prob={failure_prob:g})"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def record_node_profile(msg: Message, ctx: Context) -> None:
    """Keep the fleet's device and link for this node in ``ctx.state`` when the node config and
    the server's config leave one open (drop a stale record when there is no fleet profile)."""
    device, link = configured_profile(msg, ctx)
    node = fleet_profile(msg, ctx) if is_simulated(ctx) or not device or not link else None
    if node is not None:
        ctx.state[NODE_PROFILE_STATE_KEY] = ConfigRecord(
            {NODE_DEVICE: node.device.id, NODE_LINK: node.link.id}
        )
    elif NODE_PROFILE_STATE_KEY in ctx.state:
        del ctx.state[NODE_PROFILE_STATE_KEY]


def simulated_faults(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    """Record the node's fleet profile, then play its offline rounds and device failures."""
    record_node_profile(msg, ctx)
    node = simulated_profile(msg, ctx)
    if node is None:
        return call_next(msg, ctx)
    kind = str(msg.metadata.message_type).split(".")[0]
    if kind in OFFLINE_KINDS and is_offline(msg, node):
        return offline_reply(msg)
    if kind != FAILING_KIND or not fails(msg, node):
        return call_next(msg, ctx)
    saved = dict(ctx.state.items())
    reply = call_next(msg, ctx)  # the device did the work, then died before replying
    if reply.has_error():
        return reply
    for key in [k for k in ctx.state if k not in saved]:
        del ctx.state[key]
    for key, record in saved.items():
        ctx.state[key] = record
    return failure_reply(msg, node.failure_prob)
