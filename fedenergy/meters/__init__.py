"""Compute-energy meters: RAPL, NVML, Jetson rails, battery, and modeled fallbacks.

Entry point: ``fedenergy.meters.detect.detect()`` → ``MeterSet`` with ``begin/end/window``
returning a ``Measurement``. See docs/meters.md.
"""

from fedenergy.meters.attribution import StartupCost, startup_cost
from fedenergy.meters.base import Meter
from fedenergy.meters.detect import MeterSet, cached_detect, detect
from fedenergy.meters.records import Attributed, Availability, Component, Domain, Measurement, Share

__all__ = [
    "Attributed",
    "Availability",
    "Component",
    "Domain",
    "Measurement",
    "Meter",
    "MeterSet",
    "Share",
    "StartupCost",
    "cached_detect",
    "detect",
    "startup_cost",
]
