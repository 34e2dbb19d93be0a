"""The one call-energy model: what one client call costs, from its download to its upload.

A call: the node downloads ``bytes_down``, (in a deployment) starts a fresh ClientApp process,
computes for ``compute_s`` seconds (spending ``compute_j``), then uploads ``bytes_up``. Its
energy, part by part:

* compute: given (measured by meters, or observed in earlier calls), or modeled from the call's
  work (FLOPs, steps, threads) through the device profile (:mod:`fedenergy.physics.compute`,
  which also gives the start-up phase and the power charged while the device waits on its
  network: idle power under the whole-device boundary, none under the marginal one);
* radio, per node over the run (:mod:`fedenergy.physics.radio`): each transfer is charged what
  leads up to it since the node's previous transfer (that transfer's tail, cut when this one
  starts within it; a promotion from idle where it did not) plus its own power x time. The
  download is charged the gap since the node's last call (``idle_s``; a promotion on its first),
  the upload the start-up and compute gap after the download. The tail after the node's last
  transfer of the run is charged once at the end (:func:`fedenergy.physics.radio.closing_j`). A
  call with no clock (``idle_s`` None) stands alone: a promotion, and its own tail in full. The
  radio model's powers are above the device's base (Huang et al.);
* waiting: ``wait_w`` over both transfer times (whole-device boundary: the device's idle base
  under the radio's power);
* infrastructure, each way, by the run's model (:mod:`fedenergy.physics.infra`): bytes x
  kWh/GB (``per-byte``), or the access network's baseline power over the time the call holds
  the connection plus its marginal energy per byte (``power``; the download phase holds it from
  the download until the upload starts, start-up included, the upload phase for its transfer).

The energy mod's report, the coordinator's forecasts (one node, or many at once), failed-call
rows, the report validator's bounds and the centralized baseline all take their figures from
here. ``call_energy`` (one call, Python floats) and ``call_energy_many`` (numpy arrays, one
entry per node) evaluate the same expression, ``_compose``, so their floats are equal bit for
bit. Pure: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedenergy.physics import radio
from fedenergy.physics.compute import DEFAULT_BOUNDARY, DEFAULT_STARTUP, Work, call_compute
from fedenergy.physics.constants import Num
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.infra import (
    DEFAULT_MODEL,
    INFRA_KWH_PER_GB,
    POWER,
    AccessPower,
    call_infra_j,
)
from fedenergy.physics.network import LinkProfile, LinkTerms, transfer_time_s


@dataclass(frozen=True)
class CallEnergy:
    """The energy (J) and times (s) of one call, by part; in ``call_energy_many``'s answer each
    field holds one value per node (a field whose inputs were all scalars stays a scalar)."""

    compute_j: Num
    compute_s: Num  # busy seconds of the handler (with startup_s, the gap between transfers)
    download_radio_j: Num  # device radio: transfer + the tail after it
    upload_radio_j: Num
    download_infra_j: Num  # network infrastructure
    upload_infra_j: Num
    download_s: Num  # transfer times
    upload_s: Num
    # from the call's start (its message reaching the node) to the end of its last transfer:
    # promotions, transfers and the compute gap between them (0: nothing transferred)
    radio_end_s: Num = 0.0
    wait_j: Num = 0.0  # the device's base while it waits on its transfers (whole-device)
    startup_j: Num = 0.0  # the start-up phase (a fresh ClientApp process)
    startup_s: Num = 0.0

    @property
    def download_j(self) -> Num:
        """The download phase: radio + infrastructure."""
        return self.download_radio_j + self.download_infra_j

    @property
    def upload_j(self) -> Num:
        """The upload phase: radio + infrastructure."""
        return self.upload_radio_j + self.upload_infra_j

    @property
    def network_j(self) -> Num:
        """Both network phases, infrastructure included."""
        return self.download_j + self.upload_j

    @property
    def local_j(self) -> Num:
        """What the device draws besides its radio: compute, waiting and start-up."""
        return self.compute_j + self.wait_j + self.startup_j

    @property
    def device_j(self) -> Num:
        """What the device itself draws: compute, waiting, start-up and radio (not the
        infrastructure)."""
        return self.local_j + self.download_radio_j + self.upload_radio_j

    @property
    def total_j(self) -> Num:
        return self.local_j + self.download_j + self.upload_j


class _Gathered:
    """A link table read at each node's entry, one constant at a time, each gathered once
    when first read (see ``_compose``)."""

    __slots__ = ("_table", "_index", "_seen")

    def __init__(self, table: LinkTerms, index: np.ndarray) -> None:
        self._table, self._index, self._seen = table, index, {}

    def __getattr__(self, name: str) -> np.ndarray:
        col = self._seen.get(name)
        if col is None:
            col = self._seen[name] = getattr(self._table, name)[self._index]
        return col


def _compose(
    ops: radio.Ops,
    link: LinkTerms | _Gathered,
    bytes_down: Num,
    bytes_up: Num,
    kwh_per_gb: float,
    compute_j: Num,
    compute_s: Num,
    idle_s: Num | None = None,
    keepalive: radio.KeepAlive | None = None,
    wait_w: Num = 0.0,
    startup_j: Num = 0.0,
    startup_s: Num = 0.0,
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    # The radio (physics/radio.py): each transfer is charged what leads up to it from the
    # node's previous transfer (the tail, cut; a promotion where the tail ran out; keep-alive
    # exchanges) plus itself. ``idle_s`` None: the call stands alone (a promotion first, and
    # the full tail after its last transfer is its own). Scalars and arrays go through the
    # same operations in the same order, so their floats are equal. Over many nodes each link
    # constant is gathered where it is read (_Gathered): fewer arrays alive at once.
    has_down, has_up = bytes_down > 0, bytes_up > 0
    t_down = ops.where(has_down, transfer_time_s(bytes_down, link.down_bps), 0.0)
    t_up = ops.where(has_up, transfer_time_s(bytes_up, link.up_bps), 0.0)
    lead_j, lead_s = radio.lead_in(ops, link, idle_s, keepalive)
    gap_s = ops.maximum(compute_s + startup_s, 0.0)
    mid_j, mid_s = radio.segment(ops, link, gap_s)  # no keep-alive while the node is busy
    e_down = ops.where(has_down, lead_j + link.down_w * t_down, 0.0)
    e_up = ops.where(has_up, ops.where(has_down, mid_j, lead_j) + link.up_w * t_up, 0.0)
    if idle_s is None:
        full = link.tail_w * link.tail_s
        e_up = ops.where(has_up, e_up + full, e_up)
        e_down = ops.where(has_down, ops.where(has_up, e_down, e_down + full), e_down)
    between = ops.where(has_down, ops.where(has_up, gap_s + mid_s, 0.0), 0.0)
    end_s = ops.where(has_down, lead_s, ops.where(has_up, lead_s, 0.0)) + t_down + between + t_up
    # infrastructure (physics.infra): the power model holds the connection over the download
    # and the start-up and compute after it, then over the upload (read only by that model)
    held_down, terms = 0.0, None
    if infra_model == POWER:
        held_down = t_down + gap_s
        terms = AccessPower(link.infra_w, link.infra_j_per_byte)
    i_down, i_up = call_infra_j(
        infra_model, kwh_per_gb, terms, bytes_down, bytes_up, held_down, t_up
    )
    return CallEnergy(
        compute_j,
        compute_s,
        e_down,
        e_up,
        i_down,
        i_up,
        t_down,
        t_up,
        end_s,
        wait_w * (t_down + t_up),
        startup_j,
        startup_s,
    )
    return CallEnergy(compute_j, compute_s, e_down, e_up, i_down, i_up, t_down, t_up)


def call_energy(
    link: LinkProfile,
    bytes_down: int,
    bytes_up: int,
    infra_kwh_per_gb: float = INFRA_KWH_PER_GB,
    compute_j: float = 0.0,
    compute_s: float = 0.0,
    *,
    idle_s: float | None = None,
    keepalive: radio.KeepAlive | None = None,
    wait_w: float = 0.0,
    startup_j: float = 0.0,
    startup_s: float = 0.0,
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """One call on ``link``: download ``bytes_down``, start up for ``startup_s`` (spending
    ``startup_j``), compute ``compute_j`` over ``compute_s``, upload ``bytes_up`` (0: none),
    with ``wait_w`` watts over the transfer times; infrastructure by ``infra_model``
    (``per-byte``: at ``infra_kwh_per_gb``; ``power``: the link's access network). ``idle_s``:
    seconds since the node's previous transfer ended, on the run's clock (``math.inf``: none
    yet; None: the call stands alone, its own tail charged in full); ``keepalive``: the
    exchanges a waiting node makes in that time (:mod:`fedenergy.physics.radio`)."""
    return _compose(
        radio.SCALAR,
        link.terms,
        bytes_down,
        bytes_up,
        infra_kwh_per_gb,
        compute_j,
        compute_s,
        idle_s,
        keepalive,
        wait_w,
        startup_j,
        startup_s,
        infra_model=infra_model,
    )


def modeled_call(
    device: DeviceProfile,
    link: LinkProfile,
    flops: float,
    bytes_down: int,
    bytes_up: int,
    infra_kwh_per_gb: float = INFRA_KWH_PER_GB,
    *,
    idle_s: float | None = None,
    keepalive: radio.KeepAlive | None = None,
    steps: int = 0,
    threads: int = 0,
    boundary: str = DEFAULT_BOUNDARY,
    startup: str = DEFAULT_STARTUP,
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """``call_energy`` with the compute of ``flops`` and ``steps`` on ``threads`` (0: not
    known) modeled through ``device`` in ``boundary`` terms, the start-up phase as ``startup``
    says (:mod:`fedenergy.physics.compute`)."""
    c = call_compute(device.terms, Work(flops, steps, 0, threads), boundary, startup)
    return call_energy(
        link,
        bytes_down,
        bytes_up,
        infra_kwh_per_gb,
        c.compute_j,
        c.compute_s,
        idle_s=idle_s,
        keepalive=keepalive,
        wait_w=c.wait_w,
        startup_j=c.startup_j,
        startup_s=c.startup_s,
        infra_model=infra_model,
    )


def call_energy_many(
    links: LinkTerms,
    index: np.ndarray | None,
    bytes_down: Num,
    bytes_up: Num,
    infra_kwh_per_gb: float,
    compute_j: Num,
    compute_s: Num,
    *,
    idle_s: Num | None = None,
    keepalive: radio.KeepAlive | None = None,
    wait_w: Num = 0.0,
    startup_j: Num = 0.0,
    startup_s: Num = 0.0,
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """``call_energy`` of many nodes at once: node ``i`` is on link ``links[index[i]]`` of a
    ``link_table`` (``index`` None: ``links`` holds one entry per node already); the other
    arguments are arrays over the same nodes or scalars shared by all. Equal, float for float,
    to ``call_energy`` node by node."""
    link = links if index is None else _Gathered(links, index)
    return _compose(
        radio.ARRAYS,
        link,
        bytes_down,
        bytes_up,
        infra_kwh_per_gb,
        compute_j,
        compute_s,
        idle_s,
        keepalive,
        wait_w,
        startup_j,
        startup_s,
        infra_model=infra_model,
    )


def radio_energy(link: LinkProfile, bytes_down: int, bytes_up: int, gap_s: float) -> CallEnergy:
    """The device radio of a call alone: ``call_energy`` with ``gap_s`` of compute costing
    nothing and no infrastructure (its ``download_j``/``upload_j`` are then the radio's)."""
    return call_energy(link, bytes_down, bytes_up, 0.0, 0.0, gap_s)
