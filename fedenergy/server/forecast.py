"""The energy forecast of a node's coming train call, per node and for many nodes at once.

A known node's forecast comes from its device and link profile before it has participated
(FLOPs per example and the steps of its local epochs, on the client's threads), from its own
observed history after (compute joules and seconds of its last train call, upload bytes per
codec); the download is this round's train message, the start-up phase the device model's. The
joules are the call model's (:mod:`fedenergy.physics.call`, :mod:`fedenergy.physics.compute`):
``known_forecast`` asks it for one node, ``rows_forecast`` for many known nodes at once on the
fleet's columns (``call_energy_many``: the same floats). A forecast's ``compute_j`` is all the
device draws besides its radio: compute, waiting on the network and start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedenergy.physics.call import CallEnergy, call_energy, call_energy_many, modeled_call
from fedenergy.physics.compute import (
    DEFAULT_BOUNDARY,
    DEFAULT_STARTUP,
    ComputeTerms,
    Work,
    call_compute,
    call_compute_many,
    steps_for,
)
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.infra import DEFAULT_MODEL
from fedenergy.physics.network import LinkProfile
from fedenergy.physics.radio import KeepAlive
from fedenergy.server.columns import DEVICE_KEYS, FleetColumns

FIELDS = ("compute_j", "download_j", "upload_j", "device_j")
Columns4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Forecast:
    """Predicted joules of one train call, by phase (network includes infrastructure)."""

    compute_j: float  # all the device draws besides its radio: compute, waiting, start-up
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
    batch_size: int = 0  # local training: examples per step (0: not known, no step term)
    epochs: int = 0  # local epochs (0: not known)
    threads: int = 0  # the client's compute threads (0: not known, all cores)
    boundary: str = DEFAULT_BOUNDARY  # accounting boundary (physics.compute.BOUNDARIES)
    startup: str = DEFAULT_STARTUP  # start-up phase (physics.compute.STARTUP_MODES)
    # the run's clock when the call would be sent (None: no clock, each call stands alone) and
    # the keep-alive accounted between calls (physics/radio.py)
    clock_s: float | None = None
    keepalive: KeepAlive | None = None
    infra_model: str = DEFAULT_MODEL  # physics.infra: per-byte | power


def idle_s(clock_s: float | None, radio_end: float) -> float | None:
    """Seconds since a node's last transfer ended (``radio_end``, NaN: none: ``math.inf``) at
    ``clock_s`` (None: no clock, None)."""
    if clock_s is None:
        return None
    return math.inf if math.isnan(radio_end) else clock_s - radio_end


def idle_many(clock_s: float | None, radio_end: np.ndarray) -> np.ndarray | None:
    """``idle_s`` over arrays (the same floats)."""
    if clock_s is None:
        return None
    return np.where(np.isnan(radio_end), np.inf, clock_s - radio_end)


def _work(model: Model, examples: int) -> Work:
    """The modeled work of a train call over ``examples`` local examples (at least one)."""
    n = max(examples, 1)
    return Work(
        model.flops_per_example * n, steps_for(n, model.batch_size, model.epochs), 0, model.threads
    )


def _forecast(e: CallEnergy) -> Forecast:
    return Forecast(e.local_j, e.download_j, e.upload_j, e.device_j)


def profile_forecast(
    device: DeviceProfile, link: LinkProfile, num_examples: int, call: TrainCall, model: Model
) -> Forecast:
    """The forecast of a node of profile ``device``/``link`` with no history."""
    w = _work(model, num_examples)
    up = call.payload_bytes + model.upload_overhead
    first = None if model.clock_s is None else math.inf  # no history: no transfer yet
    e = modeled_call(
        device,
        link,
        w.flops,
        call.download_bytes,
        up,
        model.infra_kwh_per_gb,
        steps=w.steps,
        threads=w.threads,
        boundary=model.boundary,
        startup=model.startup,
        idle_s=first,
        keepalive=model.keepalive,
        infra_model=model.infra_model,
    )
    return _forecast(e)


def known_forecast(cols: FleetColumns, row: int, call: TrainCall, model: Model) -> Forecast:
    """The forecast of the known node at ``row``: its last train call's observed compute (the
    whole train phase: busy and waiting), else the device model's; the model's start-up."""
    device = cols.devices[row]
    c = call_compute(
        device.terms, _work(model, cols.infos[row].num_examples), model.boundary, model.startup
    )
    compute_j, compute_s, wait_w = c.compute_j, c.compute_s, c.wait_w
    if cols.get("has_obs", row):
        compute_j, compute_s, wait_w = cols.get("obs_j", row), cols.get("obs_s", row), 0.0
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
        idle_s=idle_s(model.clock_s, cols.get("radio_end", row)),
        keepalive=model.keepalive,
        wait_w=wait_w,
        startup_j=c.startup_j,
        startup_s=c.startup_s,
        infra_model=model.infra_model,
    )
    return _forecast(e)


def rows_forecast(
    cols: FleetColumns,
    rows: np.ndarray,
    call: TrainCall,
    model: Model,
    work_scale: np.ndarray | float | None = None,
) -> Columns4:
    """``known_forecast`` of the known nodes at ``rows``: arrays of compute_j, download_j,
    upload_j and device_j, equal float for float to its answers. ``work_scale`` (None: 1):
    the call's busy compute (modeled or observed; joules and seconds, not the start-up) times
    this, per node or for all: a call doing that multiple of the work the forecast is of (e.g.
    other local epochs: FLOPs and steps, hence busy time, are linear in them)."""
    c = cols.data
    # compute: observed, else the device model; the start-up the model's
    examples = np.maximum(c["examples"][rows], 1)
    flops = model.flops_per_example * examples
    steps = steps_for(examples, model.batch_size, model.epochs)
    terms = ComputeTerms(*(c[f"dev_{k}"][rows] for k in DEVICE_KEYS))
    m = call_compute_many(terms, flops, steps, model.threads, model.boundary, model.startup)
    compute_j, compute_s, wait_w = m.compute_j, m.compute_s, m.wait_w
    has_obs = c["has_obs"][rows]
    if has_obs.any():
        compute_j = np.where(has_obs, c["obs_j"][rows], compute_j)
        compute_s = np.where(has_obs, c["obs_s"][rows], compute_s)
        wait_w = np.where(has_obs, 0.0, wait_w)
    if work_scale is not None:
        compute_j, compute_s = compute_j * work_scale, compute_s * work_scale
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
        idle_s=idle_many(model.clock_s, c["radio_end"][rows]),
        keepalive=model.keepalive,
        wait_w=wait_w,
        startup_j=m.startup_j,
        startup_s=m.startup_s,
        infra_model=model.infra_model,
    )
    return e.local_j, e.download_j, e.upload_j, e.device_j


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
