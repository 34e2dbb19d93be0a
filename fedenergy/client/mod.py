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

The ids are looked up in the node's catalog (:func:`node_catalog`): the node's own user catalog
files (node config ``catalog=PATH``, deployment), else, on a simulated node, the run's catalog
paths the server sends (``fe-catalog``), else the packaged profiles.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import replace

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from fedenergy.client.measured import MeasuredCall, measure_call, wants_measurement
from fedenergy.client.work import COUNTED, UNKNOWN, CallWork, call_work, torch_calls
from fedenergy.client.work import work_record as work_record  # re-exported: the handler's side
from fedenergy.physics.call import call_energy, modeled_call
from fedenergy.physics.catalog import Catalog, cached_catalog, packaged_catalog
from fedenergy.physics.compute import (
    BOUNDARIES,
    DEFAULT_BOUNDARY,
    DEFAULT_STARTUP,
    DEVICE,
    PER_CALL,
    STARTUP_MODES,
)
from fedenergy.physics.infra import DEFAULT_MODEL, INFRA_KWH_PER_GB, check_model, provenance
from fedenergy.physics.radio import KeepAlive, keepalive_from_table
from fedenergy.protocol import (
    CFG_BOUNDARY,
    CFG_CATALOG,
    CFG_DEVICE,
    CFG_INFRA_KWH_PER_GB,
    CFG_INFRA_MODEL,
    CFG_KEEPALIVE,
    CFG_LINK,
    CFG_RADIO_IDLE,
    CFG_STARTUP,
    CONFIG_RECORD,
    NODE_CATALOG,
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


def node_catalog(msg: Message, ctx: Context) -> Catalog:
    """The catalog this node's device and link are looked up in: the node's own catalog files
    (node config ``catalog``, paths separated by ``os.pathsep``); else, on a node whose config
    names no device of its own (a simulated node: the run's files are on this machine), the
    run's catalog paths the server sent (``fe-catalog``) or the simulation recorded in the
    node's state; else the packaged catalog. A deployed node never reads paths a server names.
    Each state of the files is read once per process."""
    own = ctx.node_config.get(NODE_CATALOG)
    if own:
        return cached_catalog(str(own))
    if ctx.node_config.get(NODE_DEVICE):
        return packaged_catalog()
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    paths = cfg.get(CFG_CATALOG)
    if not paths:
        state = ctx.state.config_records.get(NODE_PROFILE_STATE_KEY, ConfigRecord())
        paths = state.get(NODE_CATALOG)
    return cached_catalog(paths) if paths else packaged_catalog()


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
    catalog: Catalog | None = None,
    *,
    steps: int = 0,
    batch: int = 0,
    threads: int = 0,
    boundary: str = DEFAULT_BOUNDARY,
    startup: str = DEFAULT_STARTUP,
    idle_s: float | None = None,
    keepalive: KeepAlive | None = None,
    infra_model: str = DEFAULT_MODEL,
) -> EnergyReport:
    """The report of one call: compute from its work (FLOPs, steps, threads) through the
    device model (or the measured components of a deployed node), the start-up phase (modeled,
    or measured), the device's base while it waits on its transfers (whole-device boundary),
    radio and infrastructure from bytes through the link model (the call model,
    :mod:`fedenergy.physics.call`; a measured call's gap between download and upload lasts its
    measured start-up and seconds). The ids are looked up in ``catalog`` (default: packaged).
    ``idle_s``/``keepalive``: the node's radio on the run's clock, as the coordinator sent them
    (None: the call stands alone)."""
    catalog = packaged_catalog() if catalog is None else catalog
    device, link = catalog.device(device_id), catalog.link(link_id)
    radio = dict(idle_s=idle_s, keepalive=keepalive)
    wait_w = device.idle_power_w if boundary == DEVICE else 0.0
    if measured:  # compute from the meters (their components), the network from the model
        e = call_energy(
            link,
            bytes_down,
            bytes_up,
            infra_kwh_per_gb,
            compute_s=measured.seconds,
            wait_w=wait_w,
            startup_s=measured.startup_s,
            **radio,
            infra_model=infra_model,
        )
        compute = measured.components
    else:
        e = modeled_call(
            device,
            link,
            flops,
            bytes_down,
            bytes_up,
            infra_kwh_per_gb,
            steps=steps,
            threads=threads,
            boundary=boundary,
            startup=startup,
            infra_model=infra_model,
            **radio,
        )
        # the work travels in the report's own fields, and in the component's source: the
        # model's inputs stay in the ledger beside its figure
        work = (
            f"{device.provenance()}; {int(flops)} FLOP, {steps} steps, {threads or 'all'} threads"
        )
        compute = (Component(kind, "compute", e.compute_j, "modeled", work),)
        if startup == PER_CALL:
            start = f"{device.provenance()}; fresh ClientApp process, {e.startup_s:g} s on 1 core"
            compute += (Component("startup", "compute", e.startup_j, "modeled", start),)
    if boundary == DEVICE:
        idle = f"{device.provenance()}; idle {device.idle_power_w:g} W while transferring"
        compute += (Component(kind, "idle", e.wait_j, "modeled", idle),)
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
        steps=int(steps),
        batch=int(batch),
        threads=int(threads),
        boundary=boundary,
        startup_s=e.startup_s,
    )


def radio_config(cfg: ConfigRecord) -> tuple[float | None, KeepAlive | None]:
    """The node's radio on the run's clock from the per-message config: (seconds since its
    previous transfer ended, ``math.inf`` for none yet; None where the coordinator sent no
    clock) and the keep-alive accounted (None: off)."""
    idle = cfg.get(CFG_RADIO_IDLE)
    if isinstance(idle, bool) or not isinstance(idle, (int, float)) or math.isnan(idle):
        idle_s = None
    else:
        idle_s = math.inf if idle < 0 else float(idle)
    return idle_s, (keepalive_from_table() if cfg.get(CFG_KEEPALIVE) is True else None)


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
    cfg = msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())
    boundary, startup = (
        str(cfg.get(CFG_BOUNDARY, DEFAULT_BOUNDARY)),
        str(cfg.get(CFG_STARTUP, DEFAULT_STARTUP)),
    )
    boundary = boundary if boundary in BOUNDARIES else DEFAULT_BOUNDARY
    startup = startup if startup in STARTUP_MODES else DEFAULT_STARTUP
    with torch_calls() if count_torch else nullcontext(None) as seen:
        if wants_measurement(ctx):
            run = lambda: call_next(msg, ctx)  # noqa: E731
            reply, measured = measure_call(kind, ctx, run, startup=startup == PER_CALL)
        else:
            reply = call_next(msg, ctx)
    if reply.has_error():
        return reply
    work = call_work(reply, kind, seen, counting=count_torch)
    device_id, link_id = resolve_profile(msg, ctx)
    idle_s, keepalive = radio_config(cfg)
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
        catalog=node_catalog(msg, ctx),
        idle_s=idle_s,
        keepalive=keepalive,
        steps=work.steps,
        batch=work.batch,
        threads=work.threads,
        boundary=boundary,
        startup=startup,
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
