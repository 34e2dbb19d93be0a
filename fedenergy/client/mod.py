"""The energy mod: a Flower client mod that meters every call and attaches an EnergyReport.

For each call of any ClientApp (every reply that is not an error) it counts the bytes received
and sent (protobuf size, both ways), settles the call's hardware-independent work (FLOPs the
handler states under ``WORK_KEY``, else the FLOPs of the torch work it did, counted
automatically, see :mod:`fedenergy.client.work`), converts work to time and joules with the
node's device profile and bytes to joules with the node's link profile, and attaches the report
to the reply as a ConfigRecord under ``REPORT_KEY``. Where the work is unknown the compute
component says so: provenance ``unmetered``, 0 J, and why.

Deployed nodes whose node config says ``meter="auto"`` report measured compute energy from the
best meters of their host instead (see :mod:`fedenergy.client.measured`).

The node's device and link come from its node config (``device=...``, ``link=...``; deployment),
else from the per-message config the server sends (``fe-device``, ``fe-link``), else from the
node's own profile in its ``context.state`` (``NODE_PROFILE_STATE_KEY``, which the simulation's
fault mod records for a fleet node, :mod:`fedenergy.sim.faults`), else the defaults. The mod
knows nothing of fleets or simulated faults.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from functools import lru_cache

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from fedenergy.client.measured import MeasuredCall, measure_call, wants_measurement
from fedenergy.client.work import COUNTED, UNKNOWN, CallWork, call_work, torch_calls
from fedenergy.client.work import work_record as work_record  # re-exported: the handler's side
from fedenergy.physics.call import call_energy, modeled_call
from fedenergy.physics.devices import get_device
from fedenergy.physics.infra import DEFAULT_MODEL, INFRA_KWH_PER_GB, check_model, provenance
from fedenergy.physics.network import get_link
from fedenergy.protocol import (
    CFG_DEVICE,
    CFG_INFRA_KWH_PER_GB,
    CFG_INFRA_MODEL,
    CFG_LINK,
    CONFIG_RECORD,
    NODE_DEVICE,
    NODE_LINK,
    NODE_PROFILE_STATE_KEY,
    PARTITION_ID,
    REPORT_KEY,
    SERVER_ROUND,
)
from fedenergy.report import UNMETERED, Component, EnergyReport
from fedenergy.wire import download_bytes, object_bytes, reply_ack_bytes, upload_bytes

DEFAULT_DEVICE, DEFAULT_LINK = "laptop", "wifi"


def configured_profile(msg: Message, ctx: Context) -> tuple[str | None, str | None]:
    """(device id, link id) as configured for this node, each None where open: the node's own
    config (deployment) first, then the server's per-message config (``fe-device``,
    ``fe-link``)."""
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    device = ctx.node_config.get(NODE_DEVICE) or cfg.get(CFG_DEVICE)
    link = ctx.node_config.get(NODE_LINK) or cfg.get(CFG_LINK)
    return (str(device) if device else None), (str(link) if link else None)


def resolve_profile(msg: Message, ctx: Context) -> tuple[str, str]:
    """(device id, link id) of this node, in order of authority: the node's own config
    (deployment), the server's per-message config, the node's own profile recorded in its
    ``context.state`` (by the simulation, :mod:`fedenergy.sim.faults`), else the defaults."""
    device, link = configured_profile(msg, ctx)
    own = ctx.state.config_records.get(NODE_PROFILE_STATE_KEY, ConfigRecord())
    device, link = device or own.get(NODE_DEVICE), link or own.get(NODE_LINK)
    return str(device or DEFAULT_DEVICE), str(link or DEFAULT_LINK)


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
    *,
    infra_model: str = DEFAULT_MODEL,
) -> EnergyReport:
    """The report of one call: compute from FLOPs through the device model (or the measured
    components of a deployed node), radio and infrastructure from bytes through the link model
    (the call model, :mod:`fedenergy.physics.call`; a measured call's tail after the download
    lasts its measured seconds)."""
    device, link = _device(device_id), _link(link_id)
    if measured:  # compute from the meters (their components), the network from the model
        e = call_energy(
            link,
            bytes_down,
            bytes_up,
            infra_kwh_per_gb,
            compute_s=measured.seconds,
            infra_model=infra_model,
        )
        compute = measured.components
    else:
        e = modeled_call(
            device, link, flops, bytes_down, bytes_up, infra_kwh_per_gb, infra_model=infra_model
        )
        compute = (Component(kind, "compute", e.compute_j, "modeled", device.provenance()),)
    infra = provenance(infra_model, infra_kwh_per_gb, link.access)
    comps = (
        *compute,
        Component("download", "radio", e.download_radio_j, "modeled", link.provenance()),
        Component("download", "infrastructure", e.download_infra_j, "modeled", infra),
        Component("upload", "radio", e.upload_radio_j, "modeled", link.provenance()),
        Component("upload", "infrastructure", e.upload_infra_j, "modeled", infra),
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
        e.compute_s,
        comps,
        machine_j=measured.machine_j if measured else 0.0,
    )


def message_kind(msg: Message) -> str:
    """The call kind of a message: its Flower message type without a sub-type ("train")."""
    return str(msg.metadata.message_type).split(".")[0]


def with_work_basis(report: EnergyReport, work: CallWork) -> EnergyReport:
    """A modeled report whose compute figure says how its FLOPs were known: counted torch work
    is named in the source; unknown work becomes an ``unmetered`` 0 J component with the
    reason. Stated work leaves the report as built."""
    if work.basis not in (COUNTED, UNKNOWN):
        return report

    def settle(c: Component) -> Component:
        if c.domain != "compute" or c.phase != report.kind:
            return c
        if work.basis == UNKNOWN:
            return Component(c.phase, c.domain, 0.0, UNMETERED, f"unmetered: {work.note}")
        note = f"; {work.note}" if work.note else ""
        return replace(c, source=f"{c.source}; counted torch work{note}")

    return replace(report, components=tuple(settle(c) for c in report.components))


def energy_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    """Meter one call and attach its EnergyReport to the reply; the handler's torch work is
    counted unless it states its work (:func:`fedenergy.client.work.report_work`)."""
    return meter_call(msg, ctx, call_next, count_torch=True)


def stated_work_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    """:func:`energy_mod` for a ClientApp whose handlers always state their work: nothing is
    counted (no torch hooks while the handler runs); a call that states nothing is unmetered."""
    return meter_call(msg, ctx, call_next, count_torch=False)


def meter_call(
    msg: Message, ctx: Context, call_next: ClientAppCallable, count_torch: bool
) -> Message:
    """The energy mod's work: bytes both ways, the call's compute (measured, stated, counted
    when ``count_torch``, else unmetered), the EnergyReport attached to the reply."""
    received = download_bytes(msg)  # before the handler may touch the message
    kind = message_kind(msg)
    measured = None
    with torch_calls() if count_torch else nullcontext(None) as seen:
        if wants_measurement(ctx):
            reply, measured = measure_call(kind, ctx, lambda: call_next(msg, ctx))
        else:
            reply = call_next(msg, ctx)
    if reply.has_error():
        return reply
    work = call_work(reply, kind, seen, counting=count_torch)
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    device_id, link_id = resolve_profile(msg, ctx)
    args = dict(
        kind=work.kind,
        server_round=int(cfg.get(SERVER_ROUND, 0)),
        partition_id=int(ctx.node_config.get(PARTITION_ID, -1)),
        device_id=device_id,
        link_id=link_id,
        flops=work.flops,
        bytes_down=received,
        infra_kwh_per_gb=float(cfg.get(CFG_INFRA_KWH_PER_GB, INFRA_KWH_PER_GB)),
        infra_model=check_model(str(cfg.get(CFG_INFRA_MODEL, DEFAULT_MODEL))),
        measured=measured,
    )

    def report(bytes_up: int) -> EnergyReport:
        built = build_report(bytes_up=bytes_up, **args)
        return built if measured else with_work_basis(built, work)

    # Bytes as Flower's traffic counter counts them (fedenergy.wire): down, the message and the
    # acknowledgement of the reply; up, the reply. The report's own size is part of the upload:
    # settle the byte count by fixed point. The reply, with a first report, is deflated once;
    # a report of other figures changes only the report object's own length (every object id
    # has the same length), so each iteration re-encodes the report alone.
    record = report(0).to_record()
    reply.content[REPORT_KEY] = record
    args["bytes_down"] = received + reply_ack_bytes(reply)
    record = report(0).to_record()  # with its final bytes-down
    reply.content[REPORT_KEY] = record
    rest = upload_bytes(reply, int(ctx.node_id)) - object_bytes(record)
    bytes_up = rest + object_bytes(record)
    for _ in range(4):
        record = report(bytes_up).to_record()
        settled = rest + object_bytes(record)
        if settled == bytes_up:
            break
        bytes_up = settled
    reply.content[REPORT_KEY] = record
    return reply
