"""Laptop / Linux-device battery: ``/sys/class/power_supply/BAT*`` while discharging (sampled).

Kernel ABI (``include/linux/power_supply.h``; notes/energy-sources.md §7, §12): ``power_now`` in
µW; else ``voltage_now`` (µV) × ``current_now`` (µA) / 1e12 → W. Some drivers report a negative
current while discharging, so magnitudes are used. The reading means consumption only while
``status`` is ``Discharging``; on AC it is charging power, so the meter is unavailable then and
any part of a window spent on AC is dropped and flagged ``not-discharging:battery[…]``.
It is a whole-device figure (screen, radios, …): ``total_scope = device``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.base import Meter
from fedenergy.meters.records import Availability, Clock, Domain
from fedenergy.meters.sysfs import read_number, read_optional, resolve_root, root_path

DEFAULT_POLL_S = 1.0  # 1 Hz (notes §12); the fuel gauge itself updates about that often


@dataclass
class Battery:
    name: str
    path: str

    @property
    def domain(self) -> str:
        return f"battery[{self.name}]"

    def status(self) -> str:
        return read_optional(os.path.join(self.path, "status")) or "Unknown"

    def power_w(self) -> float:
        p = os.path.join(self.path, "power_now")
        if os.path.exists(p):
            return abs(read_number(p)) / 1e6
        v = read_number(os.path.join(self.path, "voltage_now"))
        i = read_number(os.path.join(self.path, "current_now"))
        return abs(v * i) / 1e12


class BatteryMeter(Meter):
    name = "battery"
    kind = "power"
    scope = "device"
    provenance = "measured"
    total_scope = "device"

    def __init__(
        self,
        sysfs_root: str | None = None,
        *,
        poll_s: float = DEFAULT_POLL_S,
        clock: Clock | None = None,
        accounting: CpuAccounting | None = None,
        poll: bool = True,
    ) -> None:
        super().__init__(clock=clock, accounting=accounting, poll=poll)
        self.root = resolve_root(sysfs_root)
        self.poll_interval_s = poll_s
        self.batteries: list[Battery] = []

    def discover(self) -> list[Battery]:
        base = root_path(self.root, "/sys/class/power_supply")
        out = []
        for d in sorted(glob.glob(os.path.join(base, "*"))):
            name = os.path.basename(d)
            typ = read_optional(os.path.join(d, "type"))
            if name.startswith("BAT") or typ == "Battery":
                out.append(Battery(name, d))
        return out

    def _probe(self) -> Availability:
        bats = self.discover()
        if not bats:
            return Availability("absent", "no battery under /sys/class/power_supply")
        readable = []
        problems = []
        for b in bats:
            try:
                b.power_w()
                readable.append(b)
            except (OSError, ValueError) as e:
                problems.append(f"{b.name}: no power_now or voltage_now×current_now ({e})")
        if not readable:
            return Availability("unreadable", "; ".join(problems))
        statuses = {b.name: b.status() for b in readable}
        if not any(s == "Discharging" for s in statuses.values()):
            st = ", ".join(f"{n} status={s!r}" for n, s in statuses.items())
            return Availability(
                "unreadable",
                f"on AC power ({st}): a battery shows consumption only while discharging",
                "unplug the charger to measure on battery (or rely on RAPL / the model)",
            )
        self.batteries = readable
        return Availability("available")

    def domains(self) -> list[Domain]:
        if not self.availability.available:
            return []
        return [Domain(b.domain, f"measured:battery:{b.name}") for b in self.batteries]

    def covers(self) -> str:
        return "whole device (battery " + ", ".join(b.name for b in self.batteries) + ")"

    def _update(self, now: float) -> None:
        for b in self.batteries:
            if b.status() != "Discharging":
                self._power_sample(b.domain, now, None, "not-discharging")
                continue
            try:
                w: float | None = b.power_w()
            except (OSError, ValueError):
                w = None
            self._power_sample(b.domain, now, w)
