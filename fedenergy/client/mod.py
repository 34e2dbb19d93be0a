"""The energy mod: a Flower client mod that meters every call and attaches an EnergyReport.

For each message it counts the bytes received and sent (protobuf size, both ways), reads the
hardware-independent work the handler reports (FLOPs, under ``WORK_KEY``), converts work to time
and joules with the node's device profile and bytes to joules with the node's link profile, and
attaches the report to the reply as a ConfigRecord under ``REPORT_KEY``.

Deployed nodes whose node config says ``meter="auto"`` report measured compute energy from the
best meters of their host instead (see fedenergy/measured.py).

The node's device and link come from its node config (``device=...``, ``link=...``; deployment)
or else from the per-message config the server sends (``fe-device``, ``fe-link``; simulation).
"""

from __future__ import annotations

from functools import lru_cache

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.serde import config_record_to_proto, message_to_proto

from fedenergy.client.measured import MeasuredCall, measure_call, wants_measurement
from fedenergy.physics.devices import get_device
from fedenergy.physics.network import INFRA_SOURCE, get_link, infrastructure_energy_j, radio_energy
from fedenergy.protocol import (
    CFG_DEVICE,
    CFG_FLEET,
    CFG_INFRA_KWH_PER_GB,
    CFG_LINK,
    CFG_SEED,
    CONFIG_RECORD,
    NUM_PARTITIONS,
    PARTITION_ID,
    REPORT_KEY,
    SERVER_ROUND,
    WORK_KEY,
)
from fedenergy.report import Component, EnergyReport
from fedenergy.sim.fleet import NodeProfile, is_online, load_fleet
from fedenergy.wire import message_bytes

DEFAULT_DEVICE, DEFAULT_LINK = "laptop", "wifi"


def work_record(kind: str, flops: int) -> ConfigRecord:
    """What a handler puts in its reply for the mod: the call kind and its FLOPs."""
    return ConfigRecord({"kind": kind, "flops": int(flops)})


def resolve_profile(msg: Message, ctx: Context) -> tuple[str, str]:
    """(device id, link id) of this node, in order of authority: the node's own config
    (deployment), the server's per-node config, the fleet assignment for this partition
    (simulation, from ``fe-fleet`` and ``fe-seed``), else the defaults."""
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    device, link = ctx.node_config.get("device"), ctx.node_config.get("link")
    device = device or cfg.get(CFG_DEVICE)
    link = link or cfg.get(CFG_LINK)
    if (not device or not link) and CFG_FLEET in cfg and PARTITION_ID in ctx.node_config:
        node = assigned_profile(
            str(cfg[CFG_FLEET]),
            int(ctx.node_config[NUM_PARTITIONS]),
            int(cfg.get(CFG_SEED, 0)),
            int(ctx.node_config[PARTITION_ID]),
        )
        device, link = device or node.device.id, link or node.link.id
    return str(device or DEFAULT_DEVICE), str(link or DEFAULT_LINK)


def simulated_profile(msg: Message, ctx: Context) -> NodeProfile | None:
    """This node's fleet profile when it is a simulated node (its message names a fleet and its
    node config a partition, not a device); None for deployed nodes and nodes without a fleet."""
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    if "device" in ctx.node_config or CFG_FLEET not in cfg:
        return None
    if PARTITION_ID not in ctx.node_config or NUM_PARTITIONS not in ctx.node_config:
        return None
    return assigned_profile(
        str(cfg[CFG_FLEET]),
        int(ctx.node_config[NUM_PARTITIONS]),
        int(cfg.get(CFG_SEED, 0)),
        int(ctx.node_config[PARTITION_ID]),
    )


def simulated_failure_prob(msg: Message, ctx: Context) -> float:
    """A simulated node's fleet failure probability (0 for deployed nodes, whose failures are
    real, and for nodes without a fleet)."""
    node = simulated_profile(msg, ctx)
    return node.failure_prob if node is not None else 0.0


def simulated_offline(msg: Message, ctx: Context) -> bool:
    """Whether this simulated node is offline in the message's round by its fleet availability
    (the same draw the coordinator makes for the nodes it knows); deployed nodes never are."""
    node = simulated_profile(msg, ctx)
    if node is None:
        return False
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    seed, rnd = int(cfg.get(CFG_SEED, 0)), int(cfg.get(SERVER_ROUND, 0))
    return not is_online(seed, rnd, node.partition_id, node.availability)


@lru_cache(maxsize=8)
def _assignment(fleet: str, num_nodes: int, seed: int) -> tuple:
    return tuple(load_fleet(fleet).assign(num_nodes, seed))


def assigned_profile(fleet: str, num_nodes: int, seed: int, partition_id: int) -> NodeProfile:
    """The fleet's profile for one partition (assignment cached per fleet, size and seed)."""
    return _assignment(fleet, num_nodes, seed)[partition_id]


@lru_cache(maxsize=64)
def _device(device_id: str):
    """get_device, once per id (the catalog is read-only data parsed once per process)."""
    return get_device(device_id)


@lru_cache(maxsize=64)
def _link(link_id: str):
    """get_link, once per id."""
    return get_link(link_id)


def build_report(
    kind: str,
    server_round: int,
    partition_id: int,
    device_id: str,
    link_id: str,
    flops: int,
    bytes_down: int,
    bytes_up: int,
    infra_kwh_per_gb: float,
    measured: MeasuredCall | None = None,
) -> EnergyReport:
    """The report of one call: compute from FLOPs through the device model (or the measured
    components of a deployed node), radio and infrastructure from bytes through the link model."""
    device, link = _device(device_id), _link(link_id)
    compute_s = measured.seconds if measured else device.compute_time_s(flops)
    radio = radio_energy(link, bytes_down, bytes_up, gap_s=compute_s)
    infra = f"{INFRA_SOURCE}:{infra_kwh_per_gb:g}kWh/GB"
    compute = (
        measured.components
        if measured
        else (
            Component(
                kind, "compute", device.compute_energy_j(flops), "modeled", device.provenance()
            ),
        )
    )
    comps = (
        *compute,
        Component("download", "radio", radio.download_j, "modeled", link.provenance()),
        Component(
            "download",
            "infrastructure",
            infrastructure_energy_j(bytes_down, infra_kwh_per_gb),
            "modeled",
            infra,
        ),
        Component("upload", "radio", radio.upload_j, "modeled", link.provenance()),
        Component(
            "upload",
            "infrastructure",
            infrastructure_energy_j(bytes_up, infra_kwh_per_gb),
            "modeled",
            infra,
        ),
    )
    return EnergyReport(
        kind,
        server_round,
        partition_id,
        device_id,
        link_id,
        bytes_down,
        bytes_up,
        int(flops),
        compute_s,
        comps,
        machine_j=measured.machine_j if measured else 0.0,
    )


def energy_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    """Meter one call and attach its EnergyReport to the reply."""
    bytes_down = message_bytes(msg)
    measured = None
    if wants_measurement(ctx):
        kind = str(msg.metadata.message_type).split(".")[0]
        reply, measured = measure_call(kind, ctx, lambda: call_next(msg, ctx))
    else:
        reply = call_next(msg, ctx)
    if reply.has_error() or WORK_KEY not in reply.content:
        return reply
    work = reply.content[WORK_KEY]
    del reply.content[WORK_KEY]
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    device_id, link_id = resolve_profile(msg, ctx)
    args = dict(
        kind=str(work["kind"]),
        server_round=int(cfg.get(SERVER_ROUND, 0)),
        partition_id=int(ctx.node_config.get(PARTITION_ID, -1)),
        device_id=device_id,
        link_id=link_id,
        flops=int(work["flops"]),
        bytes_down=bytes_down,
        infra_kwh_per_gb=float(cfg.get(CFG_INFRA_KWH_PER_GB, 0.059)),
        measured=measured,
    )
    # The report's own size is part of the upload: settle the byte count by fixed point. The
    # reply is serialized once; each iteration only re-encodes the report inside that proto
    # (the same sizes as message_bytes(reply) with the report attached, at a fraction of the
    # cost: the model's arrays are not serialized again).
    if REPORT_KEY in reply.content:
        del reply.content[REPORT_KEY]
    proto = message_to_proto(reply)
    bytes_up = proto.ByteSize()
    item = proto.content.items.add(key=REPORT_KEY)
    for _ in range(4):
        record = build_report(bytes_up=bytes_up, **args).to_record()
        item.config_record.CopyFrom(config_record_to_proto(record))
        settled = proto.ByteSize()
        if settled == bytes_up:
            break
        bytes_up = settled
    reply.content[REPORT_KEY] = record
    return reply
