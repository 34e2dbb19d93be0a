"""Simulated batteries: installed from the device profile, drained by the device-side joules
of every call, recharged at the end of each round (all on the fleet's columns)."""

from __future__ import annotations

import numpy as np

from fedenergy.physics.devices import DeviceProfile
from fedenergy.server.columns import FleetColumns

WH_TO_J = 3600.0


def install(cols: FleetColumns, row: int, device: DeviceProfile, battery_initial: float) -> None:
    """Give ``row`` the battery of ``device`` (none for a mains-powered device), charged to
    ``battery_initial`` of its capacity."""
    if device.battery_wh > 0:
        capacity = device.battery_wh * WH_TO_J
        cols.set("has_batt", row, True)
        cols.set("capacity", row, capacity)
        cols.set("battery", row, capacity * battery_initial)
    else:
        cols.set("has_batt", row, False)
        cols.set("capacity", row, float("nan"))
        cols.set("battery", row, float("nan"))


def drain(cols: FleetColumns, row: int, joules: float) -> None:
    """Take ``joules`` from the battery of ``row`` (never below empty; none: nothing)."""
    if cols.get("has_batt", row):
        cols.set("battery", row, max(0.0, cols.get("battery", row) - joules))


def shift_initial(cols: FleetColumns, row: int, assumed: float, actual: float) -> None:
    """The battery of ``row`` was charged as if it started at ``assumed`` of its capacity; it
    started at ``actual``: move its charge by the difference (never below empty)."""
    if cols.get("has_batt", row):
        shift = cols.get("capacity", row) * (assumed - actual)
        cols.set("battery", row, max(0.0, cols.get("battery", row) - shift))


def recharge_all(cols: FleetColumns) -> None:
    """End of a round: every battery gains its node's recharge fraction of its capacity, capped
    at full."""
    rows = np.flatnonzero(cols.column("has_batt"))
    if not len(rows):
        return
    capacity = cols.data["capacity"][rows]
    gain = cols.data["recharge"][rows] * capacity
    cols.set_rows("battery", rows, np.minimum(capacity, cols.data["battery"][rows] + gain))
