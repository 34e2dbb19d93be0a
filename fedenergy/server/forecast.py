"""The energy forecast of a node's coming train call, per node and for many nodes at once.

A known node's forecast comes from its device and link profile before it has participated,
from its own observed history after (compute joules and seconds of its last train call, upload
bytes per codec); the download is this round's train message. ``rows_forecast`` computes the
forecasts of many known nodes on the fleet's columns with exactly the arithmetic of
``known_forecast`` (the same operations in the same order, elementwise: the same floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.network import (
    BYTES_PER_GB,
    J_PER_KWH,
    LinkProfile,
    infrastructure_energy_j,
    radio_energy,
)
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


def call_forecast(
    link: LinkProfile,
    compute_j: float,
    compute_s: float,
    up: int,
    down: int,
    infra_kwh_per_gb: float,
) -> Forecast:
    """The forecast of a call computing ``compute_j`` over ``compute_s`` between a download of
    ``down`` bytes and an upload of ``up`` bytes on ``link``."""
    radio = radio_energy(link, down, up, gap_s=compute_s)
    dl = radio.download_j + infrastructure_energy_j(down, infra_kwh_per_gb)
    ul = radio.upload_j + infrastructure_energy_j(up, infra_kwh_per_gb)
    return Forecast(compute_j, dl, ul, compute_j + radio.download_j + radio.upload_j)


def profile_forecast(
    device: DeviceProfile, link: LinkProfile, num_examples: int, call: TrainCall, model: Model
) -> Forecast:
    """The forecast of a node of profile ``device``/``link`` with no history."""
    flops = model.flops_per_example * max(num_examples, 1)
    compute_j, compute_s = device.compute_energy_j(flops), device.compute_time_s(flops)
    up = call.payload_bytes + model.upload_overhead
    return call_forecast(
        link, compute_j, compute_s, up, call.download_bytes, model.infra_kwh_per_gb
    )


def known_forecast(cols: FleetColumns, row: int, call: TrainCall, model: Model) -> Forecast:
    """The forecast of the known node at ``row``."""
    if cols.get("has_obs", row):
        compute_j, compute_s = cols.get("obs_j", row), cols.get("obs_s", row)
    else:
        flops = model.flops_per_example * max(cols.infos[row].num_examples, 1)
        device = cols.devices[row]
        compute_j, compute_s = device.compute_energy_j(flops), device.compute_time_s(flops)
    up = cols.upload(row, call.codec_label)
    if up is None:
        up = call.payload_bytes + model.upload_overhead
    return call_forecast(
        cols.links[row], compute_j, compute_s, up, call.download_bytes, model.infra_kwh_per_gb
    )


def rows_forecast(cols: FleetColumns, rows: np.ndarray, call: TrainCall, model: Model) -> Columns4:
    """``known_forecast`` of the known nodes at ``rows``: arrays of compute_j, download_j,
    upload_j and device_j, equal float for float to its answers."""
    c, lt = cols.data, cols.link_table
    # compute: observed, else the device model (flops / rate, x power)
    flops = model.flops_per_example * np.maximum(c["examples"][rows], 1)
    compute_s = flops / c["dev_fps"][rows]
    compute_j = compute_s * c["dev_w"][rows]
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
    # radio (network.radio_energy) and infrastructure (network.infrastructure_energy_j)
    down, infra = call.download_bytes, model.infra_kwh_per_gb
    li = c["link"][rows]
    t_down = (down * 8) / lt["down"][li] if down > 0 else np.zeros(len(rows))
    has_up = up > 0
    t_up = np.where(has_up, (up * 8) / lt["up"][li], 0.0)
    tail_w, tail_s = lt["tail_w"][li], lt["tail_s"][li]
    e_down = lt["p_down"][li] * t_down
    e_up = lt["p_up"][li] * t_up
    if down > 0:
        gap = np.minimum(np.maximum(compute_s, 0.0), tail_s)
        e_down = e_down + tail_w * np.where(has_up, gap, tail_s)
    e_up = np.where(has_up, e_up + tail_w * tail_s, e_up)
    dl = e_down + infrastructure_energy_j(down, infra)
    ul = e_up + up / BYTES_PER_GB * infra * J_PER_KWH
    return compute_j, dl, ul, compute_j + e_down + e_up


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
