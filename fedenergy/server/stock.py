"""Stock nodes: replies that carry no energy report (a plain Flower ClientApp, an older client).

The coordinator accounts such a call itself from what it knows exactly: the bytes it sent (the
outbox's size of the message) and the bytes it received (the protobuf size of the reply), through
the node's link with the link and infrastructure model the energy mod uses. The gap between
download and upload is taken as 0: the server does not know how long the node computed. The
compute is not known at all: it is booked as one ``unmetered`` component (0 J in memory, NULL
joules in the ledger), never as a silent 0 J (docs/robustness.md).
"""

from __future__ import annotations

from fedenergy.ledger import EnergyRow
from fedenergy.physics.call import CallEnergy, call_energy
from fedenergy.physics.infra import DEFAULT_MODEL, provenance
from fedenergy.physics.network import LinkProfile
from fedenergy.physics.radio import KeepAlive
from fedenergy.report import UNMETERED, Component
from fedenergy.server.columns import NodeState

STOCK_SOURCE = "coordinator-side bytes of a reply without an energy report"
UNMETERED_SOURCE = "no energy report in the reply: compute not known (stock node)"


def stock_network_energy(
    link: LinkProfile,
    bytes_sent: int,
    bytes_received: int,
    infra_kwh_per_gb: float,
    *,
    idle_s: float | None = None,
    keepalive: KeepAlive | None = None,
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """The network energy of a call whose node sent no report: the ``bytes_sent`` download and
    the ``bytes_received`` upload through ``link`` (device radio, gap 0) and the infrastructure
    by ``infra_model`` (at ``infra_kwh_per_gb`` per byte), by the one call model
    (:mod:`fedenergy.physics.call`); its compute fields stay 0 (compute is unmetered, booked
    apart). ``idle_s``/``keepalive``: the node's radio on the run's clock (see the call model)."""
    return call_energy(
        link,
        bytes_sent,
        bytes_received,
        infra_kwh_per_gb,
        idle_s=idle_s,
        keepalive=keepalive,
        infra_model=infra_model,
    )


def link_note(node: NodeState, declared: bool) -> str:
    """Which link a stock node's network energy went through, and why that one."""
    if not node.known:
        return f"link unknown, default {node.link.id}"
    return f"link {node.link.id} ({'declared' if declared else 'known'})"


def stock_call_rows(
    node: NodeState,
    call: str,
    bytes_sent: int,
    bytes_received: int,
    infra_kwh_per_gb: float,
    declared: bool = False,
    *,
    idle_s: float | None = None,
    keepalive: KeepAlive | None = None,
    infra_model: str = DEFAULT_MODEL,
) -> list[EnergyRow]:
    """The rows of a ``call`` of ``node`` answered without a report: download and upload (radio
    and infrastructure, modeled from the coordinator-side bytes) and the call's compute phase,
    unmetered. ``declared``: the node's link is the one it declared at registration."""
    net = stock_network_energy(
        node.link,
        bytes_sent,
        bytes_received,
        infra_kwh_per_gb,
        idle_s=idle_s,
        keepalive=keepalive,
        infra_model=infra_model,
    )
    src = f"{STOCK_SOURCE}; {link_note(node, declared)}"
    link_src = f"{node.link.provenance()}; {src}"
    infra_src = f"{provenance(infra_model, infra_kwh_per_gb, node.link.access)}; {src}"
    nid = str(node.node_id)
    down = (
        Component("download", "radio", net.download_radio_j, "modeled", link_src),
        Component("download", "infrastructure", net.download_infra_j, "modeled", infra_src),
    )
    up = (
        Component("upload", "radio", net.upload_radio_j, "modeled", link_src),
        Component("upload", "infrastructure", net.upload_infra_j, "modeled", infra_src),
    )
    compute = (Component(call, "compute", 0.0, UNMETERED, UNMETERED_SOURCE),)
    return [
        EnergyRow(nid, call, call, None, 0, 0.0, "ok", compute),
        EnergyRow(
            nid,
            call,
            "download",
            net.download_j,
            bytes_sent,
            net.download_s,
            "ok",
            down,
        ),
        EnergyRow(
            nid,
            call,
            "upload",
            net.upload_j,
            bytes_received,
            net.upload_s,
            "ok",
            up,
        ),
    ]
