"""The energy forecast of a node's coming train call, per node and for many nodes at once.

A known node's forecast comes from its device and link profile before it has participated,
from its own observed history after (compute joules and seconds of its last train call, upload
bytes per codec); the download is this round's train message. The joules are the call model's
(:mod:`fedenergy.physics.call`): ``known_forecast`` asks it for one node, ``rows_forecast`` for
many known nodes at once on the fleet's columns (``call_energy_many``: the same floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedenergy.physics.call import CallEnergy, call_energy, call_energy_many, modeled_call
from fedenergy.physics.devices import DeviceProfile, modeled_compute
from fedenergy.physics.infra import DEFAULT_MODEL
from fedenergy.physics.network import LinkProfile
from fedenergy.server.columns import FleetColumns

FIELDS = ("compute_j", "download_j", "upload_j", "device_j")
Columns4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Forecast:
    """Predicted joules of one train call, by phase (network includes infrastructure)."""

    compute_j: float
    download_j: float
    upload_j: float
    device_j: float  # the part drawn from the device itself (compute + radio), for batteries

    @property
    def total_j(self) -> float:
        return self.compute_j + self.download_j + self.upload_j


class TrainCall(NamedTuple):
    """What a forecast train call moves: the uplink codec (its label), the update payload's
    raw bytes with it (the upload before overhead) and the download's exact bytes (None, where
    a FleetState is asked: its ``download_bytes``)."""

    codec_label: str = "none"
    payload_bytes: int = 0
    download_bytes: int | None = None


class Model(NamedTuple):
    """The fleet-wide constants of the forecast."""

    flops_per_example: float  # training FLOPs per local example
    upload_overhead: int  # bytes beyond the payload, until an upload is observed
    infra_kwh_per_gb: float
    infra_model: str = DEFAULT_MODEL  # physics.infra: per-byte | power


def _forecast(e: CallEnergy) -> Forecast:
    return Forecast(e.compute_j, e.download_j, e.upload_j, e.device_j)


def profile_forecast(
    device: DeviceProfile, link: LinkProfile, num_examples: int, call: TrainCall, model: Model
) -> Forecast:
    """The forecast of a node of profile ``device``/``link`` with no history."""
    flops = model.flops_per_example * max(num_examples, 1)
    up = call.payload_bytes + model.upload_overhead
    return _forecast(
        modeled_call(
            device,
            link,
            flops,
            call.download_bytes,
            up,
            model.infra_kwh_per_gb,
            infra_model=model.infra_model,
        )
    )


def known_forecast(cols: FleetColumns, row: int, call: TrainCall, model: Model) -> Forecast:
    """The forecast of the known node at ``row``."""
    if cols.get("has_obs", row):
        compute_j, compute_s = cols.get("obs_j", row), cols.get("obs_s", row)
    else:
        flops = model.flops_per_example * max(cols.infos[row].num_examples, 1)
        device = cols.devices[row]
        compute_j, compute_s = modeled_compute(
            flops, device.train_flops_per_s, device.active_power_w
        )
    up = cols.upload(row, call.codec_label)
    if up is None:
        up = call.payload_bytes + model.upload_overhead
    e = call_energy(
        cols.links[row],
        call.download_bytes,
        up,
        model.infra_kwh_per_gb,
        compute_j,
        compute_s,
        infra_model=model.infra_model,
    )
    return _forecast(e)


def rows_forecast(cols: FleetColumns, rows: np.ndarray, call: TrainCall, model: Model) -> Columns4:
    """``known_forecast`` of the known nodes at ``rows``: arrays of compute_j, download_j,
    upload_j and device_j, equal float for float to its answers."""
    c = cols.data
    # compute: observed, else the device model
    flops = model.flops_per_example * np.maximum(c["examples"][rows], 1)
    compute_j, compute_s = modeled_compute(flops, c["dev_fps"][rows], c["dev_w"][rows])
    has_obs = c["has_obs"][rows]
    if has_obs.any():
        compute_j = np.where(has_obs, c["obs_j"][rows], compute_j)
        compute_s = np.where(has_obs, c["obs_s"][rows], compute_s)
    # upload bytes: observed with this codec, else payload + overhead
    up = np.full(len(rows), call.payload_bytes + model.upload_overhead)
    seen = cols.uploads.get(call.codec_label)
    if seen is not None:
        obs = seen[rows]
        up = np.where(obs >= 0, obs, up)
    e = call_energy_many(
        cols.link_table,
        c["link"][rows],
        call.download_bytes,
        up,
        model.infra_kwh_per_gb,
        compute_j,
        compute_s,
        infra_model=model.infra_model,
    )
    return e.compute_j, e.download_j, e.upload_j, e.device_j


def mean_forecast(columns: Columns4) -> Forecast:
    """The mean of forecasts given as columns (``rows_forecast``'s answer)."""
    return Forecast(*(float(np.mean(v)) for v in columns))


def fill_unknown(known: np.ndarray, columns: Columns4, prior: Forecast) -> Columns4:
    """Columns over all rows from ``columns`` over the rows where ``known``, ``prior`` at the
    others."""
    out = []
    for name, known_vals in zip(FIELDS, columns, strict=True):
        col = np.full(len(known), getattr(prior, name))
        col[known] = known_vals
        out.append(col)
    return out[0], out[1], out[2], out[3]
