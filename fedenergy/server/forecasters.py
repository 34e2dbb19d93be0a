"""Forecasters: what selectors are handed to forecast the nodes they choose among.

A Forecaster answers ``forecast(node_id)`` (also as ``forecaster(node_id)``) and, for a whole
candidate list at once, ``forecast_columns(candidates, rows)``: the total and device-side
joules of every candidate as arrays, the floats ``forecast`` gives. How fast the second is
depends on what the forecaster knows of its forecasts:

- ``PlannedForecaster(fleet, plan, per_link=True)``: ``plan(node)`` gives the train call's sizes
  (uplink codec, payload, download) and depends on the node only through its known flag and its
  link, so one ``plan`` per (known, link) class and one ``FleetState.forecast_many`` per class
  forecast every candidate; ``fixed_forecaster`` is the case of one size for every node;
- ``PlannedForecaster(fleet, plan)`` (not per-link) and ``FunctionForecaster`` (any function of a
  node id): one forecast per candidate.

``as_forecaster`` turns what a selector was given (a Forecaster, or a plain function of a node
id) into a Forecaster of the fleet it selects from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fedenergy.server.columns import NodeState
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import Forecast, TrainCall

ForecastFn = Callable[[int], Forecast]
TrainPlan = Callable[[NodeState], TrainCall]


@runtime_checkable
class Forecaster(Protocol):
    """Forecasts of the nodes of ``fleet``'s coming train calls."""

    fleet: FleetState

    def __call__(self, node_id: int) -> Forecast: ...

    def forecast(self, node_id: int) -> Forecast:
        """The forecast of ``node_id``'s next train call."""
        ...

    def forecast_columns(
        self, candidates: Sequence[int], rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """total_j and device_j of every candidate (``rows``: their rows in ``fleet``), as
        arrays aligned with ``candidates``."""
        ...


def _one_by_one(forecast: ForecastFn, candidates: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    n = len(candidates)
    total, device = np.empty(n), np.empty(n)
    for i, c in enumerate(candidates):
        f = forecast(c)
        total[i], device[i] = f.total_j, f.device_j
    return total, device


class FunctionForecaster:
    """Any function of a node id as a Forecaster: one call per candidate."""

    def __init__(self, fleet: FleetState, fn: ForecastFn) -> None:
        self.fleet, self.fn = fleet, fn

    def __call__(self, node_id: int) -> Forecast:
        return self.fn(node_id)

    def forecast(self, node_id: int) -> Forecast:
        return self.fn(node_id)

    def forecast_columns(
        self, candidates: Sequence[int], rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return _one_by_one(self.fn, candidates)


class PlannedForecaster:
    """``fleet.forecast`` of each node with the train call ``plan`` gives it. ``per_link``: the
    plan depends on the node only through ``known`` and ``link`` (vectorised by class)."""

    def __init__(self, fleet: FleetState, plan: TrainPlan, per_link: bool = False) -> None:
        self.fleet, self.plan, self.per_link = fleet, plan, per_link

    def __call__(self, node_id: int) -> Forecast:
        return self.forecast(node_id)

    def forecast(self, node_id: int) -> Forecast:
        call = self.plan(self.fleet[node_id])
        return self.fleet.forecast(
            node_id, call.codec_label, call.payload_bytes, call.download_bytes
        )

    def forecast_columns(
        self, candidates: Sequence[int], rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.per_link:
            return _one_by_one(self.forecast, candidates)
        n = len(candidates)
        total, device = np.empty(n), np.empty(n)
        if n == 0:
            return total, device
        fleet = self.fleet
        klass = np.where(fleet.column("known", rows), fleet.column("link", rows), -1)
        for cls in np.flatnonzero(np.bincount(klass + 1)) - 1:
            pos = np.flatnonzero(klass == cls)
            call = self.plan(fleet[candidates[int(pos[0])]])
            comp, dl, ul, dev = fleet.forecast_many(
                rows[pos], call.codec_label, call.payload_bytes, call.download_bytes
            )
            total[pos] = comp + dl + ul  # Forecast.total_j's sum, in its order
            device[pos] = dev
        return total, device


def fixed_forecaster(
    fleet: FleetState,
    codec_label: str = "none",
    payload_bytes: int = 0,
    download_bytes: int | None = None,
) -> PlannedForecaster:
    """Forecasts with one uplink codec and payload for every node (``download_bytes`` None: the
    fleet's ``download_bytes`` at the time of each forecast)."""
    call = TrainCall(codec_label, payload_bytes, download_bytes)
    return PlannedForecaster(fleet, lambda node: call, per_link=True)


def as_forecaster(forecast: Forecaster | ForecastFn, fleet: FleetState) -> Forecaster:
    """``forecast`` itself if it is a Forecaster of ``fleet``, else ``forecast`` called once
    per node."""
    if isinstance(forecast, Forecaster) and forecast.fleet is fleet:
        return forecast
    return FunctionForecaster(fleet, forecast)
