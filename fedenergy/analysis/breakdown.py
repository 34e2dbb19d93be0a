"""Per-device breakdown of a run: joules per (device type, link) and phase, from its ledger.

Energy a node could not count (NULL joules, provenance ``unmetered``) is never added as 0 J:
each class counts its unmetered rows instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from fedenergy.ledger import Ledger

# the phases in the order a call runs them (others, if any, follow sorted)
PHASE_ORDER = ("query", "startup", "download", "train", "evaluate", "upload")


@dataclass
class DeviceClass:
    """The energy of every node of one device type on one link."""

    device: str
    link: str
    nodes: set[str] = field(default_factory=set)
    by_phase: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unmetered_rows: int = 0

    @property
    def total_j(self) -> float:
        return sum(self.by_phase.values())

    @property
    def label(self) -> str:
        return f"{self.device}/{self.link}"


def device_breakdown(ledger: Ledger, run_id: str) -> tuple[list[DeviceClass], list[str]]:
    """The run's device classes (largest total first) and the phases that occur, in call
    order. Nodes the coordinator never learned are device and link ``unknown``."""
    classes: dict[tuple[str, str], DeviceClass] = {}
    phases: set[str] = set()
    for r in ledger.energy_rows(run_id):
        key = (r["device"] or "unknown", r["link"] or "unknown")
        dc = classes.setdefault(key, DeviceClass(*key))
        dc.nodes.add(str(r["node_id"]))
        phases.add(r["phase"])
        if r["joules"] is None:
            dc.unmetered_rows += 1
        else:
            dc.by_phase[r["phase"]] += r["joules"]
    ordered = [p for p in PHASE_ORDER if p in phases] + sorted(phases - set(PHASE_ORDER))
    return sorted(classes.values(), key=lambda d: (-d.total_j, d.label)), ordered
