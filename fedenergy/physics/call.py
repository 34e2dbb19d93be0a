"""The one call-energy model: what one client call costs, from its download to its upload.

A call: the node downloads ``bytes_down``, computes for ``compute_s`` seconds (spending
``compute_j``), then uploads ``bytes_up``. Its energy, part by part:

* compute: given (measured by meters, or observed in earlier calls), or modeled from FLOPs
  through the device profile (:func:`fedenergy.physics.devices.modeled_compute`);
* download radio: the link's download power over the transfer time, then the tail state until
  the upload starts: the compute gap, at most ``tail_s`` (with nothing to upload, the full tail);
* upload radio: the upload power over its transfer time, then the full tail;
* infrastructure, each way, by the run's model (:mod:`fedenergy.physics.infra`): bytes x
  kWh/GB (``per-byte``), or the access network's baseline power over the time the call holds
  the connection plus its marginal energy per byte (``power``; the download phase holds it from
  the download until the upload starts, the upload phase for its transfer).

The energy mod's report, the coordinator's forecasts (one node, or many at once), failed-call
rows, the report validator's bounds and the centralized baseline all take their figures from
here. ``call_energy`` (one call, Python floats) and ``call_energy_many`` (numpy arrays, one
entry per node) evaluate the same expression, ``_compose``, so their floats are equal bit for
bit. Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedenergy.physics.constants import Num
from fedenergy.physics.devices import DeviceProfile, modeled_compute
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
    compute_s: Num  # the compute gap between the download and the upload
    download_radio_j: Num  # device radio: transfer + the tail after it
    upload_radio_j: Num
    download_infra_j: Num  # network infrastructure
    upload_infra_j: Num
    download_s: Num  # transfer times
    upload_s: Num

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
    def device_j(self) -> Num:
        """What the device itself draws: compute + radio (not the infrastructure)."""
        return self.compute_j + self.download_radio_j + self.upload_radio_j

    @property
    def total_j(self) -> Num:
        return self.compute_j + self.download_j + self.upload_j


class _Gathered:
    """A link table read at each node's entry, one constant at a time (see ``_compose``)."""

    __slots__ = ("_table", "_index")

    def __init__(self, table: LinkTerms, index: np.ndarray) -> None:
        self._table, self._index = table, index

    def __getattr__(self, name: str) -> np.ndarray:
        return getattr(self._table, name)[self._index]


class _Ops(NamedTuple):
    """The three choices the model makes, for scalars or for arrays."""

    where: Callable
    minimum: Callable
    maximum: Callable


def _pick(cond, a, b):
    return a if cond else b


def _where(cond, a, b):
    """``np.where``; a scalar condition (e.g. one download size for all nodes) just picks its
    side: the same values, one pass over the arrays less."""
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    return np.where(cond, a, b)


_SCALAR = _Ops(_pick, min, max)
_ARRAYS = _Ops(_where, np.minimum, np.maximum)


def _compose(
    ops: _Ops,
    link: LinkTerms | _Gathered,
    bytes_down: Num,
    bytes_up: Num,
    kwh_per_gb: float,
    compute_j: Num,
    compute_s: Num,
    infra_model: str,
) -> CallEnergy:
    # Every float operation in the order of the model's first, scalar version (radio power x
    # time, then + tail power x tail time; the tail after the download min(max(gap, 0), tail)).
    # Ledger rows and the forecasts' bit-for-bit equality depend on that order: keep it. Over
    # many nodes each link constant is gathered where it is read (_Gathered): fewer arrays
    # alive at once, measurably faster over 100,000 nodes than gathering all six first.
    has_down, has_up = bytes_down > 0, bytes_up > 0
    t_down = ops.where(has_down, transfer_time_s(bytes_down, link.down_bps), 0.0)
    t_up = ops.where(has_up, transfer_time_s(bytes_up, link.up_bps), 0.0)
    tail_w, tail_s = link.tail_w, link.tail_s
    e_down = link.down_w * t_down
    e_up = link.up_w * t_up
    gap = ops.minimum(ops.maximum(compute_s, 0.0), tail_s)
    e_down = ops.where(has_down, e_down + tail_w * ops.where(has_up, gap, tail_s), e_down)
    e_up = ops.where(has_up, e_up + tail_w * tail_s, e_up)
    # infrastructure (physics.infra): the power model holds the connection over the download
    # and the compute after it, then over the upload (read only by that model)
    held_down, terms = 0.0, None
    if infra_model == POWER:
        held_down = t_down + ops.maximum(compute_s, 0.0)
        terms = AccessPower(link.infra_w, link.infra_j_per_byte)
    i_down, i_up = call_infra_j(
        infra_model, kwh_per_gb, terms, bytes_down, bytes_up, held_down, t_up
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
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """One call on ``link``: download ``bytes_down``, compute ``compute_j`` over ``compute_s``,
    upload ``bytes_up`` (0: none); infrastructure by ``infra_model`` (``per-byte``: at
    ``infra_kwh_per_gb``; ``power``: the link's access network)."""
    return _compose(
        _SCALAR,
        link.terms,
        bytes_down,
        bytes_up,
        infra_kwh_per_gb,
        compute_j,
        compute_s,
        infra_model,
    )


def modeled_call(
    device: DeviceProfile,
    link: LinkProfile,
    flops: float,
    bytes_down: int,
    bytes_up: int,
    infra_kwh_per_gb: float = INFRA_KWH_PER_GB,
    *,
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """``call_energy`` with the compute of ``flops`` modeled through ``device``."""
    compute_j, compute_s = modeled_compute(flops, device.train_flops_per_s, device.active_power_w)
    return call_energy(
        link,
        bytes_down,
        bytes_up,
        infra_kwh_per_gb,
        compute_j,
        compute_s,
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
    infra_model: str = DEFAULT_MODEL,
) -> CallEnergy:
    """``call_energy`` of many nodes at once: node ``i`` is on link ``links[index[i]]`` of a
    ``link_table`` (``index`` None: ``links`` holds one entry per node already); the other
    arguments are arrays over the same nodes or scalars shared by all. Equal, float for float,
    to ``call_energy`` node by node."""
    link = links if index is None else _Gathered(links, index)
    return _compose(
        _ARRAYS,
        link,
        bytes_down,
        bytes_up,
        infra_kwh_per_gb,
        compute_j,
        compute_s,
        infra_model,
    )


def radio_energy(link: LinkProfile, bytes_down: int, bytes_up: int, gap_s: float) -> CallEnergy:
    """The device radio of a call alone: ``call_energy`` with ``gap_s`` of compute costing
    nothing and no infrastructure (its ``download_j``/``upload_j`` are then the radio's)."""
    return call_energy(link, bytes_down, bytes_up, 0.0, 0.0, gap_s)
