"""Compute-energy meters: RAPL, NVML, Jetson rails, battery, and modeled fallbacks.

Entry point: ``fedenergy.meters.detect.detect()`` → ``MeterSet`` with ``begin/end/window``
returning a ``Measurement``. See docs/meters.md.
"""

from fedenergy.meters.attribution import StartupCost, startup_cost
from fedenergy.meters.base import Meter
from fedenergy.meters.detect import MeterSet, detect
from fedenergy.meters.records import Availability, Component, Domain, Measurement

__all__ = [
    "Availability",
    "Component",
    "Domain",
    "Measurement",
    "Meter",
    "MeterSet",
    "StartupCost",
    "detect",
    "startup_cost",
]
