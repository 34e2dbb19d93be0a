"""The energy of a failed or silent call: what the node still spent, as the server estimates
it (the download it was sent and, for a train call, the forecast compute), marked failed."""

from __future__ import annotations

from fedenergy.ledger import EnergyRow
from fedenergy.physics.call import call_energy
from fedenergy.physics.infra import DEFAULT_MODEL
from fedenergy.physics.radio import KeepAlive
from fedenergy.report import Component
from fedenergy.server.columns import NodeState
from fedenergy.server.forecast import Forecast

FAILED_SOURCE = "server estimate of a failed call: forecast download + compute (modeled)"


def failed_call_rows(
    node: NodeState,
    call: str,
    reason: str,
    bytes_sent: int,
    forecast: Forecast | None,
    infra_kwh_per_gb: float,
    *,
    idle_s: float | None = None,
    keepalive: KeepAlive | None = None,
    infra_model: str = DEFAULT_MODEL,
) -> list[EnergyRow]:
    """Rows of a ``call`` of ``node`` that failed for ``reason``: the download of the
    ``bytes_sent`` it was sent (radio and infrastructure) and, with the forecast of a train
    call, the forecast compute (it may have trained before failing). ``idle_s``/``keepalive``:
    the node's radio on the run's clock, as the message was sent (see the call model)."""
    nid = str(node.node_id)
    # the call model's download with no upload after it: on the run's clock what leads up to it
    # (its tail then belongs to the node's next transfer); standing alone, its full tail too
    e = call_energy(
        node.link,
        bytes_sent,
        0,
        infra_kwh_per_gb,
        idle_s=idle_s,
        keepalive=keepalive,
        infra_model=infra_model,
    )
    src = f"{FAILED_SOURCE}; {reason[:120]}"
    if not node.known:
        src += f"; link unknown, prior {node.link.id}"
    dl = (
        Component("download", "radio", e.download_radio_j, "modeled", src),
        Component("download", "infrastructure", e.download_infra_j, "modeled", src),
    )
    rows = [EnergyRow(nid, call, "download", e.download_j, bytes_sent, e.download_s, "failed", dl)]
    if forecast is not None:
        comp = (Component(call, "compute", forecast.compute_j, "modeled", src),)
        rows.append(EnergyRow(nid, call, call, forecast.compute_j, 0, 0.0, "failed", comp))
    return rows
